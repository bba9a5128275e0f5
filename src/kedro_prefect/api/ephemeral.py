"""Prefect's ephemeral API: a local server process for runs with no ``PREFECT_API_URL``.

* ``PREFECT_API_URL`` set: runs report to that server (self-hosted or Prefect Cloud).
* Not set: Prefect's ephemeral API, a local server process on 127.0.0.1 storing its SQLite
  database under ``PREFECT_HOME``. It is started once per Python process, in the driver, and its
  URL is put into the settings of the run, so every task (also on Dask workers) talks to that
  one server instead of starting its own.

Starting the ephemeral API costs seconds (the server imports ``prefect.server``, checks the
database migrations, starts its services), so :class:`EphemeralAPI` launches the server process
as soon as a ``PrefectRunner`` is constructed -- ``kedro run`` builds the runner before the session
loads the project and the catalog -- and the run only waits for it to answer. In a process that
has not imported Prefect yet (``kedro run``), the launch happens even before the driver imports
Prefect (~2 s): the server resolves Prefect's settings itself and exits at once if they name an
API URL after all. The driver never imports ``prefect.server`` (another ~4 s of imports on a
small machine): the server process is ``python -m uvicorn`` serving
:func:`kedro_prefect.api.server_app.create_app`, which is the app of Prefect's own
``SubprocessASGIServer``.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from kedro_prefect.api.exit import after_final_collection
from kedro_prefect.api.health import configured_api_url
from kedro_prefect.api.records import read_recorded_task_runs
from kedro_prefect.api.server_app import NOT_NEEDED_EXIT_CODE, PARENT_PID_ENV, SPECULATIVE_ENV

logger = logging.getLogger(__name__)

#: The uvicorn app factory the ephemeral API process serves.
APP_FACTORY = "kedro_prefect.api.server_app:create_app"
#: How long stopping the server waits for it to record the task run states sent to it: a base,
#: plus a little per task run (recording is asynchronous; hundreds of runs take a few seconds).
SETTLE_SECONDS = 10.0
SETTLE_SECONDS_PER_TASK_RUN = 0.05
#: The file under ``PREFECT_HOME`` that the server process writes its output to.
LOG_FILE_NAME = "kedro-prefect-ephemeral-api.log"
#: uvicorn's exit code when the server could not start (e.g. the port was taken meanwhile).
_STARTUP_FAILURE = 3
#: The least time to wait for the server to answer: a loaded 2-core machine needs 20-30 s for a
#: fresh database, more than Prefect's default ``server.ephemeral.startup_timeout_seconds`` (20).
MIN_STARTUP_TIMEOUT = 90.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EphemeralAPI:
    """Prefect's ephemeral API server process, launched at most once per Python process.

    :meth:`start` launches the process and returns at once; :meth:`wait` waits until the API
    answers and returns its URL. The process is stopped when the Python process exits.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._ready = False
        self._started_at = 0.0
        self._owner_pid = os.getpid()
        self._atexit_registered = False
        self._log_path: Path | None = None
        self._speculative = False
        #: Final state type of each task run sent to this server, by id, until it shows them.
        self._unsettled: dict[Any, Any] = {}
        #: Server processes launched so far (a relaunch happens only if one died).
        self.launches = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/api"

    @property
    def log_path(self) -> Path:
        """Where the server process writes its output (under ``PREFECT_HOME``)."""
        if self._log_path is None:
            from prefect.settings import get_current_settings

            return Path(get_current_settings().home) / LOG_FILE_NAME
        return self._log_path

    @property
    def pid(self) -> int | None:
        """Process id of the server process, if one was launched."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Launch the server process unless it is already running; do not wait for it."""
        with self._lock:
            if not self.running:
                self._launch()

    def start_before_prefect_import(self) -> bool:
        """Launch the server now if this process has not imported Prefect yet; say if it did.

        Prefect's settings (which tell whether an API URL is configured) take ~2 s to import;
        the server imports them anyway. So when ``PREFECT_API_URL`` is not in the environment,
        the server is launched first and checks the settings itself: if a profile or
        ``prefect.toml`` names an API URL, it exits before touching the database, and
        :meth:`not_needed` forgets it. Only when Prefect is not imported yet: then no
        in-process setting (``temporary_settings``) can differ from what the server reads.
        """
        if "prefect" in sys.modules or os.environ.get("PREFECT_API_URL"):
            return False
        with self._lock:
            if self._process is None:
                self._launch(speculative=True)
        return True

    def not_needed(self) -> None:
        """A speculative launch turned out unneeded (an API URL is configured): stop it."""
        with self._lock:
            if self._speculative:
                self.stop()

    def wait(self, timeout: float | None = None) -> str:
        """Wait until the API answers (launching it if needed); return its URL.

        Raises:
            RuntimeError: The server process exited or did not answer within ``timeout``
                seconds; the message holds the end of its output.
        """
        with self._lock:
            if self._ready and self.running:
                return self.url
            if not self.running:
                self._launch()
            logger.debug(
                "Waiting for Prefect's ephemeral API (launched %.1f s ago)",
                time.monotonic() - self._started_at,
            )
            timeout = timeout if timeout is not None else _startup_timeout()
            deadline = time.monotonic() + timeout
            relaunches = 0
            import httpx

            with httpx.Client(timeout=5) as client:
                while True:
                    assert self._process is not None
                    code = self._process.poll()
                    if code is not None:
                        if code == NOT_NEEDED_EXIT_CODE and self._speculative:
                            # It saw an API URL this process does not use: launch for real.
                            self._launch()
                            continue
                        if code == _STARTUP_FAILURE and relaunches < 2:
                            relaunches += 1
                            self._launch()
                            continue
                        raise RuntimeError(
                            f"Prefect's ephemeral API server exited with code {code}. "
                            f"{self._log_tail()}"
                        )
                    with suppress(httpx.HTTPError):
                        if client.get(f"{self.url}/health").status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(
                            f"Prefect's ephemeral API server did not answer within {timeout:.0f} s "
                            "(set PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS to wait longer, "
                            f"or PREFECT_API_URL to use a running server). {self._log_tail()}"
                        )
                    time.sleep(0.05)
            self._ready = True
            logger.debug(
                "Prefect ephemeral API at %s (ready %.1f s after launch)",
                self.url,
                time.monotonic() - self._started_at,
            )
            return self.url

    def stop(self) -> None:
        """Stop the server process (only from the process that launched it)."""
        process = self._terminate()
        if process is not None:
            _reap(process)

    def stop_without_waiting(self) -> None:
        """Send the server process SIGTERM and return at once (a second Ctrl-C's exit)."""
        self._terminate()

    def _terminate(self) -> subprocess.Popen[bytes] | None:
        """Ask the server process to stop; return it (``None``: nothing of this process's)."""
        with self._lock:
            process, self._process = self._process, None
            self._ready = False
            if process is None or os.getpid() != self._owner_pid:
                return None
            process.terminate()
            return process

    def expect_final_states(self, states: dict[Any, Any]) -> None:
        """Task runs (id -> final state type) whose states this server must show before it stops.

        Task run states travel to the API as events, which the server records a moment later;
        :meth:`shutdown` waits for them, so the database under ``PREFECT_HOME`` is complete.
        """
        with self._lock:
            self._unsettled.update(states)

    def shutdown(self) -> None:
        """Deliver what this process still queues, wait until it is recorded, stop the server.

        Draining first keeps the last task runs' events and log lines from being sent to a
        server that is already gone; and the server records task run states from events
        asynchronously, so stopping it at once would leave the last task runs Running in the
        database. Returns once the server process has exited.
        """
        process = self._record_then_terminate()
        if process is not None:
            _reap(process)

    def _shutdown_at_exit(self) -> None:
        """:meth:`shutdown` at interpreter exit, waiting for the server as late as possible.

        ``atexit`` runs handlers last-in first-out, and Prefect registers the handlers that
        drain its events and log queues when it is imported, before any runner exists: this one
        runs first. The server takes ~0.2 s to stop: it is waited for after this process's final
        collection (:mod:`kedro_prefect.api.exit`), which runs meanwhile.
        """
        process = self._record_then_terminate()
        if process is not None and not after_final_collection(functools.partial(_reap, process)):
            _reap(process)

    def _record_then_terminate(self) -> subprocess.Popen[bytes] | None:
        if self.running and os.getpid() == self._owner_pid:
            _drain_prefect_workers(timeout=5)
            with suppress(Exception):  # exiting anyway: never mask the exit status
                self._wait_until_recorded()
        return self._terminate()

    def _wait_until_recorded(self) -> None:
        """Wait (bounded) until the server shows the final state of every expected task run."""
        if not self._unsettled or not self._ready:
            return
        from prefect.client.orchestration import SyncPrefectClient

        started = time.monotonic()
        deadline = started + SETTLE_SECONDS + SETTLE_SECONDS_PER_TASK_RUN * len(self._unsettled)
        with SyncPrefectClient(self.url) as client:
            for task_run_id in read_recorded_task_runs(client, self._unsettled, deadline):
                del self._unsettled[task_run_id]
        logger.debug(
            "Waited %.2f s for the ephemeral API to record task run states (%d not recorded)",
            time.monotonic() - started,
            len(self._unsettled),
        )

    def _launch(self, speculative: bool = False) -> None:
        if speculative:
            # Prefect is not imported: the server reads the same environment, profile and
            # prefect.toml as Prefect in this process would.
            settings_env: dict[str, str] = {SPECULATIVE_ENV: "1"}
            home = os.environ.get("PREFECT_HOME") or "~/.prefect"
            log_path = Path(home).expanduser() / LOG_FILE_NAME
        else:
            from prefect.settings import get_current_settings

            settings = get_current_settings()
            settings_env = settings.to_environment_variables(exclude_unset=True)
            log_path = Path(settings.home) / LOG_FILE_NAME
        self._port = _free_port()
        env = {
            **os.environ,
            **settings_env,
            # What Prefect's SubprocessASGIServer sets: no UI, ephemeral services only. (It
            # also sets PREFECT__SERVER_FINAL, which create_app decides on; see there.)
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            # Analytics try to reach the internet and fight the first migration for the lock.
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # Registering Prefect's block types at every start imports every installed Prefect
            # collection (prefect-dask brings dask and distributed): ~1 s, and node runs use no
            # blocks. `prefect server start` on the same database registers them.
            "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
            "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
            # The server stops by itself if this process dies without stopping it.
            PARENT_PID_ENV: str(os.getpid()),
        }
        env.pop("PREFECT_API_URL", None)
        if not speculative:
            env.pop(SPECULATIVE_ENV, None)
        self._log_path = log_path
        self._speculative = speculative
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    APP_FACTORY,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self._port),
                    "--log-level",
                    "error",
                    "--lifespan",
                    "on",
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Not in the terminal's process group: a Ctrl-C must not stop the server
                # before the run has recorded its Cancelled state (execution.cancellation).
                start_new_session=True,
            )
        self._owner_pid = os.getpid()
        self._started_at = time.monotonic()
        self._ready = False
        self.launches += 1
        if not self._atexit_registered:
            atexit.register(self._shutdown_at_exit)
            self._atexit_registered = True
        logger.debug("Launched Prefect's ephemeral API server on port %s", self._port)

    def _log_tail(self, chars: int = 3000) -> str:
        try:
            tail = self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
        return f"Its output ({self.log_path}):\n{tail}"


def _reap(process: subprocess.Popen[bytes], timeout: float = 5) -> None:
    """Wait for a terminated server process to exit; kill it if it takes over ``timeout`` s."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _drain_prefect_workers(timeout: float) -> None:
    """Send what Prefect's events and API log workers still hold (if they were ever used)."""
    for module, name in (
        ("prefect.events.worker", "EventsWorker"),
        ("prefect.logging.handlers", "APILogWorker"),
    ):
        worker = getattr(sys.modules.get(module), name, None)
        if worker is None:
            continue
        try:
            worker.drain_all(timeout=timeout)
        except Exception:  # exiting anyway: never let a flush failure mask the exit status
            logger.debug("Could not drain %s at exit", name, exc_info=True)


def _startup_timeout() -> float:
    from prefect.settings import get_current_settings

    configured = get_current_settings().server.ephemeral.startup_timeout_seconds
    return max(float(configured), MIN_STARTUP_TIMEOUT)


#: The one ephemeral API of this process.
EPHEMERAL_API = EphemeralAPI()


def start_ephemeral_api_early() -> None:
    """Launch the ephemeral API in the background if this run will need it.

    Called when a ``PrefectRunner`` is constructed, so the server starts while Kedro creates the
    session and loads the catalog -- before this process imports Prefect, when it has not yet.
    Does nothing when ``PREFECT_API_URL`` is configured.
    """
    launched = EPHEMERAL_API.start_before_prefect_import()
    if configured_api_url():
        if launched:
            EPHEMERAL_API.not_needed()
    elif not launched:
        EPHEMERAL_API.start()


def ephemeral_api_url() -> str:
    """Start (once per process) Prefect's ephemeral API server and return its URL."""
    return EPHEMERAL_API.wait()


def expect_recorded(states: dict[Any, Any]) -> None:
    """Have ``states`` (task run id -> final state type) recorded before the ephemeral API stops.

    Does nothing when the run reported to a server given by ``PREFECT_API_URL``: that server
    keeps running and records them.
    """
    from prefect.settings import get_current_settings

    if states and EPHEMERAL_API.running and get_current_settings().api.url == EPHEMERAL_API.url:
        EPHEMERAL_API.expect_final_states(states)
