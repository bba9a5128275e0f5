"""When the ephemeral API server stops itself: runs gone, their states recorded, idle long enough.

Runs in a thread of the server process (:func:`.server_app.create_app`). The
server is *busy* while the process that launched it lives, while a run that reuses it lives
(``client-<pid>`` files, :mod:`.lingering`), and while task run states that a
finished run sent are not recorded yet (``pending-*.json``: a run exits as soon as its pipeline
is done, without waiting for the server's bookkeeping; the server checks its own API until it
shows every final state, or the file's deadline passes), and while log lines wait in
``logs-*.json`` files (:mod:`.log_spool`; this thread sends them to the API).
Once it is not busy for the idle time (``KEDRO_PREFECT_API_IDLE_SECONDS``; ``0``: at once), or
when its ``PREFECT_HOME`` is gone, it stops as on Ctrl+C. A killed launcher or run counts as
gone: no server outlives its use. Idle for ``KEDRO_PREFECT_API_HIBERNATE_SECONDS`` meanwhile,
it hibernates (:mod:`.hibernate`): the sleeper takes over the idle deadline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from kedro_prefect.local_api.log_spool import deliver_spooled
from kedro_prefect.local_api.state import StateDir

logger = logging.getLogger(__name__)

#: How often the thread looks while the server is idle (and while busy: ``interval``, 0.2 s).
IDLE_INTERVAL = 1.0


def start_watch(
    home: Path,
    parent_pid: int | None,
    idle_seconds: float,
    port: int | None,
    interval: float = 0.2,
    hibernate_after: float = 0.0,
) -> threading.Thread:
    """Start the thread that stops this server once it is no longer used (see the module);
    with ``hibernate_after`` > 0 it hibernates after that idle time (:mod:`.hibernate`)."""
    thread = threading.Thread(
        target=_watch,
        args=(Path(home), parent_pid, idle_seconds, port, interval, hibernate_after),
        name="kedro-prefect-server-watch",
        daemon=True,
    )
    thread.start()
    return thread


def _watch(
    home: Path,
    parent_pid: int | None,
    idle_seconds: float,
    port: int | None,
    interval: float,
    hibernate_after: float,
) -> None:
    state = StateDir(home)
    me = os.getpid()
    idle_since: float | None = None
    while True:
        time.sleep(interval if idle_since is None else IDLE_INTERVAL)
        if not home.is_dir():
            break
        busy = bool(parent_pid and os.getppid() == parent_pid) or bool(state.live_clients(me))
        pending = state.pending(me)
        if port is not None:
            with contextlib.suppress(Exception):  # the API may be starting or stopping
                deliver_spooled(state.server_dir(me), f"http://127.0.0.1:{port}/api")
            if pending:
                with contextlib.suppress(Exception):
                    _check_recorded(pending, f"http://127.0.0.1:{port}/api")
        busy = busy or bool(state.unfinished(me))
        now = time.time()
        if busy:
            if idle_since is not None:
                idle_since = None
                state.set_idle_since(me, None)
            continue
        if idle_since is None:
            idle_since = now
            state.set_idle_since(me, now)
            _release_memory()
        # A server no run can find (lingering off, or not registered) has no reason to wait.
        linger = idle_seconds if state.registered_pid() == me else 0.0
        if now - idle_since < linger:
            if (
                hibernate_after
                and hibernate_after <= now - idle_since
                and _hibernate(state, me, idle_since + linger)
            ):
                return
            continue
        # Stop, unless a run is just now finding this server (it holds the start lock).
        fd = state.try_lock() if linger else None
        if linger and fd is None:
            continue
        try:
            if state.live_clients(me):
                continue
            state.remove_server(me)
        finally:
            state.unlock(fd)
        break
    os.kill(me, signal.SIGTERM)


def _hibernate(state: StateDir, me: int, deadline: float) -> bool:
    """Shut the server down and become the sleeper (:mod:`.hibernate`), unless a run is just
    now finding or using it; the start lock stays held until the sleeper runs."""
    from kedro_prefect.local_api.hibernate import request

    fd = state.try_lock()
    if fd is None:
        return False
    unused = not state.live_clients(me) and not state.unfinished(me)
    if unused and request(state.path, deadline, fd):
        logger.debug("Hibernating until %s", time.ctime(deadline))
        return True
    state.unlock(fd)
    return False


def _release_memory() -> None:
    """Give the memory the last runs' bookkeeping freed back to the system (glibc only)."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _check_recorded(pending: list[Path], api_url: str) -> None:
    """Remove the pending files whose task run states the API shows (or whose deadline passed)."""
    from uuid import UUID

    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import StateType

    from kedro_prefect.local_api.records import read_recorded_task_runs

    with SyncPrefectClient(api_url) as client:
        for path in pending:
            try:
                body: dict[str, Any] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # being written
            states = {UUID(key): StateType(value) for key, value in body["states"].items()}
            recorded = read_recorded_task_runs(client, states, deadline=0)
            if len(recorded) == len(states) or time.time() > body["deadline"]:
                if len(recorded) < len(states):
                    logger.warning(
                        "%d task run states sent by run %s were not recorded in time",
                        len(states) - len(recorded),
                        path.name,
                    )
                with contextlib.suppress(OSError):
                    path.unlink()
            elif recorded:  # ask only for the others next time
                body["states"] = {
                    str(key): value.value for key, value in states.items() if key not in recorded
                }
                _rewrite(path, json.dumps(body))


def _rewrite(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.replace(tmp, path)
