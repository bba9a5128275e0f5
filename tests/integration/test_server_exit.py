"""Runs against a Prefect server (``PREFECT_API_URL``) exit without waiting for the server to
store their last log lines: a courier process delivers them, and nothing is lost.

Each test runs a driver as a separate process against ``prefect server start`` (the session's
server), with a ``PREFECT_HOME`` of its own, and reads what the server stored once it has exited.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil

from kedro_prefect.api.log_courier import HANDOFF_ENV, outbox
from tests.helpers import eventually

DRIVER = textwrap.dedent(
    """
    import sys
    from kedro.io import DataCatalog
    from kedro.pipeline import Pipeline, node
    from kedro_prefect import PrefectRunner

    def one(x=None):
        return 1

    n = int(sys.argv[1])
    nodes = [node(one, None, "d0", name="n0")]
    nodes += [node(one, f"d{i - 1}", f"d{i}", name=f"n{i}") for i in range(1, n)]
    PrefectRunner(flow_name=sys.argv[2]).run(Pipeline(nodes), DataCatalog())
    """
)


def _drive(server, home: Path, nodes: int, flow: str, **env: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, str(nodes), flow],
        cwd=home,
        env={**os.environ, **server.env, "PREFECT_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _stored(server, flow: str) -> tuple[list[tuple[str, int]], int]:
    """(state type, count) of the flow's task runs, and its task runs' "Finished" log lines."""
    with sqlite3.connect(server.home / "prefect.db", timeout=30) as db:
        states = db.execute(
            "select task_run.state_type, count(*) from task_run join flow_run on "
            "task_run.flow_run_id = flow_run.id join flow on flow_run.flow_id = flow.id "
            "where flow.name = ? group by task_run.state_type",
            (flow,),
        ).fetchall()
        finished = db.execute(
            "select count(distinct log.task_run_id) from log join flow_run on "
            "log.flow_run_id = flow_run.id join flow on flow_run.flow_id = flow.id "
            "where flow.name = ? and log.message like 'Finished in state Completed%'",
            (flow,),
        ).fetchone()[0]
    return states, finished


def _couriers(box: Path) -> list[psutil.Process]:
    """The courier processes of the outbox ``box`` (others follow other processes: the test
    session's own in-process runs have theirs, for as long as the session lives)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "kedro_prefect.api.log_courier" in cmdline and str(box) in cmdline:
            found.append(proc)
    return found


def test_after_exit_every_task_run_is_final_and_every_log_line_stored(prefect_server, tmp_path):
    flow = f"exit-{uuid.uuid4().hex[:8]}"
    _drive(prefect_server, tmp_path, 1000, flow)
    # The driver has exited; the server (and the courier) finish storing the run.
    assert eventually(
        lambda: _stored(prefect_server, flow) == ([("COMPLETED", 1000)], 1000), timeout=180
    ), _stored(prefect_server, flow)
    box = outbox(prefect_server.api_url, tmp_path)
    assert eventually(lambda: not list(box.glob("logs-*.json")))
    assert stat.S_IMODE(box.stat().st_mode) == 0o700
    assert stat.S_IMODE(box.parent.stat().st_mode) == 0o700
    assert eventually(lambda: not _couriers(box)), "the courier exits once it is done"


def test_log_lines_left_by_a_stopped_machine_are_sent_by_the_next_run(prefect_server, tmp_path):
    # What a process left when the machine stopped before its courier delivered it.
    box = outbox(prefect_server.api_url, tmp_path)
    box.mkdir(parents=True)
    marker = f"left over {uuid.uuid4().hex}"
    line = {
        "name": "kedro_prefect.test",
        "level": 20,
        "message": marker,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    (box / f"logs-1-{time.time_ns():020d}.json").write_text(json.dumps([line]))

    _drive(prefect_server, tmp_path, 2, f"next-{uuid.uuid4().hex[:8]}")

    def stored() -> bool:
        with sqlite3.connect(prefect_server.home / "prefect.db", timeout=30) as db:
            query = "select count(*) from log where message = ?"
            return db.execute(query, (marker,)).fetchone() == (1,)

    assert eventually(stored, timeout=120)
    assert eventually(lambda: not list(box.glob("logs-*.json")))
    assert eventually(lambda: not _couriers(box))


def test_with_the_hand_off_off_the_process_stores_its_log_lines_before_it_exits(
    prefect_server, tmp_path
):
    flow = f"wait-{uuid.uuid4().hex[:8]}"
    _drive(prefect_server, tmp_path, 3, flow, **{HANDOFF_ENV: "false"})
    # No courier: every line is on the server when the process has exited.
    assert _stored(prefect_server, flow)[1] == 3
    assert not outbox(prefect_server.api_url, tmp_path).exists()


LIVE_DRIVER = textwrap.dedent(
    """
    import sqlite3, sys, time
    from kedro.io import DataCatalog
    from kedro.pipeline import Pipeline, node
    from prefect import get_run_logger
    from kedro_prefect import PrefectRunner

    database, marker, flow = sys.argv[1:4]

    def shown_while_running(run):
        get_run_logger().info("%s %s", marker, run)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with sqlite3.connect(database, timeout=30) as db:
                query = "select count(*) from log where message = ?"
                if db.execute(query, (f"{marker} {run}",)).fetchone() == (1,):
                    return "live"
            time.sleep(0.5)
        return "not yet"

    for run in ("first", "second"):
        catalog = DataCatalog()
        pipeline = Pipeline([node(shown_while_running, "params:run", "seen", name="look")])
        catalog["params:run"] = run
        PrefectRunner(flow_name=flow).run(pipeline, catalog)
        print(run, catalog.load("seen"), flush=True)
    """
)


def test_a_second_run_in_the_same_process_sends_its_log_lines_while_it_runs(
    prefect_server, tmp_path
):
    """The first run's last lines go to the courier; a second run (a notebook, say) still
    shows its lines on the server as it runs."""
    marker = f"live {uuid.uuid4().hex}"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LIVE_DRIVER,
            str(prefect_server.home / "prefect.db"),
            marker,
            f"live-{uuid.uuid4().hex[:8]}",
        ],
        cwd=tmp_path,
        env={**os.environ, **prefect_server.env, "PREFECT_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = [line for line in result.stdout.splitlines() if line.startswith(("first", "second"))]
    assert seen == ["first live", "second live"]
    box = outbox(prefect_server.api_url, tmp_path)
    assert eventually(lambda: not _couriers(box)), "the courier exits once the run's are sent"
    assert not list(box.glob("*.json"))
