"""Fan-outs on Dask: one producer node feeding ``k`` branches, on ``w`` single-thread workers.

Where the branches of a fan-out run decides how long it takes. Each case runs the same pipeline
with Kedro's ``ParallelRunner`` (``max_workers=w``), PrefectRunner on Dask with its placement
(a ready node goes to a free worker slot, preferring one that holds its largest input), and
PrefectRunner on Dask with Dask's own placement (what kedro-prefect did before: a task goes to
the worker holding its inputs, work stealing moves some later). PrefectRunner runs on a
``LocalCluster`` of ``w`` single-thread worker processes that is already running (``address=``).

* ``sleep k=4 w=2`` and ``sleep k=8 w=4``: branches sleep ``--seconds`` (T). The *span* is from
  the first branch's start to the last branch's end; the ideal is ``ceil(k/w) * T``.
* ``200 MB k=2 w=2``: the producer emits a ~200 MB array, each branch sums it and sleeps 1 s;
  the time is the whole run (``runner.run``).

Rounds interleave the runners; the table shows the median of ``--repeat`` rounds (the machine
may be shared: medians, not best runs).

    python benchmarks/dask_fanout.py                 # T = 2 s, 5 rounds
    python benchmarks/dask_fanout.py --seconds 1 --repeat 3

Writes JSON rows to ``benchmarks/results/dask_fanout.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from dask_common import bench_environment, dask_placement, quiet_logs

bench_environment()

RESULTS = Path(__file__).resolve().parent / "results"
CASES = (("sleep", 4, 2), ("sleep", 8, 4), ("200 MB", 2, 2))
MEGABYTES = 200


def produce(seed: int) -> int:
    return seed


def produce_big(seed: int):
    import numpy as np

    return np.full(MEGABYTES * 1_000_000 // 8, float(seed))


def branch(value, seconds: float) -> tuple[float, float]:
    """Sleep ``seconds``; return (start, end) wall-clock times."""
    start = time.time()
    if not isinstance(value, int):
        value.sum()
    time.sleep(seconds)
    return start, time.time()


def spans(*times: tuple[float, float]) -> float:
    return max(end for _, end in times) - min(start for start, _ in times)


def fan_out(k: int, big: bool):
    from kedro.pipeline import Pipeline, node

    return Pipeline(
        [node(produce_big if big else produce, "seed", "base", name="produce")]
        + [node(branch, ["base", "params:seconds"], f"b{i}", name=f"branch{i}") for i in range(k)]
        + [node(spans, [f"b{i}" for i in range(k)], "span", name="join")]
    )


def timed(runner, k: int, big: bool, seconds: float) -> tuple[float, float]:
    """(span of the branches, wall time of the run)."""
    from kedro.io import DataCatalog, MemoryDataset, SharedMemoryDataCatalog
    from kedro.runner import ParallelRunner

    shared = isinstance(runner, ParallelRunner)
    catalog = (SharedMemoryDataCatalog if shared else DataCatalog)(
        {"seed": MemoryDataset(1), "params:seconds": MemoryDataset(seconds)}
    )
    start = time.perf_counter()
    out = runner.run(fan_out(k, big), catalog)
    return out["span"].load(), time.perf_counter() - start


def main() -> None:
    from distributed import LocalCluster
    from kedro.runner import ParallelRunner

    from kedro_prefect import PrefectRunner

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="T: each branch's sleep")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the median counts")
    args = parser.parse_args()
    quiet_logs()

    rows = []
    for shape, k, w in CASES:
        big = shape != "sleep"
        seconds = 1.0 if big else args.seconds
        label = f"{shape} k={k} w={w}"
        print(f"{label}", file=sys.stderr)
        results: dict[str, list[tuple[float, float]]] = {}
        with LocalCluster(n_workers=w, threads_per_worker=1, processes=True) as cluster:
            dask = PrefectRunner(task_runner="dask", address=cluster.scheduler_address)
            runners = {
                "ParallelRunner": lambda w=w: ParallelRunner(max_workers=w),
                "PrefectRunner dask, kedro-prefect placement": lambda d=dask: (
                    dask_placement(True) or d
                ),
                "PrefectRunner dask, Dask's placement (before)": lambda d=dask: (
                    dask_placement(False) or d
                ),
            }
            timed(dask, k, big, 0.01)  # workers import Prefect, Kedro and this script once
            for _ in range(args.repeat):
                for name, make in runners.items():
                    span, wall = timed(make(), k, big, seconds)
                    results.setdefault(name, []).append((span, wall))
                    print(f"  {name}: span {span:.2f} s, run {wall:.2f} s", file=sys.stderr)
            dask_placement(True)
        ideal = math.ceil(k / w) * seconds
        for name, values in results.items():
            rows.append(
                {
                    "benchmark": "dask_fanout",
                    "case": label,
                    "runner": name,
                    "span_s": round(statistics.median(v[0] for v in values), 2),
                    "run_s": round(statistics.median(v[1] for v in values), 2),
                    "ideal_span_s": None if big else ideal,
                    "bound_span_s": None if big else round(1.15 * ideal, 2),
                    "spans": [round(v[0], 2) for v in values],
                    "runs": [round(v[1], 2) for v in values],
                }
            )
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for row in rows:
        row.update(
            repeat=args.repeat,
            branch_seconds=args.seconds,
            cores=os.cpu_count(),
            load_average=round(os.getloadavg()[0], 2),
            python=platform.python_version(),
            timestamp=stamp,
        )
    print(
        f"\nFan-outs: one producer, k branches of T = {args.seconds:g} s (sleeping) on w "
        f"single-thread workers; {MEGABYTES} MB: k=2 branches sum the producer's array and sleep "
        f"1 s. Medians of {args.repeat} interleaved rounds, {os.cpu_count()} cores.\n"
    )
    print("| case | runner | branch span (s) | run (s) | bound 1.15 x ceil(k/w) x T |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        bound = f"{row['bound_span_s']:.2f}" if row["bound_span_s"] else "-"
        print(
            f"| {row['case']} | {row['runner']} | {row['span_s']:.2f} | {row['run_s']:.2f} "
            f"| {bound} |"
        )
    print()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dask_fanout.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
