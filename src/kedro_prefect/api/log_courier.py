"""The log lines of a run against a Prefect server, delivered by a process that outlives it.

Prefect's API log worker sends a process's log lines in batches (every 2 s) and, at interpreter
exit, sends the last batch and waits for the answer. Right after a big run the server is still
recording the run's task run states, so that last request waited: against ``prefect server
start`` on a loaded 2-core machine, 0.4-0.9 s at 200 nodes and 5.7 s at 1,000 -- after Kedro's
last line, more than everything else the exit does. Taking over only the run's tail was not
enough: a batch the worker had posted in the run's last seconds was still in flight at exit.

So from the start of a run against a server given by ``PREFECT_API_URL``, every batch of the
log worker (and the node lines, :mod:`kedro_prefect.local_api.log_spool`) goes to a file, as the
local API's spool does (the request body Prefect would send, written atomically, readable by its
owner only) in ``PREFECT_HOME/kedro-prefect-api/outbox/<hash of the URL>/``; at exit the lines
still queued are taken out of the worker's queue into one file (handed out one by one they took
~1 s at 1,000 nodes). A *courier* started with the run (``python -m
kedro_prefect.api.log_courier <dir> <url> <pid>``, detached) follows the process: it sends the
files with Prefect's own client (its API key, TLS and retry settings) as they come, oldest
first, removes each once stored, and once the process has exited sends what is left and exits.
The process never waits for the server to store a log line; task run states and events are
delivered by Prefect's events worker before the process exits, as before.

Guarantees and limits:

* Each file is written before the process exits; if the courier is not there for it (it could
  not start), one is started at exit, and the next run against the same API sends any file it
  finds (left by a machine that stopped, say).
* A batch the API refuses (4xx) is dropped with a warning in ``courier.log`` (beside the files).
  One it cannot store (server down, 5xx) is tried again, for :data:`PATIENCE_SECONDS` once the
  process has exited, then left for the next run; a file older than :data:`MAX_AGE_SECONDS`
  that still cannot be stored is dropped with a warning, as the spool does.
* Not for a deployment's flow run (``PREFECT__FLOW_RUN_ID`` set: its container may end with the
  process), nor with ``KEDRO_PREFECT_LOG_HANDOFF=false``: those send their lines as Prefect does.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kedro_prefect.local_api import (
    StateDir,
    flush_node_lines,
    hand_logs_to_server,
    pid_alive,
    spooled,
    spooled_request,
    try_lock_file,
    write_batch,
)

logger = logging.getLogger(__name__)

#: ``false`` (or ``0``, ``no``): the last log lines are sent before exit, as Prefect does.
HANDOFF_ENV = "KEDRO_PREFECT_LOG_HANDOFF"
#: How long a courier keeps trying an API that does not store its files.
PATIENCE_SECONDS = 120.0
#: A file older than this that still cannot be stored is dropped (as the spool does).
MAX_AGE_SECONDS = 600.0
LOG_NAME = "courier.log"
LOCK_NAME = ".courier.lock"

#: API URL -> the environment of its courier (the run's Prefect settings), once per process.
_handed: dict[str, dict[str, str]] = {}
#: API URL -> the courier following this process.
_followers: dict[str, subprocess.Popen[bytes] | None] = {}
_lock = threading.Lock()


def hand_off_enabled(env: Any = os.environ) -> bool:
    """Whether a run's log lines go to a courier (see the module docstring)."""
    if env.get("PREFECT__FLOW_RUN_ID"):
        return False
    return env.get(HANDOFF_ENV, "").strip().lower() not in ("false", "0", "no", "off")


def outbox(api_url: str, home: Path) -> Path:
    """The directory of the files waiting for ``api_url`` under ``home`` (``PREFECT_HOME``)."""
    key = hashlib.sha256(api_url.rstrip("/").encode()).hexdigest()[:16]
    return StateDir(home).path / "outbox" / key


def hand_run_to_courier(api_url: str) -> None:
    """From now on, log lines for ``api_url`` go to files that a courier process sends.

    Call when a run against ``api_url`` starts, in the run's settings. Every batch Prefect's log
    worker makes (and the node lines, :mod:`kedro_prefect.local_api.log_spool`) is written to
    the outbox; a courier that follows this process sends the files as they come (the UI shows
    the lines as it did, within a few seconds) and, once this process has exited, what is left,
    then exits. At exit, the lines still queued in the log worker go to the outbox in one file,
    so the process never waits for the server's answer. Files an earlier process left are sent
    too.
    """
    from prefect.settings import get_current_settings

    from kedro_prefect._upstream.prefect import before_prefect_exit_drains

    if not hand_off_enabled():
        return
    with _lock:
        first = not _handed
        if api_url not in _handed:
            settings = get_current_settings()
            directory = outbox(api_url, Path(settings.home))
            StateDir(Path(settings.home)).ensure()
            directory.parent.mkdir(exist_ok=True, mode=0o700)
            directory.mkdir(exist_ok=True, mode=0o700)
            _handed[api_url] = {
                **os.environ,
                **settings.to_environment_variables(exclude_unset=True),
                "PREFECT_API_URL": api_url,
                "KEDRO_PREFECT_COURIER_DIR": str(directory),
            }
        env = _handed[api_url]
        directory = Path(env["KEDRO_PREFECT_COURIER_DIR"])
        follower = _followers.get(api_url)
        if follower is None or follower.poll() is not None:
            _followers[api_url] = _start_courier(api_url, directory, env, follow=os.getpid())
    hand_logs_to_server(api_url, directory)
    if first:
        import atexit

        before_prefect_exit_drains(_take_queued)  # runs before the log worker's drain
        atexit.register(_start_couriers)  # runs after it (atexit comes after thread shutdown)


def _take_queued() -> None:
    """The lines still queued in the log worker go to the outbox in one file, not one by one."""
    from kedro_prefect._upstream.prefect import take_queued_api_logs

    with _lock:
        urls = {url.rstrip("/") for url in _handed}
    for api_url, items in take_queued_api_logs(urls).items():
        write_batch(api_url, items)


def _start_couriers() -> None:
    """At exit: a courier for files no follower of this process is there to send."""
    flush_node_lines()
    for api_url, env in list(_handed.items()):
        directory = Path(env["KEDRO_PREFECT_COURIER_DIR"])
        follower = _followers.get(api_url)
        if spooled(directory) and (follower is None or follower.poll() is not None):
            _start_courier(api_url, directory, env)


def _start_courier(
    api_url: str, directory: Path, env: dict[str, str], follow: int | None = None
) -> subprocess.Popen[bytes] | None:
    command = [sys.executable, "-m", "kedro_prefect.api.log_courier", str(directory), api_url]
    if follow is not None:
        command.append(str(follow))
    try:
        fd = os.open(directory / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            return subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not stopped by the terminal's Ctrl-C
            )
    except OSError:
        logger.warning("Could not start the courier of the log lines in %s", directory)
        return None


# -- the courier process ------------------------------------------------------------------------


def deliver(directory: Path) -> bool:
    """Send the files in ``directory`` to the API of the settings; whether none is left."""
    files = spooled(directory)
    if not files:
        return True
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    with get_client(sync_client=True) as client:
        for path in files:
            try:
                body = path.read_bytes()
                age = time.time() - path.stat().st_mtime
                method, route, request = spooled_request(path, body)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            try:
                status = client.request(method, route, **request).status_code  # type: ignore[arg-type]
            except PrefectHTTPStatusError as exc:
                status = exc.response.status_code
            except Exception:  # the API does not answer
                return _give_up_if_old(path, age)
            if status >= 500 or status in (408, 429):
                return _give_up_if_old(path, age)
            if status >= 400:
                logger.warning("%s was refused (%s); dropped", path.name, status)
            with contextlib.suppress(OSError):
                path.unlink()
    return not spooled(directory)


def _give_up_if_old(path: Path, age: float) -> bool:
    if age > MAX_AGE_SECONDS:
        logger.warning("Log lines of %s could not be stored in time; dropped", path.name)
        with contextlib.suppress(OSError):
            path.unlink()
    return False


def run_courier(directory: Path, follow: int | None = None) -> None:
    """Deliver the files of ``directory`` until none is left (one courier at a time); while the
    process ``follow`` lives, keep looking for new files every half second."""
    started = time.monotonic()
    pause = 0.5
    while True:
        following = follow is not None and pid_alive(follow)
        if not following and follow is not None:
            follow, started = None, time.monotonic()  # patience counts from the run's exit
        fd = try_lock_file(directory / LOCK_NAME)
        if fd is None:
            if following:  # another courier is at work; take over when it is done
                time.sleep(0.5)
                continue
            return  # another courier is at work: it takes these files too
        try:
            done = deliver(directory)
        finally:
            StateDir.unlock(fd)
        if following:
            time.sleep(0.5 if done else pause)
            pause = 0.5 if done else min(pause * 2, 10.0)
            continue
        if done and not spooled(directory):  # checked again without the lock: a late file
            return
        if not done:
            if time.monotonic() - started > PATIENCE_SECONDS:
                return  # left for the next run against this API
            time.sleep(pause)
            pause = min(pause * 2, 10.0)


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    run_courier(Path(sys.argv[1]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
