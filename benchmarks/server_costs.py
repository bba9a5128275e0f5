"""What a run against a server, and the lingering local API, cost after Kedro's last line.

Two measurements, standalone (``run.py`` does not call this script; its JSON goes to stdout):

* ``exit``: ``kedro run`` of a chain of 1, 200 and 1,000 no-op nodes (``user_felt.py``'s
  project) against ``prefect server start`` (127.0.0.1, a free port, its own ``PREFECT_HOME``),
  PrefectRunner and SequentialRunner, rounds interleaved: the wall time and the *exit delay*
  (from Kedro's last line to the process exit). ``--baseline-src <dir>`` adds the PrefectRunner
  of another checkout's ``src`` (put first on ``PYTHONPATH``) to every round: before/after in
  one run.
* ``idle``: after a ``kedro run`` with the lingering local API (no ``PREFECT_API_URL``), the
  CPU seconds and the RSS of its server process over ``--seconds`` (default 60) of idling,
  awake (hibernation off) and once hibernated (``--hibernate-seconds``, default 5), and the wake
  cost: the whole wall of a back-to-back ``kedro run`` right after a run and after the server
  hibernated (medians of ``--repeats`` interleaved rounds). The server measured is the second
  of its ``PREFECT_HOME`` (the first run created the database), as for every run but a home's
  very first.

    git archive <old commit> src | tar -x -C /tmp/before      # a checkout to compare with
    python benchmarks/server_costs.py exit --repeats 3 [--baseline-src /tmp/before/src]
    python benchmarks/server_costs.py idle [--src /tmp/before/src]
    python benchmarks/server_costs.py idle --before /tmp/before/src --repeats 5   # side by side
    python benchmarks/server_costs.py report --exit exit.json --idle idle.json \
        [--idle-before idle-before.json]       # section 6 of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from run import base_env, prefect_server
from user_felt import stop_lingering_api, summary, timed, write_project

SIZES = (1, 200, 1000)
HIBERNATE_ENV = "KEDRO_PREFECT_API_HIBERNATE_SECONDS"


def _env(home: Path, project: Path) -> dict[str, str]:
    env = base_env(home)
    env.update({"PYTHONPATH": str(project / "src"), "PYTHONUNBUFFERED": "1"})
    env.pop("KEDRO_PREFECT_API_IDLE_SECONDS", None)
    return env


def _kedro() -> list[str]:
    return [str(Path(sys.executable).parent / "kedro"), "run"]


def _with_src(env: dict[str, str], src: str | None) -> dict[str, str]:
    """``env`` running the kedro-prefect of ``src`` (a checkout's ``src``) instead."""
    if src is None:
        return env
    return {**env, "PYTHONPATH": f"{src}{os.pathsep}{env['PYTHONPATH']}"}


def _timed_again_on_failure(command: list[str], cwd: Path, env: dict[str, str]) -> Any:
    """One sample; once more if the run failed (a SQLite-backed server on a loaded machine
    answers 503 when a run starts while it still records the previous one's task runs)."""
    try:
        return timed(command, cwd, env)
    except RuntimeError as exc:
        print(f"sample failed, measured again: {str(exc)[-300:]}", file=sys.stderr, flush=True)
        time.sleep(10)
        return timed(command, cwd, env)


def measure_exit(repeats: int, sizes: tuple[int, ...], baseline: str | None) -> dict[str, Any]:
    prefect = [*_kedro(), "--runner=kedro_prefect.PrefectRunner"]
    cases: dict[str, tuple[list[str], str | None]] = {
        "SequentialRunner": (_kedro(), None),
        "PrefectRunner": (prefect, None),
    }
    if baseline:
        cases["PrefectRunner before"] = (prefect, baseline)
    with tempfile.TemporaryDirectory(prefix="kp-server-costs-") as tmp:
        root = Path(tmp)
        project = write_project(root / "felt_demo")
        (root / "server-home").mkdir()
        (root / "client-home").mkdir()
        with prefect_server(root / "server-home") as url:
            env = {**_env(root / "client-home", project), "PREFECT_API_URL": url}
            for command, src in cases.values():  # warm-up: bytecode caches, the first flow
                timed(command, project, {**_with_src(env, src), "BENCH_NODES": "1"})
            samples: dict[str, dict[str, list[dict[str, float]]]] = {
                str(n): {case: [] for case in cases} for n in sizes
            }
            for round_ in range(repeats):
                for n in sizes:
                    for case, (command, src) in cases.items():
                        run_env = {**_with_src(env, src), "BENCH_NODES": str(n)}
                        sample = _timed_again_on_failure(command, project, run_env)
                        samples[str(n)][case].append(sample)
                print(f"round {round_ + 1} done", file=sys.stderr, flush=True)
    return summary(samples, repeats)


def _idle_costs(pid: int, seconds: float) -> dict[str, Any]:
    """CPU time and RSS of process ``pid`` over ``seconds``."""
    return _idle_costs_of([pid], seconds)[0]


def _idle_costs_of(pids: list[int], seconds: float) -> list[dict[str, Any]]:
    """CPU time and RSS of each process of ``pids`` over the same ``seconds``."""
    import psutil

    servers = [psutil.Process(pid) for pid in pids]
    before = [server.cpu_times() for server in servers]
    rss: list[list[int]] = [[] for _ in servers]
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        for samples, server in zip(rss, servers, strict=True):
            samples.append(server.memory_info().rss)
        time.sleep(1)
    elapsed = time.monotonic() - started
    results = []
    for server, times, samples in zip(servers, before, rss, strict=True):
        after = server.cpu_times()
        cpu = (after.user + after.system) - (times.user + times.system)
        results.append(
            {
                "seconds": round(elapsed, 1),
                "cpu_seconds": round(cpu, 3),
                "cpu_percent_of_a_core": round(100 * cpu / elapsed, 3),
                "rss_mb_max": round(max(samples) / 2**20, 1),
                "rss_mb_median": round(statistics.median(samples) / 2**20, 1),
            }
        )
    return results


def _server_pid(home: Path) -> int:
    return json.loads((home / "kedro-prefect-api" / "server.json").read_text())["pid"]


def measure_idle_before_after(
    before: str, now: str | None, seconds: float, repeats: int
) -> dict[str, Any]:
    """The awake idle server of ``before`` (another checkout's ``src``) and of ``now``, side by
    side: both idle over the same ``seconds``, then back-to-back runs (interleaved) against
    each, and each server's RSS after them."""
    import psutil

    with tempfile.TemporaryDirectory(prefix="kp-idle-") as tmp:
        root = Path(tmp)
        project = write_project(root / "felt_demo")
        run = [*_kedro(), "--runner=kedro_prefect.PrefectRunner"]
        envs, homes = {}, {}
        for case, src in (("before", before), ("now", now)):
            homes[case] = root / f"home-{case}"
            homes[case].mkdir()
            env = _with_src(_env(homes[case], project), src)
            envs[case] = {**env, "BENCH_NODES": "20", HIBERNATE_ENV: "0"}
        for env in envs.values():  # the first run of a home creates its database
            timed(run, project, env)
            stop_lingering_api(env, project)
        for env in envs.values():
            timed(run, project, env)
        pids = {case: _server_pid(home) for case, home in homes.items()}
        time.sleep(5)  # the runs' bookkeeping done
        idle = _idle_costs_of(list(pids.values()), seconds)
        result: dict[str, Any] = dict(zip(pids, idle, strict=True))
        walls: dict[str, list[float]] = {case: [] for case in envs}
        for _ in range(repeats):
            for case, env in envs.items():
                walls[case].append(timed(run, project, env)["wall"])
        time.sleep(5)
        for case, pid in pids.items():
            assert _server_pid(homes[case]) == pid, "every run reused the awake server"
            result[case]["back_to_back_walls"] = [round(w, 2) for w in walls[case]]
            result[case]["back_to_back_median"] = round(statistics.median(walls[case]), 2)
            result[case]["rss_mb_after_back_to_back"] = round(
                psutil.Process(pid).memory_info().rss / 2**20, 1
            )
            result[case]["command"] = " ".join(psutil.Process(pid).cmdline()[:3])
        for env in envs.values():
            stop_lingering_api(env, project)
    result["repeats"] = repeats
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return result


def _hibernated(home: Path, pid: int, most: float) -> bool:
    """Wait until the server ``pid`` of ``home`` hibernates (at most ``most`` seconds)."""
    mark = home / "kedro-prefect-api" / str(pid) / "hibernating"
    deadline = time.monotonic() + most
    while not mark.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    time.sleep(1)  # the sleeper settled
    return True


def measure_idle(src: str | None, seconds: float, hibernate: float, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kp-idle-") as tmp:
        root = Path(tmp)
        home = root / "home"
        project = write_project(root / "felt_demo")
        home.mkdir()
        env = {**_with_src(_env(home, project), src), "BENCH_NODES": "20"}
        awake_env = {**env, HIBERNATE_ENV: "0"}
        env[HIBERNATE_ENV] = str(hibernate)
        run = [*_kedro(), "--runner=kedro_prefect.PrefectRunner"]
        # The first run of a new PREFECT_HOME creates its database; a home's later servers
        # start on a database that exists (the usual case): measure one of those.
        timed(run, project, env)
        stop_lingering_api(env, project)
        # Awake (hibernation off): the server as it idles before it hibernates.
        timed(run, project, awake_env)
        pid = json.loads((home / "kedro-prefect-api" / "server.json").read_text())["pid"]
        time.sleep(5)  # the run's bookkeeping done
        result: dict[str, Any] = _idle_costs(pid, seconds)
        stop_lingering_api(env, project)
        # Hibernated: the same process once it has hibernated.
        timed(run, project, env)
        pid = json.loads((home / "kedro-prefect-api" / "server.json").read_text())["pid"]
        if _hibernated(home, pid, hibernate + 60):
            result["hibernated"] = _idle_costs(pid, seconds)
            # What a run pays to wake it: back-to-back right after a run, and after the
            # server hibernated, rounds interleaved (whole wall of `kedro run`).
            walls: dict[str, list[float]] = {"right after": [], "after hibernation": []}
            for _ in range(repeats):
                walls["right after"].append(timed(run, project, env)["wall"])
                _hibernated(home, pid, hibernate + 60)
                walls["after hibernation"].append(timed(run, project, env)["wall"])
            result["wake"] = {
                case: round(statistics.median(values), 2) for case, values in walls.items()
            }
            result["wake_repeats"] = repeats
            # The wake alone: a request to the hibernated server, until it answers.
            url = json.loads((home / "kedro-prefect-api" / "server.json").read_text())["url"]
            health = []
            for _ in range(repeats):
                _hibernated(home, pid, hibernate + 60)
                started = time.perf_counter()
                urllib.request.urlopen(f"{url}/health", timeout=120).read()
                health.append(time.perf_counter() - started)
            result["wake"]["first answer"] = round(statistics.median(health), 2)
            result["hibernate_seconds"] = hibernate
        stop_lingering_api(env, project)
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return result


DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "## 6. "


def report(exit_data: dict[str, Any], idle: dict[str, Any], before: dict[str, Any] | None) -> str:
    """Section 6 of docs/benchmarks.md."""
    medians = exit_data["medians"]
    cases = list(next(iter(medians.values())))
    lines = [
        f"{SECTION}With a server: after the last line, and the idle local API\n",
        "Measured with `benchmarks/server_costs.py` (standalone, not part of `run.py`): `kedro "
        "run` of the chain of section 0 against `prefect server start` on the same machine. "
        'Wall time to exit and, in brackets, the exit delay after Kedro\'s last line. "before": '
        "the previous release's PrefectRunner, measured in the same rounds. Medians of "
        f"{exit_data['repeats']} rounds, {exit_data['date']}, load average "
        f"{exit_data['load_average']} (2 cores shared with other jobs: absolute seconds are "
        "inflated, compare the columns).\n",
        "| nodes | " + " | ".join(cases) + " |",
        "| ---: |" + " ---: |" * len(cases),
    ]
    for n, by_case in medians.items():
        cells = [f"{by_case[c]['wall']:.2f} s ({by_case[c]['exit_delay']:.2f} s)" for c in cases]
        lines.append(f"| {int(n):,} | " + " | ".join(cells) + " |")
    sizes = sorted(medians, key=int)
    if len(sizes) >= 2:
        small, big = sizes[0], sizes[-1]
        nodes = int(big) - int(small)
        per_node = ", ".join(
            f"{c} {1000 * (medians[big][c]['wall'] - medians[small][c]['wall']) / nodes:.1f} ms"
            for c in cases
        )
        lines.append(
            f"\nWhole-process cost per node with a server ({small} to {big} nodes): {per_node}.\n"
        )
    lines.append(
        "The exit delay of a run against a server was mostly Prefect's log worker waiting at "
        "exit for the busy server to store the last batch; that batch now goes to a courier "
        "process ([observability](observability.md#the-last-log-lines-after-kedro-run-has-exited)"
        "). What is left is a young-generation garbage collection (finalizing what the run's last "
        "steps left) and the interpreter's teardown.\n"
    )
    row = (
        "| {what} | {cpu_seconds:.2f} s over {seconds:.0f} s "
        "({cpu_percent_of_a_core:.2f}% of a core) | {rss_mb_median:.0f} MB |"
    )
    lines += [
        "Idle lingering local API (`KEDRO_PREFECT_API_IDLE_SECONDS` default) after a 20-node run, "
        "CPU time and RSS of its server process (the second server of its `PREFECT_HOME`: the "
        "database exists, as for every run but a home's first):\n",
        "| | CPU | RSS |",
        "| --- | ---: | ---: |",
    ]
    if before:
        lines.append(row.format(what="before", **before))
    lines.append(row.format(what="now", **idle))
    if idle.get("hibernated"):
        lines.append(row.format(what="now, hibernated", **idle["hibernated"]))
        wake = idle["wake"]
        lines.append(
            f"\nWake cost (`--hibernate-seconds {idle['hibernate_seconds']:g}`): the whole wall of "
            f"a back-to-back `kedro run` (20 nodes) right after a run {wake['right after']:.2f} s, "
            f"after the server hibernated {wake['after hibernation']:.2f} s (medians of "
            f"{idle['wake_repeats']} interleaved rounds); a request to the hibernated server "
            f"answered after {wake.get('first answer', float('nan')):.2f} s (median)."
        )
    lines.append(
        f"\n(Idle measured {idle['date']}, load average {idle['load_average']}.) The server runs "
        "only the task run recorder and the event persister, uvicorn's main loop wakes once a "
        "second instead of ten times, and a database at Prefect's newest revision is not "
        "upgraded (no Alembic import). Most of the RSS is Prefect's server code itself: "
        "importing `prefect.server.api.server` alone takes ~160 MB.\n"
    )
    return "\n".join(lines) + "\n"


def splice(text: str, section: str) -> str:
    """``text`` (the report) with its section 6 replaced by, or inserted as, ``section``."""
    start = text.find(SECTION)
    end = text.find("## At a glance")
    if start == -1:
        start = end
    return text[:start] + section + "\n" + text[end:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    exit_ = sub.add_parser("exit")
    exit_.add_argument("--repeats", type=int, default=3)
    exit_.add_argument("--sizes", default=",".join(map(str, SIZES)))
    exit_.add_argument("--baseline-src", help="another checkout's src, measured alongside")
    idle = sub.add_parser("idle")
    idle.add_argument("--seconds", type=float, default=60)
    idle.add_argument("--src", help="another checkout's src to measure instead")
    idle.add_argument("--hibernate-seconds", type=float, default=5.0)
    idle.add_argument("--repeats", type=int, default=3, help="rounds of the wake cost")
    idle.add_argument(
        "--before",
        help="another checkout's src: its awake server and this one's (or --src's) side by "
        "side, idle over the same seconds, then back-to-back runs (no hibernation measured)",
    )
    rep = sub.add_parser("report")
    rep.add_argument("--exit", required=True)
    rep.add_argument("--idle", required=True)
    rep.add_argument("--idle-before")
    args = parser.parse_args()
    if args.what == "report":
        before = json.loads(Path(args.idle_before).read_text()) if args.idle_before else None
        section = report(
            json.loads(Path(args.exit).read_text()), json.loads(Path(args.idle).read_text()), before
        )
        DOC.write_text(splice(DOC.read_text(), section))
        return
    if args.what == "exit":
        sizes = tuple(int(s) for s in args.sizes.split(","))
        result = measure_exit(args.repeats, sizes, args.baseline_src)
    elif args.before:
        result = measure_idle_before_after(args.before, args.src, args.seconds, args.repeats)
    else:
        result = measure_idle(args.src, args.seconds, args.hibernate_seconds, args.repeats)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
