"""Driver memory while a large in-memory dataset flows between two nodes.

A producer node builds a ``--megabytes`` NumPy array, a consumer reduces it to a number. With
PrefectRunner on Dask the array is a task result that moves worker to worker: the driver (the
process calling ``runner.run``) should never hold it. Each runner runs in a fresh subprocess and
reports that process's peak RSS (``ru_maxrss``), so one measurement does not inherit another's.

    python benchmarks/dask_memory.py                  # 1 GB (1000 MB)
    python benchmarks/dask_memory.py --megabytes 300

Writes JSON rows to ``benchmarks/results/dask_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

RUNNERS = ("SequentialRunner", "PrefectRunner thread", "PrefectRunner dask")


def produce(megabytes: int):
    import numpy as np

    return np.ones(megabytes * 1_000_000 // 8, dtype=np.float64)


def consume(array) -> float:
    return float(array.sum())


def measure(runner_name: str, megabytes: int) -> dict:
    """Run the pipeline in this process and return its peak RSS (call in a fresh process)."""
    import logging

    from kedro.io import DataCatalog, MemoryDataset
    from kedro.pipeline import Pipeline, node
    from kedro.runner import SequentialRunner

    from kedro_prefect import PrefectRunner

    logging.getLogger("distributed").setLevel(logging.ERROR)
    pipeline = Pipeline(
        [
            node(produce, "params:megabytes", "big", name="produce"),
            node(consume, "big", "checksum", name="consume"),
        ]
    )
    runner = {
        "SequentialRunner": lambda: SequentialRunner(),
        "PrefectRunner thread": lambda: PrefectRunner(),
        "PrefectRunner dask": lambda: PrefectRunner(
            task_runner="dask", n_workers=2, threads_per_worker=1
        ),
    }[runner_name]()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    out = runner.run(pipeline, DataCatalog({"params:megabytes": MemoryDataset(megabytes)}))
    seconds = time.perf_counter() - start
    checksum = out["checksum"].load()
    assert checksum == megabytes * 1_000_000 // 8, checksum
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "runner": runner_name,
        "driver_peak_rss_mb": round(peak),
        "driver_rss_before_run_mb": round(before),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=1000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.megabytes)))
        return

    env = {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    if "PREFECT_API_URL" not in env:
        env["PREFECT_HOME"] = tempfile.mkdtemp(prefix="kedro-prefect-bench-")
    rows = []
    for name in RUNNERS:
        child = subprocess.run(
            [sys.executable, __file__, "--megabytes", str(args.megabytes), "--child", name],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode:
            sys.exit(f"{name} failed:\n{child.stderr[-3000:]}")
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(f"  {name}: {rows[-1]}", file=sys.stderr)

    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for row in rows:
        row.update(
            benchmark="dask_memory",
            data_mb=args.megabytes,
            cores=os.cpu_count(),
            load_average=round(os.getloadavg()[0], 2),
            python=platform.python_version(),
            timestamp=stamp,
        )
    from run import print_table_and_save  # here: the measured child processes stay lean

    print(f"\nDriver peak RSS while {args.megabytes} MB flow from one node to the next\n")
    print_table_and_save(
        "dask_memory",
        ["runner", "driver peak RSS (MB)", "driver RSS before run (MB)", "seconds"],
        [
            [
                row["runner"],
                str(row["driver_peak_rss_mb"]),
                str(row["driver_rss_before_run_mb"]),
                str(row["seconds"]),
            ]
            for row in rows
        ],
        rows,
    )


if __name__ == "__main__":
    main()
