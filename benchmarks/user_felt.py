"""Whole-process ``kedro run`` timings the way a user feels them (called by ``run.py``).

For chains of 1, 200 and 1,000 no-op nodes in a generated Kedro project, each round runs, one
after the other (rounds interleave the cases, so load on a shared machine hits them alike):

* ``kedro run`` with SequentialRunner and ThreadRunner;
* PrefectRunner, first run: no ephemeral API is up (a lingering one is stopped first);
* PrefectRunner, back-to-back: right after another PrefectRunner run on the same PREFECT_HOME;
* raw Prefect: a script running the same chain as Prefect tasks in one flow (Prefect's own
  ephemeral server, started and stopped by Prefect).

Each sample is the wall time from launch to process exit, and the *exit delay*: from the line
"Pipeline execution completed" (Kedro's last line; the raw script prints the same) to the exit.

    python benchmarks/user_felt.py --repeats 3 > results.json   # standalone
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
SIZES = (1, 200, 1000)
MARKER = "Pipeline execution completed"
CASES = (
    "SequentialRunner",
    "ThreadRunner",
    "Prefect first run",
    "Prefect back-to-back",
    "raw Prefect",
)
PACKAGE = "felt_demo"

PROJECT_FILES = {
    "pyproject.toml": f"""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{PACKAGE}"
        version = "0.1.0"

        [tool.kedro]
        package_name = "{PACKAGE}"
        project_name = "felt-demo"
        kedro_init_version = "1.0.0"
        source_dir = "src"
        """,
    "conf/base/catalog.yml": "{}\n",
    "conf/local/.keep": "",
    f"src/{PACKAGE}/__init__.py": "",
    f"src/{PACKAGE}/settings.py": "",
    f"src/{PACKAGE}/pipeline_registry.py": """
        import os

        from kedro.pipeline import Pipeline, node


        def noop(x=None):
            return 1


        def register_pipelines():
            n = int(os.environ.get("BENCH_NODES", "1"))
            nodes = [node(noop, None, "d0", name="n0")]
            nodes += [node(noop, f"d{i - 1}", f"d{i}", name=f"n{i}") for i in range(1, n)]
            return {"__default__": Pipeline(nodes)}
        """,
}

RAW_SCRIPT = f"""
import os
from prefect import flow, task

@task
def noop(x=None):
    return 1

@flow(persist_result=False)
def chain(n):
    future = noop.submit()
    for _ in range(n - 1):
        future = noop.submit(future)
    future.result()

chain(int(os.environ["BENCH_NODES"]))
print("{MARKER}", flush=True)
"""


def write_project(root: Path) -> Path:
    for name, text in PROJECT_FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    (root / "raw_chain.py").write_text(RAW_SCRIPT)
    return root


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Wall time to exit, and the time from the marker line to exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    marker_at: list[float] = []
    tail: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if MARKER in line and not marker_at:
                marker_at.append(time.perf_counter())
            tail.append(line)
            del tail[:-40]

    reader = threading.Thread(target=read)
    reader.start()
    code = proc.wait()
    ended = time.perf_counter()
    reader.join()
    if code or not marker_at:
        raise RuntimeError(f"{cmd} failed ({code}):\n{''.join(tail)}")
    return {"wall": ended - start, "exit_delay": ended - marker_at[0]}


def summary(samples: dict[str, dict[str, list[dict[str, float]]]], repeats: int) -> dict[str, Any]:
    """Medians of wall and exit delay per size and case, with the samples, date and load."""
    medians = {
        n: {
            case: {key: statistics.median(s[key] for s in runs) for key in ("wall", "exit_delay")}
            for case, runs in by_case.items()
        }
        for n, by_case in samples.items()
    }
    return {
        "repeats": repeats,
        "medians": medians,
        "samples": samples,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def stop_lingering_api(env: dict[str, str], cwd: Path) -> None:
    """Stop the lingering ephemeral API of env's PREFECT_HOME (versions that have one)."""
    code = (
        "import importlib, importlib.util\n"
        "for name in ('kedro_prefect.local_api', 'kedro_prefect.api.lingering'):\n"
        "    if importlib.util.find_spec(name):\n"
        "        importlib.import_module(name).stop_server()\n"
        "        break\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, check=True)


def measure(repeats: int, sizes: tuple[int, ...], env: dict[str, str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kp-felt-") as tmp:
        project = write_project(Path(tmp) / "felt_demo")
        home = Path(tmp) / "home"
        home.mkdir()
        env = {**env, "PREFECT_HOME": str(home), "PYTHONPATH": str(project / "src")}
        env.pop("KEDRO_PREFECT_API_IDLE_SECONDS", None)  # the default a user gets
        env.pop("PREFECT_API_URL", None)
        kedro = [str(BIN / "kedro"), "run"]
        commands = {
            "SequentialRunner": kedro,
            "ThreadRunner": [*kedro, "--runner=ThreadRunner"],
            "Prefect first run": [*kedro, "--runner=kedro_prefect.PrefectRunner"],
            "Prefect back-to-back": [*kedro, "--runner=kedro_prefect.PrefectRunner"],
            "raw Prefect": [sys.executable, "raw_chain.py"],
        }
        samples: dict[str, dict[str, list[dict[str, float]]]] = {
            str(n): {case: [] for case in CASES} for n in sizes
        }
        # Warm-up: bytecode caches, the database's migrations.
        for case in ("SequentialRunner", "Prefect first run", "raw Prefect"):
            timed(commands[case], project, {**env, "BENCH_NODES": "1"})
        for round_ in range(repeats):
            for n in sizes:
                run_env = {**env, "BENCH_NODES": str(n)}
                for case in CASES:
                    if case == "Prefect first run":
                        stop_lingering_api(env, project)
                    samples[str(n)][case].append(timed(commands[case], project, run_env))
                print(f"round {round_ + 1}, {n} nodes: done", file=sys.stderr, flush=True)
        stop_lingering_api(env, project)
    return summary(samples, repeats)


def report(data: dict[str, Any]) -> list[str]:
    """The markdown section for docs/benchmarks.md."""
    lines = [
        "## 0. As a user feels it: whole `kedro run`, chains of no-op nodes\n",
        "Wall time of the whole process (launch to exit) and, in brackets, the *exit delay*: "
        f'from Kedro\'s last line ("{MARKER}") to the process exit. *First run*: no ephemeral '
        "API up (a lingering one was stopped first); *back-to-back*: right after another "
        "PrefectRunner run on the same `PREFECT_HOME`, which reuses the lingering API "
        "(`KEDRO_PREFECT_API_IDLE_SECONDS`, default 900 s). *Raw Prefect*: the same chain as "
        "Prefect tasks in one flow, with Prefect's own ephemeral server. Rounds interleave the "
        "cases; medians of "
        + (f"{data['repeats']} rounds" if isinstance(data["repeats"], int) else data["repeats"])
        + (
            f", measured {data['date']} (load average at the end {data['load_average']}: on a "
            "shared machine absolute seconds are inflated, compare the columns)"
            if "date" in data
            else ""
        )
        + ".\n",
        "| nodes | " + " | ".join(CASES) + " |",
        "| ---: |" + " ---: |" * len(CASES),
    ]
    for n, by_case in data["medians"].items():
        cells = [
            f"{by_case[case]['wall']:.2f} s ({by_case[case]['exit_delay']:.2f} s)" for case in CASES
        ]
        lines.append(f"| {int(n):,} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "The exit delay is what the process does after Kedro's last line: Prefect's events and "
        "log workers hand over what they still hold (the run's last log lines go to the "
        "ephemeral API as files that its server stores itself: before, the last batch waited "
        "2-3 s at 1,000 nodes for the server, busy recording the run), then the interpreter "
        "tears down. The server records the run's task run states and log lines on its own; "
        "nobody waits for it.\n"
    )
    smallest = min(data["medians"], key=int)
    first = data["medians"][smallest]
    startup = first["Prefect back-to-back"]["wall"] - first["SequentialRunner"]["wall"]
    delays = ", ".join(
        f"{by_case['Prefect first run']['exit_delay']:.2f} s / "
        f"{by_case['Prefect back-to-back']['exit_delay']:.2f} s at {int(n):,} node"
        + ("s" if int(n) > 1 else "")
        for n, by_case in data["medians"].items()
    )
    lines.append(
        "Targets: exit delay ≤ 0.5 s at any size; back-to-back start-up ≤ +1.0 s over "
        f"SequentialRunner. Measured: exit delay (first run / back-to-back) {delays}; "
        f"back-to-back start-up {startup:+.2f} s over SequentialRunner (the "
        f"{int(smallest):,}-node row: the larger rows add each runner's "
        "per-node cost, see section 2).\n"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    args = parser.parse_args()
    env = {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    print(json.dumps(measure(args.repeats, sizes, env), indent=1))


if __name__ == "__main__":
    main()
