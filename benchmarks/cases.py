"""In-process benchmark cases for one Prefect API (ephemeral, or ``PREFECT_API_URL``).

Run by ``benchmarks/run.py`` in a fresh process per API mode; prints one JSON document:
``{"api": ..., "api_start_s": ..., "rows": [{"case", "runner", "seconds", ...}, ...]}``.
Every timing is the median of ``--repeats`` runs after one warm-up run of a 3-node pipeline
per runner (so per-process start costs, e.g. the ephemeral API start, are not in per-node numbers).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipelines as bp


def _quiet() -> None:
    logging.disable(logging.WARNING)


def kedro_catalog(shared: bool = False):
    if shared:
        from kedro.io import SharedMemoryDataCatalog

        return SharedMemoryDataCatalog()
    from kedro.io import DataCatalog

    return DataCatalog()


def run_kedro_runner(name: str, pipeline) -> float:
    from kedro.runner import ParallelRunner, SequentialRunner, ThreadRunner

    from kedro_prefect import PrefectRunner

    runner: Any
    if name == "SequentialRunner":
        runner = SequentialRunner()
    elif name == "ThreadRunner":
        runner = ThreadRunner()
    elif name == "ParallelRunner":
        runner = ParallelRunner()
    elif name == "PrefectRunner":
        runner = PrefectRunner()
    else:
        raise ValueError(name)
    catalog = kedro_catalog(shared=name == "ParallelRunner")
    start = time.perf_counter()
    runner.run(pipeline, catalog)
    return time.perf_counter() - start


def _raw_task(fn, name: str):
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    return task(fn, name=name, cache_policy=NO_CACHE, persist_result=False)


def run_raw_prefect(pipeline) -> float:
    """Prefect alone: one plain task per node, all submitted up front, wired by ``wait_for``."""

    def body():
        futures = {}
        for group in pipeline.grouped_nodes:
            for n in group:
                fn = n.func if isinstance(n.func, bp.Sleep) else bp.noop
                futures[n] = _raw_task(fn, n.name).submit(
                    wait_for=[futures[p] for p in pipeline.node_dependencies[n]]
                )
        for fut in futures.values():
            fut.wait()

    return _timed_flow(body, "raw-prefect")


def _timed_flow(body, name: str) -> float:
    """Seconds one run of ``body`` as a Prefect flow takes (32 threads, nothing persisted)."""
    from prefect import flow
    from prefect.task_runners import ThreadPoolTaskRunner

    from kedro_prefect.api.settings import prefect_run_settings

    f = flow(
        body,
        name=name,
        task_runner=ThreadPoolTaskRunner(max_workers=32),
        persist_result=False,
        validate_parameters=False,
    )
    with prefect_run_settings():
        start = time.perf_counter()
        f()
        return time.perf_counter() - start


def run_layered_flow(pipeline) -> float:
    """The old Kedro docs' approach: run layer by layer, each layer waits for the whole previous."""
    from kedro.framework.hooks.manager import _NullPluginManager

    from kedro_prefect.execution.tasks import node_task

    catalog = kedro_catalog()
    for ds in pipeline.datasets():
        catalog.get(ds, fallback_to_runtime_pattern=True)
    hooks = _NullPluginManager()

    def body():
        for group in pipeline.grouped_nodes:
            futures = [
                node_task(n).submit(
                    node=n, catalog=catalog, hook_manager=hooks, is_async=False, run_id=None
                )
                for n in group
            ]
            for fut in futures:
                fut.result()

    return _timed_flow(body, "layered")


def settle(timeout: float = 60.0) -> None:
    """Wait until the API has recorded every task run state sent to it so far.

    Task run states reach the API as events, recorded a moment after a run returns. A run
    started before that competes with the recording (a SQLite-backed server even refuses it with
    503s for a while), so each timing would include part of the previous run's cost.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    from kedro_prefect.api.settings import prefect_run_settings
    from kedro_prefect.local_api import drain_prefect_workers

    drain_prefect_workers(timeout=30)
    unfinished = TaskRunFilter(
        state=TaskRunFilterState(
            type=TaskRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING])
        )
    )
    deadline = time.monotonic() + timeout
    with prefect_run_settings(), get_client(sync_client=True) as client:
        while client.read_task_runs(task_run_filter=unfinished, limit=1):
            if time.monotonic() > deadline:
                return
            time.sleep(0.2)


@functools.cache
def quiet_seconds() -> float:
    """Extra seconds to wait before timing a run that uses the API: none for the ephemeral API.

    A ``prefect server`` (``PREFECT_API_URL`` set) may still be writing the last run's events:
    its event persister writes the events it received in batches, every
    ``server.services.event_persister.flush_interval`` seconds (5 by default). On SQLite, a flow
    run created during such a write is refused with 503 and Prefect's client waits 2 s, then 4 s,
    before it retries: back-to-back runs would each pay seconds for the previous one's events.
    """
    if not os.environ.get("PREFECT_API_URL"):
        return 0.0
    from prefect.settings import get_current_settings

    return get_current_settings().server.services.event_persister.flush_interval + 1.0


def measure(fn, pipeline, repeats: int, uses_api: bool = True) -> float:
    """Median of ``repeats`` timings, each started once the API has caught up (see settle)."""
    timings = []
    for _ in range(repeats):
        if uses_api:
            settle()
            time.sleep(quiet_seconds())
        timings.append(fn(pipeline))
    return statistics.median(timings)


def kedro_runner_case(name: str):
    """``(runner name, timing function, whether it uses the Prefect API)`` for a Kedro runner."""
    return name, lambda p: run_kedro_runner(name, p), name == "PrefectRunner"


def build_time(n: int, repeats: int) -> float:
    """Seconds to build what PrefectRunner builds before submitting: dependency maps + tasks."""
    from kedro_prefect.execution.tasks import node_task

    pipeline = bp.layered(n, 10)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        parents = pipeline.node_dependencies
        children: dict = {node: [] for node in pipeline.nodes}
        for node, node_parents in parents.items():
            for parent in node_parents:
                children[parent].append(node)
        for node in pipeline.nodes:
            node_task(node)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller pipelines, for smoke tests")
    args = parser.parse_args()
    _quiet()
    from kedro_prefect.api.settings import prefect_run_settings

    n = 20 if args.quick else 200
    big = 100 if args.quick else 1000
    rows: list[dict[str, Any]] = []

    api = "server" if os.environ.get("PREFECT_API_URL") else "ephemeral"
    start = time.perf_counter()
    with prefect_run_settings():
        pass
    api_start = time.perf_counter() - start

    warm = bp.chain(3)
    kedro_runners = ["SequentialRunner", "ThreadRunner", "ParallelRunner", "PrefectRunner"]
    for name in kedro_runners:
        run_kedro_runner(name, warm)
    run_raw_prefect(warm)
    run_layered_flow(warm)

    def add(case: str, runner: str, seconds: float, **extra: Any) -> None:
        rows.append(
            {
                "case": case,
                "runner": runner,
                "seconds": seconds,
                "nodes": extra.pop("nodes"),
                **extra,
            }
        )
        print(f"{api:9} {case:14} {runner:18} {seconds:8.3f} s", file=sys.stderr, flush=True)

    chain_p, indep_p = bp.chain(n), bp.independent(n)
    for case, pipeline in (("chain", chain_p), ("independent", indep_p)):
        for name, run, uses_api in map(kedro_runner_case, kedro_runners):
            # ParallelRunner on a chain: a process round trip per node, slow: measured once.
            reps = 1 if name == "ParallelRunner" and case == "chain" else args.repeats
            add(case, name, measure(run, pipeline, reps, uses_api), nodes=n)
        add(case, "raw Prefect tasks", measure(run_raw_prefect, pipeline, args.repeats), nodes=n)

    for unit in bp.SKEW_UNITS[:1] if args.quick else bp.SKEW_UNITS:
        skew = bp.skewed(unit)
        cp = bp.critical_path(skew)
        runs = [kedro_runner_case(name) for name in kedro_runners]
        runs += [
            ("raw Prefect tasks", run_raw_prefect, True),
            ("layered Prefect flow", run_layered_flow, True),
        ]
        for label, run, uses_api in runs:
            add(
                "skewed",
                label,
                measure(run, skew, args.repeats, uses_api),
                nodes=len(skew.nodes),
                critical_path=cp,
            )

    scale = bp.layered(big, 10)
    for name, run, uses_api in map(
        kedro_runner_case, ("SequentialRunner", "ThreadRunner", "PrefectRunner")
    ):
        add("scale", name, measure(run, scale, 1, uses_api), nodes=big)
    for size in (big // 4, big // 2, big):
        add("build", "PrefectRunner", build_time(size, args.repeats), nodes=size)

    json.dump(
        {"api": api, "api_start_s": api_start, "quiet_s": quiet_seconds(), "rows": rows}, sys.stdout
    )


if __name__ == "__main__":
    main()
