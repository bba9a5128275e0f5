"""What a group on a work pool costs: the start-up of a child flow run on a ``process`` pool.

Starts ``prefect server start`` (127.0.0.1, a free port, a temporary ``PREFECT_HOME``), creates
a ``process`` work pool and starts one ``prefect worker`` for it, then runs the example project
(``examples/sales_demo``, 13 nodes) back to back, rounds interleaving the cases:

* ``local``: ``kedro run --runner=kedro_prefect.PrefectRunner`` against the server, no mapping;
* ``pooled``: the same with ``infrastructure: {ingest: {work_pool: <pool>}}`` (3 nodes of 13 in
  a child flow run).

For each pooled run it reads the child flow run back from the API: from its creation to the
worker picking it up (the worker's poll, ``PREFECT_WORKER_QUERY_SECONDS``, Prefect's default 10 s,
``--query-seconds``), to the flow starting in its new process (imports of Prefect, Kedro, the
project), and to its end. Whole ``kedro run`` wall times, medians; the load average with them.

    python benchmarks/workpools.py --repeats 3 --query-seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BIN, EXAMPLE, base_env, kedro_run_output, prefect_server


def _project(root: Path, name: str, pool: str | None) -> Path:
    project = root / name
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("*.parquet", "logs"))
    if pool:
        (project / "conf" / "base" / "prefect.yml").write_text(
            f"infrastructure:\n  ingest:\n    work_pool: {pool}\n"
        )
    return project


def _run(project: Path, env: dict[str, str]) -> float:
    return kedro_run_output(project, env, "--runner=kedro_prefect.PrefectRunner")[0]


def _child_phases(env: dict[str, str]) -> dict[str, float]:
    """The latest child flow run: created -> picked up -> flow started -> ended (seconds)."""
    code = """
import json
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentTaskRunId
from prefect.client.schemas.sorting import FlowRunSort
with get_client(sync_client=True) as c:
    runs = c.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=50)
    child = next(r for r in runs if r.parent_task_run_id is not None)
    states = {s.type.value: s.timestamp for s in c.read_flow_run_states(child.id)}
    print(json.dumps({
        "pick_up": (states["PENDING"] - child.created).total_seconds(),
        "process_start": (states["RUNNING"] - states["PENDING"]).total_seconds(),
        "nodes": (states["COMPLETED"] - states["RUNNING"]).total_seconds(),
        "total": (states["COMPLETED"] - child.created).total_seconds(),
    }))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group it leads; SIGKILL if it has not gone after 20 s."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=20)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def measure(repeats: int, query_seconds: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="kp-workpools-"))
    (root / "home").mkdir()
    samples: dict[str, list[Any]] = {"local": [], "pooled": [], "child": []}
    try:
        with prefect_server(root / "home") as api_url:
            env = {**base_env(root / "home"), "PREFECT_API_URL": api_url}
            pool = "bench-pool"
            subprocess.run(
                [str(BIN / "prefect"), "work-pool", "create", pool, "--type", "process"],
                env=env,
                capture_output=True,
                check=True,
            )
            worker = subprocess.Popen(
                [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"],
                env={**env, "PREFECT_WORKER_QUERY_SECONDS": str(query_seconds)},
                cwd=root,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                _run(_project(root, "warm-up", None), env)  # the server's first requests
                for index in range(repeats):
                    samples["local"].append(_run(_project(root, f"local-{index}", None), env))
                    samples["pooled"].append(_run(_project(root, f"pooled-{index}", pool), env))
                    samples["child"].append(_child_phases(env))
            finally:
                _stop(worker)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    phases = {
        key: statistics.median(sample[key] for sample in samples["child"])
        for key in samples["child"][0]
    }
    return {
        "repeats": repeats,
        "query_seconds": query_seconds,
        "wall": {case: statistics.median(samples[case]) for case in ("local", "pooled")},
        "child": phases,
        "samples": samples,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def report(data: dict[str, Any]) -> list[str]:
    wall, child = data["wall"], data["child"]
    return [
        f"Example project against `prefect server start`, worker poll "
        f"{data['query_seconds']:g} s, medians of {data['repeats']} ({data['date']}, load "
        f"{' '.join(map(str, data['load_average']))}):",
        "",
        "| | seconds |",
        "| --- | --- |",
        f"| `kedro run`, every node here | {wall['local']:.1f} |",
        f"| `kedro run`, namespace `ingest` (3 of 13 nodes) on a process pool | "
        f"{wall['pooled']:.1f} |",
        f"| child flow run: created -> a worker takes it (the poll) | {child['pick_up']:.1f} |",
        f"| child flow run: taken -> its flow starts (a new process imports Prefect, Kedro, "
        f"the project) | {child['process_start']:.1f} |",
        f"| child flow run: its session and 3 nodes | {child['nodes']:.1f} |",
        f"| child flow run: created -> completed | {child['total']:.1f} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--query-seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path, help="also write the samples here")
    args = parser.parse_args()
    data = measure(args.repeats, args.query_seconds)
    if args.json:
        args.json.write_text(json.dumps(data, indent=2, default=str))
    print("\n".join(report(data)))


if __name__ == "__main__":
    main()
