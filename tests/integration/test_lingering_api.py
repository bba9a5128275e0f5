"""The lingering ephemeral API: reused by the next run on the same PREFECT_HOME, one per home,
stopped when idle, when its home goes away or on ``kedro prefect api stop``; never an orphan.

Each test runs drivers as separate processes with lingering turned on
(``KEDRO_PREFECT_API_IDLE_SECONDS``; the rest of the suite turns it off) in a PREFECT_HOME of its
own, and stops every server it saw by PID at the end, also when it fails.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

import kedro_prefect
from kedro_prefect.local_api import (
    APP_FACTORY,
    HIBERNATE_ENV,
    IDLE_ENV,
    hibernate_seconds,
    server_code_files,
    server_status,
    stop_server,
)
from tests.helpers import eventually, run_kedro, run_python

DRIVER = textwrap.dedent(
    """
    import os, sys, time
    if os.environ.get("KP_IMPORT_PREFECT_FIRST"):  # as task_runner=dask does, building the runner
        import prefect
    from kedro.io import DataCatalog
    from kedro.pipeline import Pipeline, node
    from kedro_prefect import PrefectRunner
    from kedro_prefect.local_api import EPHEMERAL_API

    def one(x=None):
        return 1

    n = int(sys.argv[1])
    nodes = [node(one, None, "d0", name="n0")]
    nodes += [node(one, f"d{i - 1}", f"d{i}", name=f"n{i}") for i in range(1, n)]
    PrefectRunner(flow_name=sys.argv[2]).run(Pipeline(nodes), DataCatalog())
    print("SERVER", EPHEMERAL_API.pid, EPHEMERAL_API.reused, EPHEMERAL_API.mode.value, flush=True)
    if len(sys.argv) > 3:  # then wait to be killed
        time.sleep(600)
    """
)


@pytest.fixture
def home(tmp_path: Path):
    """A PREFECT_HOME of its own (a copy of the suite's migrated database, for a quick start)."""
    home = _new_home(tmp_path / "prefect-home")
    yield home
    for proc in _servers_of(home):  # stop what the test left, by PID
        proc.kill()


def _new_home(home: Path) -> Path:
    home.mkdir()
    migrated = Path(os.environ["PREFECT_HOME"]) / "prefect.db"
    if migrated.exists():
        with sqlite3.connect(migrated) as source, sqlite3.connect(home / "prefect.db") as copy:
            source.backup(copy)
    return home


def _env(home: Path, idle: str = "600", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return {**env, "PREFECT_HOME": str(home), IDLE_ENV: idle, **extra}


def _drive(
    tmp_path: Path, env: dict[str, str], nodes: int = 3, flow: str = "linger"
) -> tuple[int, bool]:
    """Run the driver script to the end; return its server's PID and whether it reused it."""
    result = run_python(tmp_path, "-c", DRIVER, str(nodes), flow, env=env)
    line = [line for line in result.stdout.splitlines() if line.startswith("SERVER")][-1]
    _, pid, reused, mode = line.split()
    # Whose server it is, said once: its own (a speculative launch that answered) or adopted.
    assert mode == ("adopted" if reused == "True" else "started")
    return int(pid), reused == "True"


def _servers_of(home: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            if APP_FACTORY not in " ".join(proc.info["cmdline"] or []):
                continue
            if (proc.info["environ"] or {}).get("PREFECT_HOME") == str(home):
                found.append(proc)
        except (psutil.Error, TypeError):
            continue
    return found


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_next_run_reuses_the_server_and_api_status_and_stop_manage_it(
    home, tmp_path, example_project
):
    first, reused = _drive(tmp_path, _env(home))
    assert not reused
    assert not _gone(first), "the server lingers after the run"
    second, reused = _drive(tmp_path, _env(home))
    assert (second, reused) == (first, True)

    # What tells a run where the server is: readable by its owner only.
    state = home / "kedro-prefect-api"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "server.json").stat().st_mode) == 0o600
    info = json.loads((state / "server.json").read_text())
    assert info["pid"] == first and info["url"].startswith("http://127.0.0.1:")

    status = run_kedro(example_project, "prefect", "api", "status", env=_env(home))
    assert status.returncode == 0, status.stderr
    assert info["url"] in status.stdout and f"PID:     {first}" in status.stdout
    assert "idle for" in status.stdout
    # Only the services a local run needs, as the docs list them: task run states and events
    # are recorded; nothing for automations, schedules or event subscribers runs while it idles
    # (Prefect 3.4 and 3.9 alike).
    assert server_status(home)["services"] == ["TaskRunRecorder", "EventPersister"]
    assert "Services: TaskRunRecorder, EventPersister" in status.stdout

    stop = run_kedro(example_project, "prefect", "api", "stop", env=_env(home))
    assert stop.returncode == 0, stop.stderr
    assert f"PID {first}" in stop.stdout
    assert _gone(first)
    status = run_kedro(example_project, "prefect", "api", "status", env=_env(home))
    assert "No ephemeral Prefect API is running" in status.stdout


def test_runs_that_import_prefect_before_the_server_starts_or_after_share_it(home, tmp_path):
    """A Dask run imports Prefect as its runner is built, a thread run after launching the
    server: alternating them keeps one server (each launch passes the same settings)."""
    first, _ = _drive(tmp_path, _env(home, KP_IMPORT_PREFECT_FIRST="1"))
    assert _drive(tmp_path, _env(home)) == (first, True)
    assert _drive(tmp_path, _env(home, KP_IMPORT_PREFECT_FIRST="1")) == (first, True)


def test_settings_in_force_beyond_the_loaded_ones_reach_a_server_launched_in_the_process():
    from prefect.settings import PREFECT_LOGGING_LEVEL, temporary_settings

    from kedro_prefect.local_api.launch import server_env

    plain, _ = server_env(speculative=False)
    assert "PREFECT_LOGGING_LEVEL" not in plain or plain["PREFECT_LOGGING_LEVEL"] == os.environ.get(
        "PREFECT_LOGGING_LEVEL"
    )
    with temporary_settings({PREFECT_LOGGING_LEVEL: "DEBUG"}):
        overridden, _ = server_env(speculative=False)
    assert overridden["PREFECT_LOGGING_LEVEL"] == "DEBUG"
    assert {k: v for k, v in overridden.items() if k != "PREFECT_LOGGING_LEVEL"} == {
        k: v for k, v in plain.items() if k != "PREFECT_LOGGING_LEVEL"
    }


def test_a_second_prefect_home_gets_a_server_of_its_own_and_shares_nothing(home, tmp_path):
    other = _new_home(tmp_path / "other-home")
    try:
        first, _ = _drive(tmp_path, _env(home), flow="home-one")
        second, reused = _drive(tmp_path, _env(other), flow="home-two")
        assert not reused and second != first
        assert [p.pid for p in _servers_of(home)] == [first]
        assert [p.pid for p in _servers_of(other)] == [second]
        urls = {server_status(h)["url"] for h in (home, other)}
        assert len(urls) == 2
        # Each run is recorded in its own home's database only.
        for h in (home, other):
            stop_server(h)
        for h, mine, theirs in ((home, "home-one", "home-two"), (other, "home-two", "home-one")):
            with sqlite3.connect(h / "prefect.db") as db:
                flows = {name for (name,) in db.execute("select name from flow")}
            assert mine in flows and theirs not in flows
    finally:
        for proc in _servers_of(other):
            proc.kill()


def test_a_server_of_other_settings_is_replaced_and_every_state_and_log_is_recorded(home, tmp_path):
    first, _ = _drive(tmp_path, _env(home), nodes=40, flow="replaced")
    # Other Prefect settings: the lingering server is stopped and another one started.
    second, reused = _drive(
        tmp_path, _env(home, PREFECT_LOGGING_TO_API_BATCH_INTERVAL="1.5"), nodes=40, flow="replaced"
    )
    assert not reused and second != first
    # The first one stops once it has recorded the states of its run.
    assert eventually(lambda: _gone(first))
    assert [p.pid for p in _servers_of(home)] == [second]
    # Neither driver waited for the bookkeeping; `api stop` waits until it is done.
    assert stop_server(home).pid == second
    assert _gone(second)
    with sqlite3.connect(home / "prefect.db") as db:
        states = db.execute(
            "select task_run.state_type from task_run join flow_run on "
            "task_run.flow_run_id = flow_run.id join flow on flow_run.flow_id = flow.id "
            "where flow.name = 'replaced'"
        ).fetchall()
        # The log lines too: the drivers left their last ones to the server as files.
        finished = db.execute(
            "select count(distinct log.task_run_id) from log join flow_run on "
            "log.flow_run_id = flow_run.id join flow on flow_run.flow_id = flow.id "
            "where flow.name = 'replaced' and log.message like 'Finished in state Completed%'"
        ).fetchone()
    assert states == [("COMPLETED",)] * 80
    assert finished == (80,)
    assert not list((home / "kedro-prefect-api").glob("*/logs-*.json"))


def test_runs_starting_at_once_share_one_server(home, tmp_path):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DRIVER, "3", f"at-once-{i}"],
            cwd=tmp_path,
            env=_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    pids = {out.split("SERVER")[1].split()[0] for out, _ in outputs}
    assert len(pids) == 1
    assert [str(p.pid) for p in _servers_of(home)] == list(pids)


def test_the_server_stops_after_its_idle_time_and_when_its_home_goes_away(home, tmp_path):
    pid, _ = _drive(tmp_path, _env(home, idle="1"))
    assert eventually(lambda: _gone(pid), timeout=60), "it stopped after 1 s idle"
    assert not (home / "kedro-prefect-api" / "server.json").exists()

    pid, _ = _drive(tmp_path, _env(home))
    assert not _gone(pid)
    shutil.rmtree(home)
    assert eventually(lambda: _gone(pid), timeout=60), "it stopped when PREFECT_HOME went away"


def test_no_orphan_when_the_driver_or_the_server_is_killed(home, tmp_path):
    # A driver killed mid-run (here: after its pipeline, while it sleeps).
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, "3", "killed", "then-sleep"],
        cwd=tmp_path,
        env=_env(home, idle="2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        while line and not line.startswith("SERVER"):
            line = proc.stdout.readline()
        server = int(line.split()[1])
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
    assert eventually(lambda: _gone(server), timeout=60), "the server outlived its killed driver"

    # A killed server: the next run starts another one and runs.
    first, _ = _drive(tmp_path, _env(home))
    os.kill(first, signal.SIGKILL)
    assert eventually(lambda: _gone(first))
    second, reused = _drive(tmp_path, _env(home))
    assert second != first and not reused


def test_a_bad_idle_time_is_one_clear_error_before_anything_runs(monkeypatch):
    from kedro_prefect import PrefectRunner
    from kedro_prefect.errors import PrefectRunnerConfigError

    monkeypatch.setenv(IDLE_ENV, "ten minutes")
    with pytest.raises(PrefectRunnerConfigError, match=IDLE_ENV):
        PrefectRunner()


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """The nodes of ``tree`` outside ``if TYPE_CHECKING:`` blocks."""
    nodes: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            todo += node.orelse
            continue
        todo += list(ast.iter_child_nodes(node))
    return nodes


def _server_import_closure() -> set[Path]:
    """The kedro_prefect modules the server process can import (function-level imports too),
    from its app factory on."""
    package = Path(kedro_prefect.__file__).parent

    def path_of(module: str) -> Path | None:
        base = package.parent / Path(*module.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.exists():
                return candidate
        return None

    todo = ["kedro_prefect.local_api.server_app"]
    seen: set[Path] = set()
    while todo:
        module = todo.pop()
        parts = module.split(".")
        # Importing a module runs its packages' __init__ first.
        for depth in range(1, len(parts) + 1):
            path = path_of(".".join(parts[:depth]))
            if path is None or path in seen:
                continue
            seen.add(path)
            for node in _runtime_nodes(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                else:
                    continue
                todo += [name for name in names if name.startswith("kedro_prefect")]
    return seen


def test_the_fingerprint_covers_every_module_the_server_process_runs():
    closure = _server_import_closure()
    assert Path(kedro_prefect.__file__).parent / "_upstream" / "prefect_server.py" in closure
    assert closure - set(server_code_files()) == set()


def test_a_server_running_older_code_is_not_reused(home, tmp_path):
    """An edited patch of the server (say, after `git pull` in an editable install) is served by
    a new server, not by the lingering one that runs the old code."""
    code = tmp_path / "code"
    shutil.copytree(Path(kedro_prefect.__file__).parent, code / "kedro_prefect")
    env = _env(home, PYTHONPATH=str(code))
    where = subprocess.run(
        [sys.executable, "-c", "import kedro_prefect; print(kedro_prefect.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(code))
    first, _ = _drive(tmp_path, env)
    assert _drive(tmp_path, env) == (first, True)
    patch = code / "kedro_prefect" / "_upstream" / "prefect_server.py"
    patch.write_text(patch.read_text() + "\n# edited\n")
    second, reused = _drive(tmp_path, env)
    assert not reused and second != first
    assert eventually(lambda: _gone(first)), "the server of the old code stops once idle"


def _hibernating(home: Path, pid: int) -> bool:
    status = server_status(home)
    if not status or status["pid"] != pid or not status["hibernating"]:
        return False
    return psutil.Process(pid).memory_info().rss < 60 * 2**20


def test_an_idle_server_hibernates_small_and_the_next_run_wakes_it(home, tmp_path, example_project):
    env = _env(home, **{HIBERNATE_ENV: "2"})
    first, _ = _drive(tmp_path, env, flow="before-hibernation")
    url = server_status(home)["url"]
    # Idle for 2 s: the same process (same PID, same port) shrinks to a few MB.
    assert eventually(lambda: _hibernating(home, first), timeout=90)
    status = run_kedro(example_project, "prefect", "api", "status", env=env)
    assert status.returncode == 0, status.stderr
    assert "hibernating" in status.stdout and f"PID:     {first}" in status.stdout

    # The next run wakes it: same server, and its task runs are recorded.
    second, reused = _drive(tmp_path, env, nodes=5, flow="after-hibernation")
    assert (second, reused) == (first, True)
    assert server_status(home)["url"] == url
    assert server_status(home)["services"] == ["TaskRunRecorder", "EventPersister"]
    assert stop_server(home).pid == first
    with sqlite3.connect(home / "prefect.db") as db:
        states = db.execute(
            "select task_run.state_type from task_run join flow_run on "
            "task_run.flow_run_id = flow_run.id join flow on flow_run.flow_id = flow.id "
            "where flow.name = 'after-hibernation'"
        ).fetchall()
    assert states == [("COMPLETED",)] * 5


def test_a_hibernating_server_stops_on_api_stop_and_at_its_idle_deadline(
    home, tmp_path, example_project
):
    env = _env(home, **{HIBERNATE_ENV: "1"})
    pid, _ = _drive(tmp_path, env)
    assert eventually(lambda: _hibernating(home, pid), timeout=90)
    stop = run_kedro(example_project, "prefect", "api", "stop", env=env)
    assert stop.returncode == 0, stop.stderr
    assert f"PID {pid}" in stop.stdout
    assert _gone(pid)
    assert not (home / "kedro-prefect-api" / "server.json").exists()
    assert not (home / "kedro-prefect-api" / str(pid)).exists()

    # Idle time 15 s, hibernating after 1 s: the sleeper ends it at the deadline and tidies.
    env = _env(home, idle="15", **{HIBERNATE_ENV: "1"})
    pid, _ = _drive(tmp_path, env)
    assert eventually(lambda: _hibernating(home, pid), timeout=90)
    assert eventually(lambda: _gone(pid), timeout=90), "it stopped at its idle deadline"
    assert not (home / "kedro-prefect-api" / "server.json").exists()
    assert not (home / "kedro-prefect-api" / str(pid)).exists()


def test_a_bad_hibernate_time_is_one_clear_error_before_anything_runs(monkeypatch):
    from kedro_prefect import PrefectRunner
    from kedro_prefect.errors import PrefectRunnerConfigError

    monkeypatch.setenv(HIBERNATE_ENV, "-1")
    with pytest.raises(PrefectRunnerConfigError, match=HIBERNATE_ENV):
        PrefectRunner()
    monkeypatch.setenv(HIBERNATE_ENV, "0")
    assert hibernate_seconds() == 0
