"""Log lines handed to the ephemeral API's server as files: written privately, stored in order."""

from __future__ import annotations

import json
import logging
import os
import stat
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from kedro_prefect.local_api import log_spool


def _log(message: str) -> bytes:
    timestamp = datetime.now(UTC).isoformat()
    return json.dumps(
        {"name": "kp", "level": 52, "message": message, "timestamp": timestamp}
    ).encode()


def test_batches_for_the_handed_api_become_private_files_others_are_refused(tmp_path: Path):
    url = f"http://127.0.0.1:9/api-{uuid.uuid4()}"
    log_spool.hand_logs_to_server(url + "/", tmp_path / "server")
    try:
        assert log_spool.write_batch(url, [_log("one"), _log("two")])
        assert not log_spool.write_batch("http://127.0.0.1:9/other", [_log("three")])
    finally:
        log_spool.stop_handing_logs(url)
    assert not log_spool.write_batch(url, [_log("four")])  # no longer handed
    (path,) = log_spool.spooled(tmp_path / "server")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [log["message"] for log in json.loads(path.read_bytes())] == ["one", "two"]


def test_the_server_stores_the_files_in_order_and_drops_what_it_refuses(tmp_path: Path, caplog):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterLevel
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from kedro_prefect.local_api import EPHEMERAL_API

    url = EPHEMERAL_API.wait()
    marker = f"kp-spool-{uuid.uuid4()}"
    log_spool.hand_logs_to_server(url, tmp_path)
    try:
        log_spool.write_batch(url, [_log(f"{marker} 1"), _log(f"{marker} 2")])
        log_spool.write_batch(url, [b'{"not": "a log"}'])  # refused by the API (422)
        log_spool.write_batch(url, [_log(f"{marker} 3")])
    finally:
        log_spool.stop_handing_logs(url)
    assert len(log_spool.spooled(tmp_path)) == 3
    with caplog.at_level(logging.WARNING, logger=log_spool.__name__):
        log_spool.deliver_spooled(tmp_path, url)
    assert log_spool.spooled(tmp_path) == []
    assert "refused by the API (422)" in caplog.text
    with temporary_settings({PREFECT_API_URL: url}):
        with get_client(sync_client=True) as client:
            stored = client.read_logs(LogFilter(level=LogFilterLevel(ge_=52)))
    mine = sorted((log.timestamp, log.message) for log in stored if marker in log.message)
    assert [message for _, message in mine] == [f"{marker} {i}" for i in (1, 2, 3)]


def test_a_file_the_server_cannot_store_in_time_is_dropped(tmp_path: Path, caplog):
    url = f"http://127.0.0.1:9/api-{uuid.uuid4()}"  # nothing listens there
    log_spool.hand_logs_to_server(url, tmp_path)
    try:
        log_spool.write_batch(url, [_log("lost")])
    finally:
        log_spool.stop_handing_logs(url)
    (path,) = log_spool.spooled(tmp_path)
    stale = time.time() - log_spool.MAX_AGE_SECONDS - 1
    os.utime(path, (stale, stale))
    with caplog.at_level(logging.WARNING, logger=log_spool.__name__):
        log_spool.deliver_spooled(tmp_path, url)  # not even tried: the server stops being busy
    assert log_spool.spooled(tmp_path) == []
    assert "could not be stored in time" in caplog.text


def _line(message: str, size: int = 100) -> dict:
    return {
        "name": "kp",
        "level": 20,
        "message": message,
        "timestamp": "2026-01-01T00:00:00Z",
        "flow_run_id": None,
        "task_run_id": None,
        "__payload_size__": size,
    }


def test_node_lines_for_a_handed_api_are_written_in_batches_under_the_size_limit(
    tmp_path: Path, monkeypatch
):
    """Node lines skip Prefect's log worker: they wait in the process and are written as files,
    in order, each file under PREFECT_LOGGING_TO_API_BATCH_SIZE, without Prefect's
    ``__payload_size__``; lines for an API whose batches are not handed are refused."""
    from prefect.settings import (
        PREFECT_LOGGING_TO_API_BATCH_SIZE,
        PREFECT_LOGGING_TO_API_MAX_LOG_SIZE,
        temporary_settings,
    )

    url = f"http://127.0.0.1:9/api-{uuid.uuid4()}"
    assert not log_spool.spool_node_line(url, _line("not handed"))
    log_spool.hand_logs_to_server(url, tmp_path)
    try:
        with temporary_settings(
            {PREFECT_LOGGING_TO_API_BATCH_SIZE: 250, PREFECT_LOGGING_TO_API_MAX_LOG_SIZE: 200}
        ):
            for k in range(5):
                assert log_spool.spool_node_line(url + "/", _line(f"line {k}"))
            log_spool.flush_node_lines()
    finally:
        log_spool.stop_handing_logs(url)
    batches = [json.loads(path.read_bytes()) for path in log_spool.spooled(tmp_path)]
    assert [[log["message"] for log in batch] for batch in batches] == [
        ["line 0", "line 1"],
        ["line 2", "line 3"],
        ["line 4"],
    ]
    assert all("__payload_size__" not in log for batch in batches for log in batch)


def test_an_api_call_handed_over_as_a_file_is_made_by_the_server_in_order(tmp_path: Path):
    """The run's last artifact updates go as files: the server makes the call after the log
    lines written before it; the artifact then has the new data."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from kedro_prefect.local_api import EPHEMERAL_API

    url = EPHEMERAL_API.wait()
    with temporary_settings({PREFECT_API_URL: url}):
        with get_client(sync_client=True) as client:
            artifact = client.create_artifact(
                ArtifactCreate(key=f"kp-call-{uuid.uuid4().hex[:8]}", type="markdown", data="old")
            )
    log_spool.hand_logs_to_server(url, tmp_path)
    try:
        assert log_spool.spool_node_line(url, _line("before the call"))
        assert log_spool.spool_call(url, "PATCH", f"/artifacts/{artifact.id}", {"data": "new"})
    finally:
        log_spool.stop_handing_logs(url)
    assert not log_spool.spool_call(url, "PATCH", f"/artifacts/{artifact.id}", {"data": "x"})
    names = [path.name.split("-")[0] for path in log_spool.spooled(tmp_path)]
    assert names == ["logs", "call"]
    log_spool.deliver_spooled(tmp_path, url)
    assert log_spool.spooled(tmp_path) == []
    with temporary_settings({PREFECT_API_URL: url}):
        with get_client(sync_client=True) as client:
            (stored,) = [a for a in client.read_artifacts(limit=200) if a.id == artifact.id]
    assert stored.data == "new"


def test_a_file_holds_a_bounded_number_of_node_lines(tmp_path: Path):
    """The server validates a request's lines in its event loop: thousands of lines in one file
    held up the run's own calls, so node lines go in files of at most MAX_LINES_PER_FILE."""
    url = f"http://127.0.0.1:9/api-{uuid.uuid4()}"
    log_spool.hand_logs_to_server(url, tmp_path)
    try:
        for k in range(2 * log_spool.MAX_LINES_PER_FILE + 1):
            log_spool.spool_node_line(url, _line(f"line {k}", size=10))
        log_spool.flush_node_lines()
    finally:
        log_spool.stop_handing_logs(url)
    sizes = [len(json.loads(path.read_bytes())) for path in log_spool.spooled(tmp_path)]
    assert sizes == [log_spool.MAX_LINES_PER_FILE, log_spool.MAX_LINES_PER_FILE, 1]
