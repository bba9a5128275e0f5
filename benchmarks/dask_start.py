"""A local Dask cluster started by ``kedro run`` against Kedro's ParallelRunner, whole process.

The example project (``examples/sales_demo``, copied to a temporary directory) runs as a user
runs it, each ``kedro run`` a process of its own, in interleaved rounds:

* ``kedro run`` (SequentialRunner) and ``kedro run --runner=ParallelRunner``;
* ``kedro run --runner=kedro_prefect.PrefectRunner --runner-params
  task_runner=dask,n_workers=2``: a ``LocalCluster`` started for the run (cluster start, the
  workers' imports, the project set up in each worker, the cluster closed at the end);
* the same options in ``conf/<env>/prefect.yml`` (``runner:``), ``kedro run --env <env>
  --runner=kedro_prefect.PrefectRunner``;
* with ``--before SRC``, the same Dask run with another kedro-prefect on ``PYTHONPATH``
  (``SRC``: the ``src`` directory of an older checkout, e.g. ``git archive main src``).

Each sample is the wall time from launch to process exit. With bokeh installed, each local
cluster also starts Dask's dashboard (~1 s of the driver's time: bokeh's models); the table says
which. ``pip install -e '.[bench]'`` has no bokeh, as ``[dask]``. The PrefectRunner runs reuse
their lingering local Prefect API (one ``PREFECT_HOME`` per kedro-prefect version: a lingering
API is only reused by the code that started it); the warm-up runs start them.

    python benchmarks/dask_start.py --repeats 5
    python benchmarks/dask_start.py --repeats 5 --before /tmp/before/src

Prints a markdown table (medians, and the Dask run's difference to ParallelRunner in the same
rounds) and writes JSON rows to ``benchmarks/results/dask_start.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

import user_felt
from run import EXAMPLE, base_env, log, print_table_and_save, timed_kedro_run

DASK = ("--runner=kedro_prefect.PrefectRunner", "--runner-params=task_runner=dask,n_workers=2")
DASHBOARD = {
    True: "bokeh installed: each local cluster starts Dask's dashboard",
    False: "bokeh not installed: no Dask dashboard",
}
#: A Kedro environment whose prefect.yml chooses the same local cluster.
YML_ENV = "dask_in_prefect_yml"
CASES = {
    "SequentialRunner": (),
    "ParallelRunner": ("--runner=ParallelRunner",),
    "PrefectRunner dask, LocalCluster started by the run": DASK,
    "PrefectRunner dask from prefect.yml": (
        f"--env={YML_ENV}",
        "--runner=kedro_prefect.PrefectRunner",
    ),
}
BEFORE = "PrefectRunner dask, LocalCluster started by the run (before)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--before", type=Path, help="src dir of another kedro-prefect")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="kedro-prefect-dask-start-"))
    project = tmp / "sales_demo"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "logs"))
    (project / "conf" / YML_ENV).mkdir()
    (project / "conf" / YML_ENV / "prefect.yml").write_text(
        "runner:\n  task_runner: dask\n  n_workers: 2\n"
    )
    dashboard = find_spec("bokeh") is not None
    envs = {name: base_env(tmp / "home") for name in CASES}
    cases = dict(CASES)
    if args.before:
        cases[BEFORE] = DASK
        envs[BEFORE] = base_env(tmp / "home-before")
        envs[BEFORE]["PYTHONPATH"] = str(args.before.resolve())
    for env in envs.values():
        Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    load = [round(os.getloadavg()[0], 2)]
    try:
        for name, cli in cases.items():  # bytecode caches, the Prefect databases, the APIs
            log(f"warm-up: {name}")
            timed_kedro_run(project, envs[name], *cli)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for round_ in range(args.repeats):
            for name, cli in cases.items():
                seconds = timed_kedro_run(project, envs[name], *cli)
                samples[name].append(seconds)
                log(f"round {round_ + 1}: {name}: {seconds:.2f} s")
            load.append(round(os.getloadavg()[0], 2))
    finally:
        for env in {env["PREFECT_HOME"]: env for env in envs.values()}.values():
            user_felt.stop_lingering_api(env, project)
        shutil.rmtree(tmp, ignore_errors=True)

    parallel = samples["ParallelRunner"]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = []
    for name, values in samples.items():
        over = [a - b for a, b in zip(values, parallel, strict=True)]
        rows.append(
            {
                "benchmark": "dask_start",
                "case": name,
                "median_s": round(statistics.median(values), 2),
                "min_s": round(min(values), 2),
                "median_over_parallel_s": round(statistics.median(over), 2),
                "samples": [round(v, 2) for v in values],
                "repeats": args.repeats,
                "load_average": load,
                "cores": os.cpu_count(),
                "dask_dashboard": dashboard,
                "timestamp": stamp,
            }
        )
    print(
        f"\n`kedro run` of the example project, whole process: medians of {args.repeats} "
        f"interleaved rounds, {os.cpu_count()} cores, {stamp}, load average "
        f"{min(load)}-{max(load)}; {DASHBOARD[dashboard]}\n"
    )
    print_table_and_save(
        "dask_start",
        ["runner", "median (s)", "best (s)", "over ParallelRunner, same round (median, s)"],
        [
            [
                row["case"],
                f"{row['median_s']:.2f}",
                f"{row['min_s']:.2f}",
                f"{row['median_over_parallel_s']:+.2f}",
            ]
            for row in rows
        ],
        rows,
    )


if __name__ == "__main__":
    sys.exit(main())
