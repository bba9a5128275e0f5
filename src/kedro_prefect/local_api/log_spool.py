"""Log lines for the ephemeral API handed over as files: no run waits for the server to store them.

Prefect's API log worker sends a process's log lines in batches (every 2 s) and, at interpreter
exit, sends the last batch and waits for the answer. Right after a big run the ephemeral API is
still busy recording the run's task runs, so that last request took 2-3 s at 1,000 nodes (about
6 lines per node: Kedro's load/run/save lines, Prefect's state lines) -- after Kedro's last line.

For the ephemeral API of this package (a server process on this machine, of this user), a run
writes each batch to a file in the server's directory instead (``logs-<pid>-<ns>.json``, the
request body Prefect would send, readable by its owner only, written atomically), and the
server's watch thread (:mod:`.server_watch`) sends the files to its own API in
order and removes each once stored. Nothing is lost if the driver exits or is killed: the file
is there; the server counts as busy (does not stop) while files wait (a file its API keeps
refusing for :data:`MAX_AGE_SECONDS` is dropped). The flow run's logs show up
in the UI as quickly as before (the watch looks every 0.2 s). Runs against a server given by
``PREFECT_API_URL``, and Dask worker processes, send their logs as Prefect does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

logger = logging.getLogger(__name__)

GLOB = "logs-*.json"
#: An API call handed over the same way (``{"method", "path", "body"}``): a run's last artifacts.
CALL_GLOB = "call-*.json"

#: A file the server could not store for this long (its API kept failing) is dropped, so that a
#: broken server does not stay busy, and up, for ever.
MAX_AGE_SECONDS = 600.0

#: API URL -> the directory its server takes log files from.
_directories: dict[str, Path] = {}
_lock = threading.Lock()


def hand_logs_to_server(api_url: str, directory: Path) -> None:
    """From now on, this process's log batches for ``api_url`` go to files in ``directory``."""
    from kedro_prefect._upstream.prefect import route_api_log_batches

    with _lock:
        _directories[api_url.rstrip("/")] = Path(directory)
    route_api_log_batches(write_batch)


def stop_handing_logs(api_url: str) -> None:
    """Send the batches for ``api_url`` as Prefect does again (its server is gone)."""
    flush_node_lines()
    with _lock:
        _directories.pop(api_url.rstrip("/"), None)


def spool_node_line(api_url: str, line: dict[str, Any]) -> bool:
    """Take one node log line (``APILogHandler.prepare``'s dict) for ``api_url`` if its batches
    go to files; whether it was taken.

    Taken lines skip Prefect's log worker: its ``send`` costs a queue put, a debug call reading
    a setting and a hand-over to the worker's thread for every line (~0.1 ms; a 1,000-node run
    logs ~5,000 node lines). Here a line is appended to a list, and a thread of this module
    writes the lists as files every ``PREFECT_LOGGING_TO_API_BATCH_INTERVAL`` seconds (as often
    as the log worker sends), one JSON encoding a batch. :func:`flush_node_lines` writes what is
    waiting (the end of a run; at exit).
    """
    url = api_url.rstrip("/")
    if url not in _directories:
        return False
    _node_lines.append((url, line))
    if _flusher_pid[0] != os.getpid():  # none yet, or a forked child's copy of its parent's
        _start_flusher()
    return True


def flush_node_lines() -> None:
    """Write the node lines waiting in this process to their files now."""
    with _flush_lock:
        lines = _node_lines[:]
        del _node_lines[: len(lines)]
        by_url: dict[str, list[Any]] = {}
        for url, line in lines:
            by_url.setdefault(url, []).append(line)
        for url, items in by_url.items():
            for batch in _batches(items, _batch_bytes()):
                if not write_batch(url, batch):
                    _send_as_prefect_does(batch)


#: (API URL, line) in the order logged; appended from any thread (``list.append`` is atomic).
_node_lines: list[tuple[str, dict[str, Any]]] = []
_flush_lock = threading.Lock()
#: The process whose thread writes the lines (a forked child starts its own).
_flusher_pid: list[int | None] = [None]


def _start_flusher() -> None:
    import atexit

    with _flush_lock:
        if _flusher_pid[0] == os.getpid():
            return
        from prefect.settings import PREFECT_LOGGING_TO_API_BATCH_INTERVAL

        interval = float(PREFECT_LOGGING_TO_API_BATCH_INTERVAL.value() or 2.0)

        def flush_every_interval() -> None:
            while True:
                time.sleep(interval)
                flush_node_lines()

        threading.Thread(target=flush_every_interval, name="node-log-lines", daemon=True).start()
        _flusher_pid[0] = os.getpid()
        atexit.register(flush_node_lines)


def _batch_bytes() -> int:
    from prefect.settings import PREFECT_LOGGING_TO_API_BATCH_SIZE

    return int(PREFECT_LOGGING_TO_API_BATCH_SIZE.value())


#: Lines in one file at most: the server validates a request's lines in its event loop, so a
#: file of thousands of lines (a 2 s batch of a 1,000-node run) held up the run's own calls.
MAX_LINES_PER_FILE = 250


def _batches(items: list[dict[str, Any]], limit: int) -> list[list[dict[str, Any]]]:
    """``items`` cut into batches whose JSON stays under ``limit`` bytes, as Prefect cuts them
    (by each line's ``__payload_size__``), of at most :data:`MAX_LINES_PER_FILE` lines."""
    batches: list[list[dict[str, Any]]] = [[]]
    size = 1
    for item in items:
        item_size = int(item.get("__payload_size__", 0)) + 1
        full = len(batches[-1]) >= MAX_LINES_PER_FILE
        if batches[-1] and (full or size + item_size > limit):
            batches.append([])
            size = 1
        batches[-1].append(item)
        size += item_size
    return [batch for batch in batches if batch]


def _send_as_prefect_does(items: list[dict[str, Any]]) -> None:
    """The server's directory is gone: give the lines to Prefect's log worker."""
    from prefect.logging.handlers import APILogWorker

    worker = APILogWorker.instance()
    for item in items:
        worker.send(item)


def write_batch(api_url: str, items: list[Any]) -> bool:
    """Write one batch of log lines (Prefect's JSON bytes, or dicts) to a file."""
    body = b"[" + b",".join(_as_json(item) for item in items) + b"]"
    return _write(api_url, "logs", body)


def spool_call(api_url: str, method: str, path: str, body: dict[str, Any]) -> bool:
    """Hand one API call (``method`` on ``path`` under ``api_url``, with a JSON ``body``) over as
    a file, as the log lines, if the batches for ``api_url`` go to files; whether it did.

    For what the run needs no answer to (the artifacts at its end): against a local API still
    busy recording the run, each call waited ~0.5-1 s for its answer. Node lines logged before
    it are written first; files are delivered in the order written.
    """
    if api_url.rstrip("/") not in _directories:
        return False
    flush_node_lines()
    return _write(
        api_url, "call", orjson.dumps({"method": method, "path": path, "body": body}, default=str)
    )


def _write(api_url: str, kind: str, body: bytes) -> bool:
    with _lock:
        directory = _directories.get(api_url.rstrip("/"))
    if directory is None:
        return False
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{kind}-{os.getpid()}-{time.time_ns():020d}.json"
        tmp = directory / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(body)
        os.replace(tmp, directory / name)
    except OSError:
        return False  # the server's directory is gone: send it the usual way
    return True


def _as_json(item: Any) -> bytes:
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    body = {key: value for key, value in dict(item).items() if key != "__payload_size__"}
    return orjson.dumps(body, default=str)


def spooled(directory: Path) -> list[Path]:
    """The files (log lines, calls) waiting in ``directory``, oldest first."""
    with contextlib.suppress(OSError):
        files = [*Path(directory).glob(GLOB), *Path(directory).glob(CALL_GLOB)]
        return sorted(files, key=lambda path: path.name.rsplit("-", 1)[1])
    return []


def spooled_request(path: Path, body: bytes) -> tuple[str, str, dict[str, Any]]:
    """The HTTP method, API path and JSON keyword arguments of the file at ``path``."""
    import json

    if path.name.startswith("call-"):
        call = json.loads(body)
        return call["method"], call["path"], {"json": call["body"]}
    return "POST", "/logs/", {"content": body, "headers": {"Content-Type": "application/json"}}


def deliver_spooled(directory: Path, api_url: str) -> None:
    """Send the waiting files to the API at ``api_url`` (the server's own); remove each."""
    files = spooled(directory)
    if not files:
        return
    import httpx

    with httpx.Client(timeout=120) as client:
        for path in files:
            try:
                body = path.read_bytes()
                too_old = time.time() - path.stat().st_mtime > MAX_AGE_SECONDS
            except OSError:
                continue
            if too_old:
                logger.warning("%s could not be stored in time; dropped", _what(path))
                path.unlink(missing_ok=True)
                continue
            try:
                method, route, request = spooled_request(path, body)
            except (ValueError, KeyError, TypeError):
                logger.warning("%s is not readable; dropped", _what(path))
                path.unlink(missing_ok=True)
                continue
            response = client.request(method, f"{api_url}{route}", **request)
            if response.status_code >= 500:
                return  # busy (SQLite locked, say): the next look sends it again
            if response.status_code >= 400:
                logger.warning(
                    "%s was refused by the API (%s); dropped",
                    _what(path),
                    response.status_code,
                )
            with contextlib.suppress(OSError):
                path.unlink()


def _what(path: Path) -> str:
    """How a spooled file is named in a warning."""
    kind = "API call" if path.name.startswith("call-") else "Log lines"
    return f"{kind} of {path.name}"
