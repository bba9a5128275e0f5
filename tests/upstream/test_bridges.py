"""The version bridges of ``kedro_prefect._upstream``: each decides by the release boundary its
docstring names, and the installed upstream accepts what it returns."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import kedro_prefect._upstream as upstream
from kedro_prefect._upstream import prefect as prefect_bridge
from kedro_prefect._upstream import prefect_server, prefect_tasks


@pytest.fixture
def versions(monkeypatch):
    """Pretend releases: distribution -> version tuple (others as installed)."""
    pretend: dict[str, tuple[int, ...]] = {}
    real = upstream.installed_version

    def installed_version(distribution: str) -> tuple[int, ...]:
        return pretend.get(distribution) or real(distribution)

    monkeypatch.setattr(upstream, "installed_version", installed_version)
    return pretend


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3.4.25", (3, 4, 25)),
        ("0.136.3", (0, 136, 3)),
        ("3.7.5.dev1", (3, 7, 5)),
        ("3.9.0rc1", (3, 9, 0)),
    ],
)
def test_installed_version_reads_the_release(monkeypatch, text, expected):
    monkeypatch.setattr(upstream, "version", lambda distribution: text)
    upstream.installed_version.cache_clear()
    try:
        assert upstream.installed_version("anything") == expected
    finally:
        upstream.installed_version.cache_clear()


def test_result_storage_is_a_path_from_prefect_3_6_5_and_default_before(versions):
    versions["prefect"] = (3, 6, 5)
    assert isinstance(prefect_bridge.local_result_storage()["result_storage"], Path)
    versions["prefect"] = (3, 6, 4)
    assert prefect_bridge.local_result_storage() == {}


def test_the_installed_prefect_accepts_the_result_storage():
    from prefect import flow

    flow(lambda: None, name="kp-bridge", **prefect_bridge.local_result_storage())  # no raise


def test_run_settings_use_the_api_url_and_drop_the_heartbeat_where_prefect_has_one():
    from prefect.settings import get_current_settings

    settings = prefect_bridge.without_flow_heartbeat(
        get_current_settings(), "http://127.0.0.1:1/api"
    )
    assert settings.api.url == "http://127.0.0.1:1/api"
    has_field = "heartbeat_frequency" in type(settings.flows).model_fields
    assert has_field == upstream.version_at_least("prefect", 3, 6, 13)
    if has_field:
        assert settings.flows.heartbeat_frequency is None


def test_fastapi_copies_routes_before_0_137(versions, monkeypatch):
    from prefect.server.api import server

    monkeypatch.delattr(server, "_FASTAPI_COPIES_ROUTES_ON_INCLUDE", raising=False)
    versions["fastapi"] = (0, 136, 3)
    assert prefect_server.fastapi_copies_routes_on_include()
    versions["fastapi"] = (0, 137, 0)
    assert not prefect_server.fastapi_copies_routes_on_include()


def test_the_newest_migration_read_without_alembic_is_alembics_head(tmp_path):
    """A lingering server skips Prefect's upgrade only for a database at this revision: were
    it not Alembic's own head, a database needing a migration would be served unmigrated."""
    from alembic.script import ScriptDirectory
    from prefect.server.database import _migrations

    folder = Path(_migrations.__path__[0])
    scripts = ScriptDirectory(str(folder), version_locations=[str(folder / "versions/sqlite")])
    head = prefect_server.sqlite_head_revision()
    assert scripts.get_heads() == [head]

    # The suite's database (migrated by Prefect at the session's start) is at that head.
    home = Path(__import__("os").environ["PREFECT_HOME"])
    migrated = f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    if (home / "prefect.db").exists():
        assert prefect_server.sqlite_database_revisions(migrated) == {head}
    # A database that does not exist yet, or is not SQLite, goes through Prefect's upgrade.
    missing = f"sqlite+aiosqlite:///{tmp_path / 'none.db'}"
    assert prefect_server.sqlite_database_revisions(missing) is None
    assert prefect_server.sqlite_database_revisions("postgresql+asyncpg://u@h/db") is None


def test_settings_key_takes_setting_keys_and_paths():
    from prefect.settings import PREFECT_API_URL

    serialized = {
        "profile": {"name": "x", "settings": {PREFECT_API_URL: "http://a"}, "source": Path("/p")},
        "settings": {"api": {"url": "http://a"}},
    }
    assert json.loads(prefect_tasks.settings_key(serialized)) == {
        "profile": {"name": "x", "settings": {"PREFECT_API_URL": "http://a"}, "source": "/p"},
        "settings": {"api": {"url": "http://a"}},
    }


def test_settings_key_of_this_prefects_serialized_context():
    from prefect.context import serialize_context

    text = prefect_tasks.settings_key(serialize_context()["settings_context"])
    assert json.loads(text)["settings"]


def test_upsert_global_concurrency_limit_creates_then_updates(versions):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from kedro_prefect.local_api import EPHEMERAL_API

    name = f"tag:kp-bridge-{time.time_ns()}"
    with temporary_settings({PREFECT_API_URL: EPHEMERAL_API.wait()}):
        with get_client(sync_client=True) as client:
            for pretend in ((3, 6, 11), (3, 6, 11), None):  # the bridge, then Prefect's own
                if pretend:
                    versions["prefect"] = pretend
                else:
                    versions.pop("prefect", None)
                limit = 3 if pretend is None else 2
                prefect_bridge.upsert_global_concurrency_limit(client, name, limit)
            assert client.read_global_concurrency_limit_by_name(name).limit == 3


def test_session_run_names_the_pipeline_with_the_keyword_the_installed_kedro_takes(versions):
    from kedro_prefect._upstream.kedro import session_run_pipeline

    versions["kedro"] = (1, 2, 0)
    assert session_run_pipeline("p") == {"pipeline_names": ["p"]}
    versions["kedro"] = (1, 1, 0)
    assert session_run_pipeline("p") == {"pipeline_name": "p"}


def test_run_params_of_every_kedro_name_the_run_and_its_pipelines():
    from kedro_prefect._upstream.kedro import run_params_run_id, run_pipeline_names

    assert run_params_run_id({"run_id": "a", "session_id": "a"}) == "a"  # Kedro >= 1.3
    assert run_params_run_id({"session_id": "b"}) == "b"  # Kedro 1.0-1.2
    assert run_pipeline_names({"pipeline_names": ["x", "y"]}) == ["x", "y"]  # Kedro >= 1.2
    assert run_pipeline_names({"pipeline_name": "x"}) == ["x"]  # Kedro 1.0-1.1
    assert run_pipeline_names({"pipeline_name": None}) is None


def test_api_log_batches_go_to_the_route_or_else_to_the_api():
    """The batches of Prefect's API log worker reach the route first; refused ones are POSTed."""
    import uuid
    from datetime import UTC, datetime

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterLevel
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from kedro_prefect.local_api import EPHEMERAL_API

    taken: list[tuple[str, list]] = []
    marker = f"kp-route-{uuid.uuid4()}"

    def route(url: str, items: list) -> bool:
        batch = [json.loads(bytes(i)) if not isinstance(i, dict) else i for i in items]
        mine = [log for log in batch if log["message"].startswith(marker)]
        taken.append((url, mine))
        return any(log["message"] == f"{marker} taken" for log in mine)

    def send(message: str) -> None:
        timestamp = datetime.now(UTC).isoformat()
        log = {"name": "kp", "level": 51, "message": message, "timestamp": timestamp}
        APILogWorker.instance().send(log)
        APILogWorker.drain_all(timeout=30)

    prefect_bridge.route_api_log_batches(route)
    try:
        with temporary_settings({PREFECT_API_URL: EPHEMERAL_API.wait()}):
            send(f"{marker} taken")
            send(f"{marker} posted")
            with get_client(sync_client=True) as client:
                stored = client.read_logs(LogFilter(level=LogFilterLevel(ge_=51)))
    finally:
        prefect_bridge.route_api_log_batches(lambda url, items: False)
    assert [url.rstrip("/") for url, mine in taken if mine] == [EPHEMERAL_API.url] * 2
    assert [log.message for log in stored if log.message.startswith(marker)] == [f"{marker} posted"]


def test_a_process_worker_sets_up_without_the_imports_a_pure_python_node_does_not_need():
    """In a fresh interpreter, as in a worker process of ``task_runner=process``: the run's
    result storage block is found without importing Prefect's collections (prefect-dask, hence
    Dask), an unknown block slug still fails as in Prefect, and a MemoryDataset's copy mode is
    Kedro's without importing pandas."""
    import subprocess
    import sys

    script = """
import sys
from kedro_prefect._upstream.kedro_memory import infer_copy_mode
from kedro_prefect._upstream.prefect_pool import blocks_from_registry_first
from prefect.blocks.core import Block
from prefect.filesystems import LocalFileSystem, WritableFileSystem
blocks_from_registry_first()
blocks_from_registry_first()
storage = WritableFileSystem(block_type_slug="local-file-system", basepath="/tmp")
assert isinstance(storage, LocalFileSystem), storage
assert infer_copy_mode({"a": [1]}) == "deepcopy"
assert infer_copy_mode(type("DataFrame", (), {})()) == "assign"
print(sorted({"prefect_dask", "distributed", "pandas"} & set(sys.modules)))
try:
    Block.get_block_class_from_key("no-such-block-type")
except Exception as exc:  # Prefect's own error for it (its type varies by release)
    assert "no-such-block-type" in str(exc), exc
else:
    raise AssertionError("an unknown slug was found")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"  # imported before the unknown slug


def test_node_log_handler_sends_what_prefects_handler_sends(prefect_server):
    """Inside a task run and a flow run: the same payload as ``APILogHandler.prepare`` (run
    ids, timestamp, formatted message, size), and an oversized line truncated as Prefect does."""
    import logging

    from prefect import flow, task
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_LOGGING_TO_API_MAX_LOG_SIZE,
        temporary_settings,
    )

    from kedro_prefect._upstream.prefect_logs import node_log_handler

    def payloads() -> list[tuple[dict, dict]]:
        prefects, ours = APILogHandler(), node_log_handler()
        records = [
            logging.LogRecord(
                "kedro.io", logging.INFO, "f.py", 1, "Loading %s (%s)", ("a", 1), None
            ),
            logging.LogRecord("demo", logging.WARNING, "f.py", 2, "x" * 2_000, None, None),
        ]
        return [(prefects.prepare(record), ours.prepare(record)) for record in records]

    @task
    def in_task() -> list[tuple[dict, dict]]:
        return payloads()

    @flow
    def in_flow() -> list[tuple[dict, dict]]:
        return in_task() + payloads()

    with temporary_settings(
        {PREFECT_API_URL: prefect_server.api_url, PREFECT_LOGGING_TO_API_MAX_LOG_SIZE: 1_000}
    ):
        pairs = in_flow()
    assert len(pairs) == 4
    for prefects, ours in pairs:
        assert ours == prefects
    assert pairs[0][0]["task_run_id"] and pairs[0][0]["flow_run_id"]  # in the task run
    assert pairs[2][0]["task_run_id"] is None and pairs[2][0]["flow_run_id"]  # in the flow run
    assert pairs[1][0]["message"].endswith("... [truncated]")


HIBERNATE_SCRIPT = """
import os, socket, sys, threading, time
import uvicorn
from kedro_prefect._upstream import prefect_server

prefect_server.slow_tick_main_loop()
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(16)
port, fd = sock.getsockname()[1], sock.fileno()

async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

server = uvicorn.Server(uvicorn.Config(app, fd=fd, lifespan="off", log_level="error"))

def ask():
    while not server.started:
        time.sleep(0.05)
    assert prefect_server.request_exit()

threading.Thread(target=ask, daemon=True).start()
server.run()
# Shut down without a signal (a caught one would be re-raised here), and the socket passed
# with --fd still listens: a client's connection waits in its backlog for the next server.
client = socket.create_connection(("127.0.0.1", port), timeout=5)
sock.settimeout(5)
conn, _ = sock.accept()
print("STILL LISTENING", flush=True)
"""


def test_uvicorn_shuts_down_on_request_and_leaves_the_passed_socket_listening():
    """Hibernation: uvicorn's main loop (patched) ends without a signal, and uvicorn's ``--fd``
    serving closes only its own copy of the listening socket."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", HIBERNATE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "STILL LISTENING" in result.stdout
