"""Run every kedro-prefect benchmark; write ``docs/benchmarks.md`` and ``docs/img/benchmarks.png``.

    python benchmarks/run.py                # everything, 3 repeats per timing (median)
    python benchmarks/run.py --quick        # small pipelines, 1 repeat: a smoke test
    python benchmarks/run.py --only felt    # section 0 only, put into the existing report

Every number in the report is compared with a baseline measured in the same invocation:
0. as a user feels it (``benchmarks/user_felt.py``): whole-process ``kedro run`` of 1, 200 and
   1,000 chained no-op nodes, first run and back-to-back, and the exit delay after the last line,
   next to SequentialRunner, ThreadRunner and raw Prefect tasks;
1. startup: ``kedro run`` of examples/sales_demo, PrefectRunner vs SequentialRunner, with the
   ephemeral API (first run, and back-to-back reusing the lingering API) and with
   ``PREFECT_API_URL`` pointing at a running ``prefect server start``;
2. per-node overhead (200 chained no-op nodes) and throughput (200 independent no-op nodes);
3. a skewed DAG of sleeping nodes: wall time / critical path, with a layer-by-layer Prefect flow;
4. Dask (``benchmarks/dask_cpu.py``, ``benchmarks/dask_memory.py``, ``benchmarks/dask_fanout.py``,
   when present);
5. scale: 1,000 nodes, total run and build time.
Raw results go to ``benchmarks/results/<label>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import user_felt

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLE = REPO / "examples" / "sales_demo"
RESULTS = HERE / "results"
DOC = REPO / "docs" / "benchmarks.md"
IMG = REPO / "docs" / "img" / "benchmarks.png"
BIN = Path(sys.executable).parent
DASK_SCRIPTS = ("dask_cpu", "dask_memory", "dask_fanout")
ALL = ("felt", "startup", "cases", "dask")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def print_table_and_save(name: str, header: list[str], lines: list[list[str]], rows: Any) -> None:
    """Print a markdown table (first column left-aligned, the others right) and write ``rows``
    as ``results/<name>.json``."""
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for line in lines:
        print("| " + " | ".join(line) + " |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")


def base_env(home: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    env.pop("PREFECT_API_URL", None)
    # A user's Python caches compiled bytecode (and pip compiles it at install time). Some
    # sandboxes disable that; without the cache every process recompiles Prefect, Kedro and
    # pandas from source, which triples start-up times. The warm-up runs write the cache.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def prefect_server(home: Path):
    """``prefect server start`` on 127.0.0.1 (own PREFECT_HOME); yields its API URL."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    with open(home / "server.log", "wb") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-ui",
                "--analytics-off",
            ],
            env=base_env(home),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((home / "server.log").read_text()[-3000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.25)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def kedro_run_output(project: Path, env: dict[str, str], *args: str) -> tuple[float, str]:
    """Wall seconds of a whole ``kedro run`` process, and what it printed."""
    start = time.perf_counter()
    result = subprocess.run(
        [str(BIN / "kedro"), "run", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(
            f"kedro run {args} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return seconds, result.stdout + result.stderr


def timed_kedro_run(project: Path, env: dict[str, str], *args: str) -> float:
    return kedro_run_output(project, env, *args)[0]


def bench_startup(tmp: Path, repeats: int, api_url: str | None, home: Path) -> dict[str, Any]:
    """Median wall time of ``kedro run`` (whole process) per runner, runs interleaved."""
    project = tmp / f"sales_demo_{'server' if api_url else 'ephemeral'}"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "logs"))
    env = base_env(home)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    prefect_args = ("--runner=kedro_prefect.PrefectRunner",)
    # Warm-up: creates the Prefect database and the Python bytecode caches.
    timed_kedro_run(project, env)
    timed_kedro_run(project, env, *prefect_args)
    seq, pre, b2b = [], [], []
    for _ in range(repeats):
        seq.append(timed_kedro_run(project, env))
        if not api_url:  # a first run: no lingering ephemeral API to reuse
            user_felt.stop_lingering_api(env, project)
        pre.append(timed_kedro_run(project, env, *prefect_args))
        if not api_url:  # right after another run: the lingering ephemeral API is reused
            b2b.append(timed_kedro_run(project, env, *prefect_args))
    if not api_url:
        user_felt.stop_lingering_api(env, project)
    result = {
        "api": "server" if api_url else "ephemeral",
        "SequentialRunner": statistics.median(seq),
        "PrefectRunner": statistics.median(pre),
        "samples": {"SequentialRunner": seq, "PrefectRunner": pre},
    }
    if b2b:
        result["PrefectRunner back-to-back"] = statistics.median(b2b)
        result["samples"]["PrefectRunner back-to-back"] = b2b
    return result


def bench_cases(repeats: int, quick: bool, api_url: str | None, home: Path) -> dict[str, Any]:
    env = base_env(home)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    cmd = [sys.executable, str(HERE / "cases.py"), "--repeats", str(repeats)]
    if quick:
        cmd.append("--quick")
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    user_felt.stop_lingering_api(env, REPO)  # nothing of this section runs on into the next
    if result.returncode:
        raise RuntimeError(f"cases.py failed:\n{result.stderr[-5000:]}")
    return json.loads(result.stdout)


def bench_dask(quick: bool, home: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in DASK_SCRIPTS:
        script = HERE / f"{name}.py"
        if not script.exists():
            continue
        log(f"dask: {script.name}")
        # Their own defaults; the scripts take no --quick.
        cmd = [sys.executable, str(script)]
        result = subprocess.run(
            cmd, env=base_env(home), capture_output=True, text=True, check=False
        )
        user_felt.stop_lingering_api(base_env(home), REPO)
        path = RESULTS / f"{name}.json"
        if result.returncode or not path.exists():
            out[name] = {"error": (result.stderr or result.stdout)[-2000:]}
            continue
        out[name] = {"rows": json.loads(path.read_text()), "markdown": result.stdout}
    return out


def _markdown_only(output: str) -> str:
    """A Dask script's table and caption, without the log lines Kedro printed to stdout."""
    kept = [line for line in output.splitlines() if not line or line[0] not in "[ \t"]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "bytecode_cache_disabled_in_env": bool(os.environ.get("PYTHONDONTWRITEBYTECODE")),
        "versions": {p: version(p) for p in ("kedro", "prefect", "kedro-prefect")},
    }


# -- report ------------------------------------------------------------------------------------


def _rows(cases: dict[str, Any], case: str) -> dict[str, dict[str, Any]]:
    return {r["runner"]: r for r in cases["rows"] if r["case"] == case}


#: One plot: image file name (under docs/img/) -> (x label, log scale, bars). A bar is
#: (group, runner, value); bars of a group are drawn together, one colour per runner.
Plot = tuple[str, bool, list[tuple[str, str, float]]]


def _api_label(api: str) -> str:
    return "ephemeral API" if api == "ephemeral" else "a Prefect server at `PREFECT_API_URL`"


def _api_short(api: str) -> str:
    return "ephemeral" if api == "ephemeral" else "server"


def _image(name: str, alt: str) -> str:
    return f'![{alt}](img/{name}){{ width="760" }}\n'


def report(data: dict[str, Any], command: str) -> tuple[str, dict[str, Plot]]:
    """Markdown report, sections in order (1 to 5), and the plots it shows by file name.

    Tables stay narrow enough for the docs site's content column (mkdocs-material): at most
    six short columns; a plot follows a section where it says more than the table.
    """
    lines: list[str] = []
    plots: dict[str, Plot] = {}
    add = lines.append
    m = data["machine"]
    add("# Benchmarks\n")
    add(
        "Generated by `" + command + "` (do not edit by hand). Every ratio compares two numbers "
        "measured in the same invocation, on the same machine, so they are comparable even when "
        "the machine is noisy; absolute seconds are not.\n"
    )
    add(
        f"Machine: {m['platform']}, {m['cpus']} CPUs, Python {m['python']}, "
        f"kedro {m['versions']['kedro']}, prefect {m['versions']['prefect']}, "
        f"kedro-prefect {m['versions']['kedro-prefect']}; {m['date']}; load average at start "
        f"{m['load_average']}. Timings are medians of {data['repeats']} runs.\n"
    )
    if m.get("bytecode_cache_disabled_in_env"):
        add(
            "`PYTHONDONTWRITEBYTECODE` was set on this machine; the benchmarks unset it for the "
            "processes they start, so that warm-up runs cache compiled bytecode as a user's "
            "Python does.\n"
        )
    add(
        "Sections: [0. As a user feels it]"
        "(#0-as-a-user-feels-it-whole-kedro-run-chains-of-no-op-nodes)"
        " · [1. Startup](#1-startup) · [2. Per-node overhead](#2-per-node-overhead) · "
        "[3. Skewed DAG](#3-skewed-dag-of-sleeping-nodes) · [4. Dask](#4-dask) · "
        "[5. Scale](#5-scale-1000-nodes) · [At a glance](#at-a-glance)\n"
    )
    if data.get("felt"):
        lines.extend(user_felt.report(data["felt"]))
    for section in (_startup, _overhead, _skewed, _dask, _scale):
        section(data, add, plots)

    add("## At a glance\n")
    add(
        "Each bar is a ratio to the baseline measured in the same run (1 = as fast as the "
        "baseline; the baseline is named in the label).\n"
    )
    add(_image(IMG.name, "ratios"))
    add("## Where PrefectRunner's overhead went\n")
    add(
        textwrap.dedent(
            """\
            * **Ephemeral API start overlaps Kedro's start.** With `PREFECT_API_URL` unset,
              `PrefectRunner(...)` launches Prefect's ephemeral API server process at once --
              before the driver has even imported Prefect (~1 s), when it has not yet; the server
              reads Prefect's settings itself and exits before touching the database if a profile
              names an API URL. `kedro run` builds the runner before the session loads the
              project and the catalog, so the server starts meanwhile.
            * **A lighter server process.** It is `python -m uvicorn` serving Prefect's own app
              (what Prefect's `SubprocessASGIServer` runs): the driver never imports
              `prefect.server`; the server does not import Kedro (kedro-prefect's exports load
              lazily) and skips registering Prefect's block types, which imported every installed
              Prefect collection (prefect-dask: dask and distributed).
            * **No 2 s / 4 s client retries.** Prefect's client retries a 503 after 2 s, then
              4 s. A SQLite-backed API answered 503 (`SQLITE_BUSY_SNAPSHOT`) (a) to every tagged
              task run asking for `tag:` concurrency slots while others did, and (b) to a new
              flow run while the API was still recording the last run's task run states. Node
              tasks now ask only for tags that have a limit (also on a self-hosted server), the
              ephemeral API skips empty slot updates, and its SQLite transactions begin
              `IMMEDIATE`, so they wait their turn instead of failing.
            * **The end of a run does not wait for the API.** Attempts and durations for the
              run's artifacts come from Prefect's task engine, not from reading the task runs
              back (which waited up to 5 s for events to be recorded). The ephemeral API is
              stopped only once it has recorded every state, and the run does not wait for that at
              exit: it leaves the server the states to record and exits; the server lingers for
              the next run (`KEDRO_PREFECT_API_IDLE_SECONDS`).
            * **One `prefect.Task` per run, copied per node.** Building a task reads and
              tokenizes the function's source (1-3 ms); nodes get a copy with their own name
              and tags, so building the flow is linear and cheap. Released datasets are
              decided with the pipeline's free inputs and outputs computed once per run (Kedro
              recomputes them per node).
            * **One API client per run.** Prefect opens a client for the flow run and one for
              each helper that asks, and each new client loads certifi's CA bundle (~30 ms) even
              for an `http://` API. A run now shares one client (without CA loading for
              `http://` URLs; `https://` keeps Prefect's TLS set-up). The flow names local
              result storage (nothing is persisted), which spares two reads of the server's
              default result storage per flow run, and the pipeline graph artifact is sent while
              the first nodes run.
            * **Dask workers** build Prefect's settings once per process (Prefect rebuilt them
              from the environment for every task, ~80 ms) and reuse one API client per thread.
              The driver serializes the Prefect context the tasks carry once per run (Prefect
              did it per task, ~75 ms of driver CPU each, competing with the workers), and
              collects the node table's attempts, durations and worker addresses from the
              workers in one round trip, instead of waiting for the API to record the workers'
              task run states and asking the scheduler who ran each node.
            * **No heartbeat join** (flow run heartbeats are off for `kedro run`), and at exit the
              queued events and logs are delivered before the ephemeral API is stopped.
            * **Finished producers are recorded, not waited for.** A node is submitted once its
              producers are done; passed as `wait_for`, their futures made Prefect fetch each
              producer's result again through its event loop thread before the node started.
              They are recorded as the task run's `upstream` inputs instead (the UI's DAG edges).
            * **No Prefect hooks per node.** The node table's records are taken from the task
              run the engine hands the task body, not from completion hooks, which Prefect
              announces with two log lines per call (terminal and task run logs).
            * **Prefect's logging is set up once** (it rendered every setting into its logging
              template twice, ~60 ms each).
            * **A quicker interpreter exit.** Prefect's modules leave ~80,000 more objects for
              CPython's garbage collector, which traversed them all in several full collections
              while the interpreter shut down (0.45-0.6 s after the last line of `kedro run`,
              against ~0.25 s for SequentialRunner). At exit, a process that built a
              `PrefectRunner` collects once (cyclic garbage is still finalized) and freezes
              what is left (`gc.freeze`), so those collections skip it: ~0.2 s. The ephemeral
              API server is sent its stop signal first and waited for after that collection.
            * **A server that starts without full collections.** Building Prefect's server app
              leaves ~420,000 objects for the collector, which the imports' allocations made it
              traverse four to six times, and Prefect then ran one more `gc.collect()` (a memory
              saving FastAPI >= 0.137 no longer allows); the first flow run waited ~0.2 s for the
              next. The ephemeral server builds the app with the collector paused and freezes
              it: ready after ~2.3 s instead of ~3.1 s on this machine.
            * **Prepared routes for the first request.** FastAPI prepares an included router's
              routes on the first request that reaches it, trying the routers in order; the
              client's version check (`/admin`, Prefect's 29th router of 30) prepared nearly all
              of them (~0.2 s). The ephemeral server lists the routers a run calls first.
            * **Run settings made while the server starts.** The run's Prefect settings (which
              validate every setting again, ~0.1 s) are built for the ephemeral API's address
              before it answers, not after.
            """
        )
    )
    add("## Reproduce\n")
    add("```bash\npip install -e '.[bench]'\n" + command + "\n```\n")
    add(
        "Raw numbers: `benchmarks/results/<label>.json`. Cases live in `benchmarks/cases.py` "
        "(pipelines in `benchmarks/pipelines.py`); startup runs `kedro run` in a copy of "
        "`examples/sales_demo`.\n"
    )
    return "\n".join(lines), plots


def _ratios(data: dict[str, Any]) -> list[tuple[str, float]]:
    """(label, ratio to its baseline) for the summary plot."""
    out = []
    for s in data["startup"]:
        out.append(
            (f"startup, {s['api']} (vs Sequential)", s["PrefectRunner"] / s["SequentialRunner"])
        )
    for cases in data["cases"]:
        api = cases["api"]
        for case in ("chain", "independent"):
            rows = _rows(cases, case)
            if "PrefectRunner" in rows and "raw Prefect tasks" in rows:
                r, raw = rows["PrefectRunner"], rows["raw Prefect tasks"]["seconds"]
                label = f"{case} {r['nodes']}, PrefectRunner, {api} (vs raw Prefect)"
                out.append((label, r["seconds"] / raw))
        walls: dict[str, dict[float, float]] = {}
        for r in cases["rows"]:
            if r["case"] == "skewed":
                walls.setdefault(r["runner"], {})[r["critical_path"]] = r["seconds"]
        for runner in ("PrefectRunner", "layered Prefect flow", "ThreadRunner"):
            if runner in walls:
                t = max(walls[runner])
                out.append((f"skewed T={t:g}s, {runner}, {api} (vs T)", walls[runner][t] / t))
    return out


def _startup(data: dict[str, Any], add: Any, plots: dict[str, Plot]) -> None:
    add("## 1. Startup\n")
    add("`kedro run` of the example project (13 nodes), from the shell prompt to the exit.\n")
    add("| Prefect API | Sequential | Prefect | difference | ratio | target |")
    add("| --- | ---: | ---: | ---: | ---: | --- |")
    for s in data["startup"]:
        diff = s["PrefectRunner"] - s["SequentialRunner"]
        ratio = s["PrefectRunner"] / s["SequentialRunner"]
        target = "≤ +4.0 s" if s["api"] == "ephemeral" else "≤ +1.6 s"
        api = "ephemeral (none running)" if s["api"] == "ephemeral" else "server at PREFECT_API_URL"
        add(
            f"| {api} | {s['SequentialRunner']:.2f} s | {s['PrefectRunner']:.2f} s | "
            f"+{diff:.2f} s | {ratio:.2f}x | {target} |"
        )
        if "PrefectRunner back-to-back" in s:
            b2b = s["PrefectRunner back-to-back"]
            add(
                f"| ephemeral, back-to-back (lingering API reused) | {s['SequentialRunner']:.2f} s "
                f"| {b2b:.2f} s | +{b2b - s['SequentialRunner']:.2f} s | "
                f"{b2b / s['SequentialRunner']:.2f}x | ≤ +1.0 s |"
            )
    add("")
    add(
        "*Sequential*: `SequentialRunner`; *Prefect*: `PrefectRunner`. The difference includes "
        "running the 13 nodes as Prefect tasks (~5 ms each, section 2); the start-up alone, "
        "with one node, is the first row of section 0.\n"
    )


def _overhead(data: dict[str, Any], add: Any, plots: dict[str, Plot]) -> None:
    add("## 2. Per-node overhead\n")
    add(
        "Two pipelines of no-op nodes: 200 chained (each node waits for the previous one: the "
        "cost per node) and 200 independent (all ready at once: throughput). *extra ms/node* "
        "is the time per node over `SequentialRunner`'s; *x raw Prefect* compares with the same "
        "tasks submitted by a hand-written Prefect flow.\n"
    )
    bars: list[tuple[str, str, float]] = []
    for cases in data["cases"]:
        api = cases["api"]
        add(f"### {_api_label(api)[0].upper()}{_api_label(api)[1:]}\n")
        what = "launch of the ephemeral API" if api == "ephemeral" else "first use of the server"
        add(
            f"Prefect API ready in this process after {cases['api_start_s']:.2f} s ({what}, with "
            "`import prefect`; excluded below: every runner had a warm-up run first).\n"
        )
        if cases.get("quiet_s"):
            add(
                f"Each timed run that uses the API started {cases['quiet_s']:.0f} s after the "
                "server had recorded the previous run's task runs: the server's event persister "
                "writes in batches (every 5 s by default), and on SQLite a flow run created "
                "during such a write is refused with 503, which Prefect's client retries after "
                "2 s, then 4 s. Back-to-back runs against a SQLite-backed server pay that; see "
                "docs/troubleshooting.md.\n"
            )
        for case in ("chain", "independent"):
            rows = _rows(cases, case)
            if not rows:
                continue
            seq = rows["SequentialRunner"]["seconds"]
            raw = rows.get("raw Prefect tasks", {}).get("seconds")
            n = next(iter(rows.values()))["nodes"]
            kind = "chained" if case == "chain" else "independent"
            add(f"**{n} {kind} nodes**\n")
            add("| runner | seconds | ms/node | extra ms/node | x Sequential | x raw Prefect |")
            add("| --- | ---: | ---: | ---: | ---: | ---: |")
            for runner, r in rows.items():
                add(
                    f"| {runner} | {r['seconds']:.3f} | {1000 * r['seconds'] / r['nodes']:.2f} | "
                    f"{1000 * (r['seconds'] - seq) / r['nodes']:.2f} | {r['seconds'] / seq:.1f} | "
                    + (f"{r['seconds'] / raw:.2f} |" if raw else "- |")
                )
                bars.append(
                    (f"{n} {kind}, {_api_short(api)}", runner, 1000 * r["seconds"] / r["nodes"])
                )
            add("")
    if bars:
        plots["benchmarks-overhead.png"] = ("milliseconds per node (log scale)", True, bars)
        add(_image("benchmarks-overhead.png", "milliseconds per node, by runner"))


def _skewed(data: dict[str, Any], add: Any, plots: dict[str, Plot]) -> None:
    add("## 3. Skewed DAG of sleeping nodes\n")
    first = [r for c in data["cases"] for r in c["rows"] if r["case"] == "skewed"]
    if not first:
        add("_Not measured in this run._\n")
        return
    add(
        f"{first[0]['nodes']} nodes: three branches, of 1 node, 4 nodes and 8 nodes, each "
        "summing to the critical path *T*, joined by one node. With *T* = 1 s the fixed cost "
        "of a Prefect flow run (creating it and its states, ~0.1 s) weighs on the ratio; "
        "with a longer *T* the ratio shows how well the nodes themselves are scheduled. "
        "*wall / T* = 1 is the best any runner can do.\n"
    )
    bars: list[tuple[str, str, float]] = []
    for cases in data["cases"]:
        api = cases["api"]
        skews = [r for r in cases["rows"] if r["case"] == "skewed"]
        paths = sorted({r["critical_path"] for r in skews})
        add(f"### {_api_label(api)[0].upper()}{_api_label(api)[1:]}\n")
        add("| runner | " + " | ".join(f"wall, T = {t:g} s | wall / T" for t in paths) + " |")
        add("| --- |" + " ---: | ---: |" * len(paths))
        by_runner: dict[str, dict[float, float]] = {}
        for r in skews:
            by_runner.setdefault(r["runner"], {})[r["critical_path"]] = r["seconds"]
        for runner, walls in by_runner.items():
            cells = [
                f"{walls[t]:.2f} s | {walls[t] / t:.2f}" if t in walls else "- | -" for t in paths
            ]
            add(f"| {runner} | " + " | ".join(cells) + " |")
            t = max(walls)
            bars.append((f"T = {t:g} s, {_api_short(api)}", runner, walls[t] / t))
        add("")
    plots["benchmarks-skewed.png"] = ("wall time / critical path (1 = ideal)", False, bars)
    add(_image("benchmarks-skewed.png", "wall time over the critical path, by runner"))


def _dask(data: dict[str, Any], add: Any, plots: dict[str, Plot]) -> None:
    add("## 4. Dask\n")
    if not data["dask"]:
        add("_`benchmarks/dask_cpu.py` / `benchmarks/dask_memory.py` are not in this checkout._\n")
    for name, d in data["dask"].items():
        add(f"### {name}\n")
        if "error" in d:
            add(f"_failed:_\n\n```\n{d['error']}\n```\n")
        else:
            add(_markdown_only(d["markdown"]) + "\n")


def _scale(data: dict[str, Any], add: Any, plots: dict[str, Plot]) -> None:
    add("## 5. Scale: 1,000 nodes\n")
    bars: list[tuple[str, str, float]] = []
    for cases in data["cases"]:
        api = cases["api"]
        rows = _rows(cases, "scale")
        if not rows:
            continue
        add(f"### {_api_label(api)[0].upper()}{_api_label(api)[1:]}\n")
        seq = rows["SequentialRunner"]["seconds"]
        add("| runner | nodes | total run | ms/node | x Sequential |")
        add("| --- | ---: | ---: | ---: | ---: |")
        for runner, r in rows.items():
            add(
                f"| {runner} | {r['nodes']} | {r['seconds']:.2f} s | "
                f"{1000 * r['seconds'] / r['nodes']:.2f} | {r['seconds'] / seq:.1f} |"
            )
            bars.append((f"{r['nodes']} nodes, {_api_short(api)}", runner, r["seconds"]))
        add("")
        builds = [r for r in cases["rows"] if r["case"] == "build"]
        if builds:
            add(
                "Build time (dependency maps + one Prefect task object per node, what "
                "PrefectRunner does before submitting):\n"
            )
            add("| nodes | build | µs per node |")
            add("| ---: | ---: | ---: |")
            for r in builds:
                add(
                    f"| {r['nodes']} | {1000 * r['seconds']:.1f} ms | "
                    f"{1e6 * r['seconds'] / r['nodes']:.0f} |"
                )
            add("")
    if bars:
        plots["benchmarks-scale.png"] = ("seconds for the whole run", False, bars)
        add(_image("benchmarks-scale.png", "seconds for 1,000 nodes, by runner"))


def write_ratio_plot(plot: list[tuple[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    path.parent.mkdir(parents=True, exist_ok=True)
    labels = [p[0] for p in plot]
    values = [p[1] for p in plot]
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(plot) + 1.2))
    ax.barh(range(len(plot)), values, color="#3b7dd8")
    ax.set_yticks(range(len(plot)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("ratio to the baseline measured in the same run (log scale, lower is better)")
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: The same colour for a runner in every plot.
_RUNNER_ORDER = (
    "SequentialRunner",
    "ThreadRunner",
    "ParallelRunner",
    "PrefectRunner",
    "raw Prefect tasks",
    "layered Prefect flow",
)


def write_bars(plot: Plot, path: Path) -> None:
    """Horizontal bars, grouped (one group per case and API), one colour per runner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    xlabel, log_scale, bars = plot
    groups = list(dict.fromkeys(g for g, _, _ in bars))
    runners = list(dict.fromkeys(r for _, r, _ in bars))
    colours = plt.get_cmap("tab10")
    height = 0.8 / max(len(runners), 1)
    fig, ax = plt.subplots(figsize=(9, 0.22 * len(bars) + 0.5 * len(groups) + 1.0))
    for j, runner in enumerate(runners):
        ys, xs = [], []
        for i, group in enumerate(groups):
            for g, r, v in bars:
                if g == group and r == runner:
                    ys.append(i + (j - (len(runners) - 1) / 2) * height)
                    xs.append(v)
        known = _RUNNER_ORDER.index(runner) if runner in _RUNNER_ORDER else len(_RUNNER_ORDER) + j
        ax.barh(ys, xs, height=height, color=colours(known % 10), label=runner)
        for y, x in zip(ys, xs, strict=True):
            ax.text(x, y, f" {x:.3g}", va="center", fontsize=7)
    ax.set_yticks(range(len(groups)), groups, fontsize=9)
    ax.invert_yaxis()
    if log_scale:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.legend(
        fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(3, len(runners))
    )
    ax.set_xlabel(xlabel, labelpad=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small pipelines, 1 repeat")
    parser.add_argument("--label", default="latest", help="name of the results JSON")
    parser.add_argument("--no-docs", action="store_true", help="only write the results JSON")
    parser.add_argument("--only", choices=("felt", "startup", "cases", "dask"), action="append")
    parser.add_argument("--render", metavar="LABEL", help="only re-render docs from a results JSON")
    args = parser.parse_args()
    if args.render:
        data = json.loads((RESULTS / f"{args.render}.json").read_text())
        render(data, "python benchmarks/run.py" + (" --quick" if data.get("quick") else ""))
        return
    repeats = 1 if args.quick else args.repeats
    only = set(args.only or ALL)
    command = "python benchmarks/run.py" + (" --quick" if args.quick else "")
    RESULTS.mkdir(exist_ok=True)
    data: dict[str, Any] = {
        "machine": machine(),
        "repeats": repeats,
        "startup": [],
        "cases": [],
        "dask": {},
        "quick": args.quick,
    }
    if "felt" in only:
        log("as a user feels it: whole kedro run, 1 / 200 / 1,000 nodes")
        sizes = (1, 50) if args.quick else user_felt.SIZES
        data["felt"] = user_felt.measure(repeats, sizes, base_env(Path(tempfile.gettempdir())))
    with tempfile.TemporaryDirectory(prefix="kp-bench-") as tmp_name:
        tmp = Path(tmp_name)
        eph_home, srv_home, client_home = (tmp / d for d in ("eph-home", "srv-home", "cli-home"))
        for d in (eph_home, srv_home, client_home):
            d.mkdir()

        def bench_api(api: str, url: str | None, home: Path) -> None:
            if "startup" in only:
                log(f"startup, {api}")
                data["startup"].append(bench_startup(tmp, repeats, url, home))
            if "cases" in only:
                log(f"cases, {api}")
                data["cases"].append(bench_cases(repeats, args.quick, url, home))

        bench_api("ephemeral API", None, eph_home)
        if only & {"startup", "cases"}:
            log("starting prefect server")
            with prefect_server(srv_home) as url:
                bench_api("server", url, client_home)
        if "dask" in only:
            data["dask"] = bench_dask(args.quick, eph_home)
    (RESULTS / f"{args.label}.json").write_text(json.dumps(data, indent=1))
    log(f"wrote {RESULTS / f'{args.label}.json'}")
    if not args.no_docs and only == set(ALL):
        render(data, command)
    elif not args.no_docs and only == {"felt"} and DOC.exists():
        # Only this section was measured: put it into the existing report.
        DOC.write_text(splice_felt(DOC.read_text(), data))
        log(f"wrote section 0 of {DOC}")


def splice_felt(text: str, data: dict[str, Any]) -> str:
    """``text`` (a report) with its section 0 replaced by, or inserted from, ``data``."""
    section = "\n".join(user_felt.report(data["felt"])) + "\n"
    start = text.find("## 0. ")
    end = text.find("## 1. ")
    if start == -1:
        start = end
    return text[:start] + section + text[end:]


def render(data: dict[str, Any], command: str) -> None:
    text, plots = report(data, command)
    old = DOC.read_text() if DOC.exists() else ""
    if "## 6. " in old:  # measured by server_costs.py, standalone: kept as it is
        kept = old[old.find("## 6. ") : old.find("## At a glance")]
        text = text.replace("## At a glance", kept + "## At a glance", 1)
    if old:  # benchmarks/grouping.py's section, measured on its own: kept
        import grouping

        start = old.find(grouping.HEADING)
        if start != -1:
            end = old.find("\n## ", start + len(grouping.HEADING))
            text = grouping.splice(text, old[start : end + 1 if end != -1 else None])
    DOC.write_text(text)
    write_ratio_plot(_ratios(data), IMG)
    for name, plot in plots.items():
        write_bars(plot, IMG.with_name(name))
    log(f"wrote {DOC}, {IMG} and {', '.join(plots)}")


if __name__ == "__main__":
    main()
