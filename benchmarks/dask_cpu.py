"""CPU-bound wide pipeline: PrefectRunner on Dask and on processes vs Kedro's runners.

Each node does pure-Python arithmetic (it holds the GIL, so threads cannot run two at once);
``--nodes`` such nodes are independent and a last node sums their results. Every runner runs the
same pipeline in this process after a warm-up run; the table reports wall time of ``runner.run``
and the speed-up over SequentialRunner (best of ``--repeat`` interleaved rounds). PrefectRunner
on Dask is measured twice: on a cluster that is already running (``address=``) and with the
LocalCluster it starts itself (start-up included), and on the running cluster once more with
kedro-prefect's placement switched off (Dask places every node, as before it had one).
PrefectRunner with ``task_runner=process`` (Prefect's process pool, started by each run: start-up
included) needs no Dask.

    python benchmarks/dask_cpu.py                 # defaults: 8 nodes of 48M loops (~2.5 s each)
    python benchmarks/dask_cpu.py --loops 12000000  # shorter nodes: fixed costs weigh more
    python benchmarks/dask_cpu.py --runners sequential,process  # no Dask: Sequential vs process

A run on Dask has fixed costs (~0.3 s on a running cluster: connecting to the scheduler,
registering the worker plugin, Prefect's flow run) and a per-node cost (~30 ms: Prefect's task
engine on the worker, Dask's round trips), so the speed-up grows with the work per node. The
per-node cost is measured too: a chain of no-op nodes on the running cluster.

Writes JSON rows to ``benchmarks/results/dask_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from dask_common import bench_environment, dask_placement, quiet_logs

bench_environment()

RESULTS = Path(__file__).resolve().parent / "results"


def burn(seed: int, loops: int) -> int:
    """Pure-Python work: holds the GIL for the whole call."""
    acc = seed
    for i in range(loops):
        acc = (acc * 31 + i) % 1_000_003
    return acc


def total(*values: int) -> int:
    return sum(values)


def wide_pipeline(nodes: int):
    from kedro.pipeline import Pipeline, node

    return Pipeline(
        [node(burn, [f"seed{i}", "params:loops"], f"out{i}", name=f"burn{i}") for i in range(nodes)]
        + [node(total, [f"out{i}" for i in range(nodes)], "total", name="total")]
    )


def catalog(nodes: int, loops: int, shared: bool = False):
    """The inputs; ``ParallelRunner`` needs Kedro's ``SharedMemoryDataCatalog``."""
    from kedro.io import DataCatalog, MemoryDataset, SharedMemoryDataCatalog

    datasets = {f"seed{i}": MemoryDataset(i) for i in range(nodes)}
    datasets["params:loops"] = MemoryDataset(loops)
    return (SharedMemoryDataCatalog if shared else DataCatalog)(datasets)


#: The running cluster with kedro-prefect's placement switched off: Dask places every node.
BEFORE = "PrefectRunner dask, Dask's placement (before)"

#: Nodes of the chain that measures the per-node cost on Dask.
CHAIN = 100


def chain_overhead_ms(runner, repeat: int) -> float:
    """Milliseconds per node of a chain of no-op nodes, over a one-node run (fixed costs)."""
    from kedro.io import DataCatalog

    import pipelines

    def best(nodes: int) -> float:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            runner.run(pipelines.chain(nodes), DataCatalog())
            times.append(time.perf_counter() - start)
        return min(times)

    one = best(1)
    return 1000 * (best(CHAIN) - one) / (CHAIN - 1)


def timed(runner, nodes: int, loops: int) -> tuple[float, int]:
    from kedro.runner import ParallelRunner

    pipeline = wide_pipeline(nodes)
    start = time.perf_counter()
    out = runner.run(pipeline, catalog(nodes, loops, shared=isinstance(runner, ParallelRunner)))
    return time.perf_counter() - start, out["total"].load()


def main() -> None:
    from distributed import LocalCluster
    from kedro.runner import ParallelRunner, SequentialRunner, ThreadRunner

    from kedro_prefect import PrefectRunner

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--loops", type=int, default=48_000_000, help="work per node")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the best one counts")
    parser.add_argument(
        "--runners",
        default="sequential,thread,parallel,process,dask",
        help="which runners to measure (comma-separated; default: all)",
    )
    args = parser.parse_args()
    chosen = set(args.runners.split(","))
    quiet_logs()
    cores = os.cpu_count() or 1

    # Warm-up: imports, the ephemeral Prefect API, the per-process caches.
    timed(SequentialRunner(), 2, 1000)
    timed(PrefectRunner(), 2, 1000)

    quiet_logs()  # Kedro re-applied its logging configuration
    expected = None
    best: dict[str, float] = {}

    def record(name: str, seconds: float, result: int) -> None:
        nonlocal expected
        expected = result if expected is None else expected
        assert result == expected, f"{name} computed {result}, expected {expected}"
        best[name] = min(seconds, best.get(name, seconds))
        print(f"  {name}: {seconds:.2f} s", file=sys.stderr)

    # Rounds interleave the runners, and the best round counts: the machine may be shared.
    def rounds(running) -> None:
        for _ in range(args.repeat):
            record("SequentialRunner", *timed(SequentialRunner(), args.nodes, args.loops))
            if "thread" in chosen:
                record(
                    "ThreadRunner", *timed(ThreadRunner(max_workers=cores), args.nodes, args.loops)
                )
            if "parallel" in chosen:
                record(
                    "ParallelRunner",
                    *timed(ParallelRunner(max_workers=cores), args.nodes, args.loops),
                )
            if "process" in chosen:
                record(
                    "PrefectRunner process (pool started by the run)",
                    *timed(
                        PrefectRunner(task_runner="process", max_workers=cores),
                        args.nodes,
                        args.loops,
                    ),
                )
            if running is not None:
                record(
                    "PrefectRunner dask (running cluster)",
                    *timed(running, args.nodes, args.loops),
                )
                dask_placement(False)
                record(BEFORE, *timed(running, args.nodes, args.loops))
                dask_placement(True)

    per_node_ms = per_node_before_ms = None
    if "dask" not in chosen:
        rounds(None)
    else:
        with LocalCluster(n_workers=cores, threads_per_worker=1, processes=True) as cluster:
            running = PrefectRunner(task_runner="dask", address=cluster.scheduler_address)
            timed(running, 2, 1000)  # workers import Prefect, Kedro and this script once
            rounds(running)
            per_node_ms = chain_overhead_ms(running, args.repeat)
            dask_placement(False)
            per_node_before_ms = chain_overhead_ms(running, args.repeat)
            dask_placement(True)
        for _ in range(args.repeat):
            record(
                "PrefectRunner dask (LocalCluster started by the run)",
                *timed(
                    PrefectRunner(task_runner="dask", n_workers=cores, threads_per_worker=1),
                    args.nodes,
                    args.loops,
                ),
            )
    rows = [{"runner": name, "seconds": round(seconds, 2)} for name, seconds in best.items()]

    sequential = rows[0]["seconds"]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for row in rows:
        row.update(
            benchmark="dask_cpu",
            repeat=args.repeat,
            speedup_vs_sequential=round(sequential / row["seconds"], 2),
            nodes=args.nodes,
            loops=args.loops,
            cores=cores,
            load_average=round(os.getloadavg()[0], 2),
            python=platform.python_version(),
            timestamp=stamp,
        )
    print(f"\nCPU-bound wide pipeline: {args.nodes} nodes x {args.loops} loops, {cores} cores\n")
    print("| runner | seconds | speed-up vs SequentialRunner |")
    print("|---|---:|---:|")
    for row in rows:
        print(f"| {row['runner']} | {row['seconds']:.2f} | {row['speedup_vs_sequential']:.2f}x |")
    if per_node_ms is not None:
        print(
            f"\nPer-node cost on the running cluster: a chain of {CHAIN} no-op nodes takes "
            f"{per_node_ms:.0f} ms per node more than a one-node run with kedro-prefect's "
            f"placement, {per_node_before_ms:.0f} ms with Dask's (before; best of "
            f"{args.repeat}).\n"
        )
        rows.append(
            {
                "benchmark": "dask_chain",
                "nodes": CHAIN,
                "ms_per_node": round(per_node_ms, 1),
                "ms_per_node_dask_placement": round(per_node_before_ms, 1),
            }
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dask_cpu.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
