"""What data-driven runs cost and how fast they react, against a real ``prefect server start``.

    python benchmarks/data_driven.py [--repeats 5] [--nodes 200] [--chains 5]

1. per-save overhead: ``PrefectRunner`` runs of ``--nodes`` independent nodes, each saving one
   persisted dataset, with ``dataset_events`` on and off (alternating, median of ``--repeats``):
   the wall-time difference per save, and the time ``DatasetEvents.emit_saved`` takes in the
   node's thread (median of 2,000 calls);
2. latency: ``kedro prefect serve`` of a deployment of examples/sales_demo triggered by
   ``order_lines``; ``--chains`` upstream ``kedro run --pipeline ingest`` runs; for each, the time
   from the upstream save (the event's ``occurred``) to the downstream flow run's creation and
   start, with Prefect's default serve poll interval and with ``PREFECT_RUNNER_POLL_FREQUENCY=1``.
Prints a Markdown table; raw numbers go to ``benchmarks/results/data_driven.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from tests.helpers import KEDRO, PrefectServer, copy_example_project  # noqa: E402


def log(msg: str) -> None:
    print(f"[data-driven {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


OVERHEAD_SCRIPT = r"""
import json, os, statistics, sys, time
from kedro.io import AbstractDataset, DataCatalog
from kedro.pipeline import Pipeline, node
from kedro_prefect import PrefectRunner
from kedro_prefect.observe.events import DatasetEvents

class Sink(AbstractDataset):  # persisted (not ephemeral), saving costs nothing
    def _save(self, data): pass
    def _load(self): return None
    def _describe(self): return {}

n, repeats = int(sys.argv[1]), int(sys.argv[2])
def make(i): return lambda: i
pipeline = Pipeline([node(make(i), None, f"out_{i}", name=f"n{i}") for i in range(n)])
walls = {True: [], False: []}
cpus = {True: [], False: []}
def sinks(): return DataCatalog({f"out_{i}": Sink() for i in range(n)})
PrefectRunner(dataset_events=False).run(pipeline, sinks())  # warm-up
for _ in range(repeats):
    for on in (True, False):
        catalog = sinks()
        start, cpu = time.perf_counter(), os.times()
        PrefectRunner(dataset_events=on, max_workers=4).run(pipeline, catalog)
        walls[on].append(time.perf_counter() - start)
        end = os.times()
        cpus[on].append(end.user + end.system - cpu.user - cpu.system)
events = DatasetEvents(project="bench", env="local", pipeline="__default__")
one = pipeline.nodes[0]
catalog = DataCatalog({"out_0": Sink()})
calls = []
for _ in range(2000):
    start = time.perf_counter()
    events.emit_saved(one, catalog)
    calls.append(time.perf_counter() - start)
result = {"on": walls[True], "off": walls[False], "emit_call": calls}
result.update(cpu_on=cpus[True], cpu_off=cpus[False])
print("RESULT " + json.dumps(result))
"""


def overhead(server: PrefectServer, env: dict[str, str], nodes: int, repeats: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", OVERHEAD_SCRIPT, str(nodes), str(repeats)],
        env={**env, **server.env},
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
    data = json.loads(line.removeprefix("RESULT "))
    on, off = statistics.median(data["on"]), statistics.median(data["off"])
    return {
        "nodes": nodes,
        "wall_on_s": on,
        "wall_off_s": off,
        "per_save_ms": (on - off) / nodes * 1000,
        "cpu_on_s": statistics.median(data["cpu_on"]),
        "cpu_off_s": statistics.median(data["cpu_off"]),
        "cpu_per_save_ms": (statistics.median(data["cpu_on"]) - statistics.median(data["cpu_off"]))
        / nodes
        * 1000,
        "emit_call_us": statistics.median(data["emit_call"]) * 1e6,
        "raw": data,
    }


def _flow_runs(server: PrefectServer, deployment_name: str) -> list[dict]:
    import httpx

    body = {"deployments": {"name": {"any_": [deployment_name]}}, "limit": 200}
    response = httpx.post(f"{server.api_url}/flow_runs/filter", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def _saved_event(server: PrefectServer, flow_run_id: str) -> dict | None:
    import httpx

    body = {
        "filter": {
            "event": {"name": ["kedro.dataset.saved"]},
            "resource": {"id": ["kedro.dataset.sales_demo.order_lines"]},
            "related": {"resources_in_roles": [[f"prefect.flow-run.{flow_run_id}", "flow-run"]]},
        },
        "limit": 5,
    }
    response = httpx.post(f"{server.api_url}/events/filter", json=body, timeout=30)
    response.raise_for_status()
    events = response.json()["events"]
    return events[0] if events else None


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def latency(server: PrefectServer, env: dict[str, str], chains: int, poll: str | None) -> dict:
    """Upstream save -> downstream flow run created / started, ``chains`` times."""
    work = Path(tempfile.mkdtemp(prefix="kp-data-driven-"))
    project = copy_example_project(work / "sales_demo")
    flow = f"dd-{int(time.time())}-{poll or 'default'}"
    (project / "conf/base/prefect.yml").write_text(
        json.dumps(
            {
                "runner": {"flow_name": flow},
                "deployments": {
                    f"down-{flow}": {"pipeline": "regions", "on_dataset_saved": ["order_lines"]}
                },
            }
        )
    )
    serve_env = {**env, **server.env}
    if poll:
        serve_env["PREFECT_RUNNER_POLL_FREQUENCY"] = poll
    serve_log = work / "serve.log"
    serve = subprocess.Popen(
        [KEDRO, "prefect", "serve"],
        cwd=project,
        env=serve_env,
        stdout=open(serve_log, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    created, started = [], []
    try:
        time.sleep(20)  # serve registers the deployment and its trigger
        for i in range(chains):
            subprocess.run(
                [
                    KEDRO,
                    "run",
                    "--runner=kedro_prefect.PrefectRunner",
                    "--pipeline=ingest",
                    f"--runner-params=flow_name=up-{flow}",
                ],
                cwd=project,
                env={**env, **server.env},
                capture_output=True,
                check=True,
                timeout=300,
            )
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                runs = [r for r in _flow_runs(server, f"down-{flow}") if r["start_time"]]
                if len(runs) > i and all(r["state_type"] in ("COMPLETED", "FAILED") for r in runs):
                    break
                time.sleep(0.5)
            else:
                raise RuntimeError(f"no downstream run; serve log:\n{serve_log.read_text()}")
            run = max(runs, key=lambda r: r["start_time"])
            upstream = run["parameters"]["trigger"]["flow_run"]
            event = _saved_event(server, upstream)
            created.append(_ts(run["created"]) - _ts(event["occurred"]))
            started.append(_ts(run["start_time"]) - _ts(event["occurred"]))
            log(
                f"poll={poll or 'default'} chain {i + 1}: created +{created[-1]:.2f} s, "
                f"started +{started[-1]:.2f} s"
            )
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "poll": poll or "default (10 s)",
        "created_s": created,
        "started_s": started,
        "median_created_s": statistics.median(created),
        "median_started_s": statistics.median(started),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--chains", type=int, default=5)
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="kp-data-driven-home-"))
    env = {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "PREFECT_HOME": str(home / "client"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    (home / "server").mkdir(parents=True)
    server = PrefectServer(home / "server")
    server.start()
    results: dict[str, Any] = {}
    try:
        log(f"overhead: {args.nodes} nodes x {args.repeats} repeats, events on/off")
        results["overhead"] = overhead(server, env, args.nodes, args.repeats)
        if not args.skip_latency:
            results["latency"] = [latency(server, env, args.chains, poll) for poll in (None, "1")]
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    out = HERE / "results" / "data_driven.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    o = results["overhead"]
    print(f"| {o['nodes']} nodes, one persisted save each | events on | events off | per save |")
    print("|---|---|---|---|")
    print(
        f"| wall (median of {args.repeats}) | {o['wall_on_s']:.2f} s | {o['wall_off_s']:.2f} s "
        f"| {o['per_save_ms']:+.2f} ms |"
    )
    print(
        f"| CPU of the run's process (median) | {o['cpu_on_s']:.2f} s | {o['cpu_off_s']:.2f} s "
        f"| {o['cpu_per_save_ms']:+.2f} ms |"
    )
    print(f"\n`emit_saved` in the node's thread: {o['emit_call_us']:.0f} µs (median of 2,000)\n")
    for lat in results.get("latency", []):
        print(
            f"serve poll {lat['poll']}: save -> downstream flow run created "
            f"{lat['median_created_s']:.2f} s, started {lat['median_started_s']:.2f} s "
            f"(median of {len(lat['started_s'])}; started: "
            + ", ".join(f"{s:.1f}" for s in lat["started_s"])
            + ")"
        )


if __name__ == "__main__":
    main()
