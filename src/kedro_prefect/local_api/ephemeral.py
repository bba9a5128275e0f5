"""Prefect's ephemeral API: a local server process for runs with no ``PREFECT_API_URL``.

* ``PREFECT_API_URL`` set: runs report to that server (self-hosted or Prefect Cloud).
* Not set: Prefect's ephemeral API, a local server process on 127.0.0.1 storing its SQLite
  database under ``PREFECT_HOME``. It is started once per Python process, in the driver, or
  reused from an earlier run (it lingers while idle, :mod:`.lingering`), and its URL is put
  into the settings of the run, so every task (also on Dask workers) talks to that one server
  instead of starting its own. At exit the driver does not wait for the server
  to record the run's task run states: the server does that on its own, then stops when idle.

Starting the ephemeral API costs seconds (the server imports ``prefect.server``, checks the
database migrations, starts its services), so :class:`EphemeralAPI` launches the server process
as soon as a ``PrefectRunner`` is constructed -- ``kedro run`` builds the runner before the session
loads the project and the catalog -- and the run only waits for it to answer. In a process that
has not imported Prefect yet (``kedro run``), the launch happens even before the driver imports
Prefect (~2 s): the server resolves Prefect's settings itself and exits at once if they name an
API URL after all. The driver never imports ``prefect.server`` (another ~4 s of imports on a
small machine): the server process is ``python -m uvicorn`` serving
:func:`kedro_prefect.local_api.server_app.create_app`, which is the app of Prefect's own
``SubprocessASGIServer``.

An :class:`EphemeralAPI` is in one :class:`Mode` at a time: its own server (:attr:`Mode.STARTED`),
one launched before the run knew it needs it (:attr:`Mode.SPECULATIVE`, until it answers), or
the lingering server of an earlier run (:attr:`Mode.ADOPTED`).
"""

from __future__ import annotations

import atexit
import enum
import logging
import os
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from kedro_prefect.local_api.hibernate import wake
from kedro_prefect.local_api.launch import (
    LOG_FILE_NAME,
    MIN_STARTUP_TIMEOUT,
    STARTUP_FAILURE,
    answers,
    drain_prefect_workers,
    output_tail,
    popen_server,
    reap,
    server_env,
    startup_timeout,
)
from kedro_prefect.local_api.lingering import (
    fingerprint,
    idle_seconds,
    reusable_server,
    wait_for_pending,
)
from kedro_prefect.local_api.records import wait_until_recorded
from kedro_prefect.local_api.server_app import NOT_NEEDED_EXIT_CODE
from kedro_prefect.local_api.state import ServerInfo, StateDir, pid_alive

logger = logging.getLogger(__name__)

#: How long stopping the server waits for it to record the task run states sent to it: a base,
#: plus a little per task run (recording is asynchronous; hundreds of runs take a few seconds).
SETTLE_SECONDS = 10.0
SETTLE_SECONDS_PER_TASK_RUN = 0.05
#: How long a server may take to record what a run left it at exit (nobody waits for it).
PENDING_SECONDS = 120.0
PENDING_SECONDS_PER_TASK_RUN = 0.5


class Mode(enum.Enum):
    """Whose server an :class:`EphemeralAPI` uses."""

    #: Launched by this process, which stops it (or leaves it to linger) at exit.
    STARTED = "started"
    #: Launched by this process before it imported Prefect: it exits by itself if the settings
    #: name an API URL after all (:meth:`EphemeralAPI.not_needed`); :attr:`STARTED` once it answers.
    SPECULATIVE = "speculative"
    #: The lingering server of an earlier run, on the same ``PREFECT_HOME``: only left at exit.
    ADOPTED = "adopted"


class EphemeralAPI:
    """Prefect's ephemeral API server process: launched (or reused) once per Python process.

    :meth:`start` launches it or finds the lingering one and returns at once; :meth:`wait`
    waits until it answers. At exit the process leaves it the task run states to record
    (:mod:`kedro_prefect.local_api.server_watch`); :meth:`shutdown` waits for them and stops it.
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
        #: Whose server this is (``None``: none launched or found yet, or stopped).
        self._mode: Mode | None = None
        #: The lingering server of another process this one uses (:attr:`Mode.ADOPTED`).
        self._adopted: ServerInfo | None = None
        #: Where the server's files live, when lingering is on.
        self._state: StateDir | None = None
        #: The start lock, held from a launch until the server answers and is registered.
        self._start_lock: int | None = None
        self._fingerprint = ""
        self._waking = False  # the adopted server was hibernating (:mod:`.hibernate`)
        #: Final state type of each task run sent to this server, by id, until it shows them.
        self._unsettled: dict[Any, Any] = {}
        #: Server processes launched so far (a relaunch happens only if one died).
        self.launches = 0

    @property
    def mode(self) -> Mode | None:
        """Whose server this process uses (``None``: none)."""
        return self._mode

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
        """Process id of the server process, if one was launched or reused."""
        if self._adopted is not None:  # Mode.ADOPTED
            return self._adopted.pid
        return self._process.pid if self._process is not None else None

    @property
    def reused(self) -> bool:
        """Whether the server is a lingering one, launched by an earlier run."""
        return self._mode is Mode.ADOPTED

    @property
    def running(self) -> bool:
        if self._adopted is not None:  # Mode.ADOPTED
            return pid_alive(self._adopted.pid)
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Launch (or find) the server unless it is already running; do not wait for it."""
        with self._lock:
            if not self.running:
                self._find_or_launch(speculative=False)

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
            if self._mode is None:
                self._find_or_launch(speculative=True)
        return True

    def not_needed(self) -> None:
        """A speculative launch turned out unneeded (an API URL is configured): stop it."""
        with self._lock:
            if self._mode in (Mode.SPECULATIVE, Mode.ADOPTED):
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
            if self._mode is Mode.ADOPTED:
                if self._adopted_answers():
                    return self.url
                self._retire_adopted()
            if not self.running:
                self._find_or_launch(speculative=False)
                if self._mode is Mode.ADOPTED:
                    if self._adopted_answers():
                        return self.url
                    self._retire_adopted()
                    raise RuntimeError(
                        "The lingering Prefect ephemeral API does not answer; stop it with "
                        f"`kedro prefect api stop` and run again. {self._log_tail()}"
                    )
            logger.debug(
                "Waiting for Prefect's ephemeral API (launched %.1f s ago)",
                time.monotonic() - self._started_at,
            )
            timeout = timeout if timeout is not None else startup_timeout()
            deadline = time.monotonic() + timeout
            relaunches = 0
            import httpx

            with httpx.Client(timeout=5) as client:
                while True:
                    assert self._process is not None
                    code = self._process.poll()
                    if code is not None:
                        if code == NOT_NEEDED_EXIT_CODE and self._mode is Mode.SPECULATIVE:
                            # It saw an API URL this process does not use: launch for real.
                            self._launch(speculative=False)
                            continue
                        if code == STARTUP_FAILURE and relaunches < 2:
                            relaunches += 1
                            self._launch(speculative=self._mode is Mode.SPECULATIVE)
                            continue
                        self._unlock_start()
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
            self._mode = Mode.STARTED  # a speculative launch proved needed
            self._register()
            logger.debug(
                "Prefect ephemeral API at %s (ready %.1f s after launch)",
                self.url,
                time.monotonic() - self._started_at,
            )
            return self.url

    def stop(self) -> None:
        """Stop the server process if this process launched it; else only stop using it."""
        if self._mode is Mode.ADOPTED:
            self._release_adopted()
            return
        process = self._terminate()
        if process is not None:
            reap(process)

    def stop_without_waiting(self) -> None:
        """Send the server process SIGTERM and return at once (a second Ctrl-C's exit)."""
        self._terminate()

    def _terminate(self) -> subprocess.Popen[bytes] | None:
        """Ask the server process to stop; return it (``None``: nothing of this process's)."""
        with self._lock:
            process, self._process = self._process, None
            self._ready = False
            if self._mode is not Mode.ADOPTED:
                self._mode = None
            self._unlock_start()
            if process is None or os.getpid() != self._owner_pid:
                return None
            if self._state is not None:
                self._state.remove_server(process.pid)
            process.terminate()
            return process

    def expect_final_states(self, states: dict[Any, Any]) -> None:
        """Task runs (id -> final state type) the server must record before it stops.

        Task run states travel to the API as events, which the server records a moment later.
        """
        with self._lock:
            self._unsettled.update(states)

    def shutdown(self) -> None:
        """Deliver what this process still queues, wait until it is recorded, stop the server.

        Stopping it at once would lose the last events and log lines, or leave the last task
        runs Running in the database. Returns once the server process has exited (a server
        launched by another process is only left, once it has recorded this process's runs).
        """
        if self.running and os.getpid() == self._owner_pid:
            drain_prefect_workers(timeout=5)
            with suppress(Exception):  # exiting anyway: never mask the exit status
                self._wait_until_recorded()
            with suppress(Exception):  # and the log lines left to the server as files
                wait_for_pending(self.state_dir(), self.pid or 0, most=SETTLE_SECONDS)
        self.stop()

    def _leave_at_exit(self) -> None:
        """At interpreter exit: hand the task run states still to record to the server, leave.

        It drains Prefect's events and log queues first (their own exit handlers may run
        later); the server records the states on its own and stops once idle: no waiting.
        """
        if not self.running or os.getpid() != self._owner_pid:
            return
        drain_prefect_workers(timeout=5)
        pid = self.pid
        if self._unsettled and self._ready and pid is not None:
            state = self.state_dir()
            deadline = (
                time.time() + PENDING_SECONDS + PENDING_SECONDS_PER_TASK_RUN * len(self._unsettled)
            )
            with suppress(Exception):  # exiting anyway: never mask the exit status
                state.add_pending(
                    pid,
                    {str(key): getattr(v, "value", str(v)) for key, v in self._unsettled.items()},
                    deadline,
                )
        if self._mode is Mode.ADOPTED:
            self._release_adopted()

    def _wait_until_recorded(self) -> None:
        """Wait (bounded) until the server shows the final state of every expected task run."""
        if self._unsettled and (self._ready or self._adopted):
            seconds = SETTLE_SECONDS + SETTLE_SECONDS_PER_TASK_RUN * len(self._unsettled)
            self._unsettled = wait_until_recorded(self.url, self._unsettled, seconds)

    # -- finding, launching and registering the server ----------------------------------------

    def _find_or_launch(self, speculative: bool) -> None:
        """Reuse the lingering server of this ``PREFECT_HOME`` if it fits, else launch one.

        With lingering on, the start lock is taken first (two runs starting at once find one
        server) and held until the launched server answers and is registered (:meth:`wait`).
        """
        env, home = server_env(speculative)
        self._state = None
        if idle_seconds() <= 0:
            self._launch(speculative, env, home)
            return
        state = StateDir(home)
        self._unlock_start()
        fd = state.lock()
        try:
            info = reusable_server(state, fingerprint(env, Path.cwd(), home))
            if info is not None:
                state.add_client(info.pid)
                self._adopt(info, state, home)
                state.unlock(fd)
                return
            self._state, self._start_lock = state, fd
            self._launch(speculative, env, home)
        except BaseException:
            state.unlock(fd)
            self._start_lock = None
            raise

    def _adopt(self, info: ServerInfo, state: StateDir, home: Path) -> None:
        self._mode = Mode.ADOPTED
        self._adopted = info
        self._state = state
        self._process = None
        self._port = int(info.url.rsplit(":", 1)[1].split("/", 1)[0])
        self._log_path = home / LOG_FILE_NAME
        self._ready = False
        self._owner_pid = os.getpid()
        self._register_atexit()
        self._waking = state.hibernating(info.pid)
        if self._waking:  # wake it now: it starts while this process imports Prefect
            wake(self._port)
        logger.debug("Reusing the lingering Prefect ephemeral API at %s", info.url)

    def _adopted_answers(self) -> bool:
        self._ready = answers(self.url, timeout=MIN_STARTUP_TIMEOUT if self._waking else 30)
        if self._ready:
            logger.info("Prefect ephemeral API at %s (reused)", self.url)
        return self._ready

    def _retire_adopted(self) -> None:
        """The reused server does not answer: no run shall find it any more."""
        if self._adopted is not None and self._state is not None:
            with self._state.locked():
                self._state.remove_server(self._adopted.pid)
        self._release_adopted()

    def _release_adopted(self) -> None:
        with self._lock:
            if self._adopted is not None and self._state is not None:
                self._state.remove_client(self._adopted.pid)
            self._adopted = None
            self._mode = None
            self._ready = False

    def _register(self) -> None:
        """Write ``server.json`` for the next runs (lingering on), release the start lock."""
        if self._state is not None and self._process is not None and self._start_lock is not None:
            self._state.register(self.url, self._process.pid, self._fingerprint, idle_seconds())
        self._unlock_start()

    def _unlock_start(self) -> None:
        fd, self._start_lock = self._start_lock, None
        StateDir.unlock(fd)

    def state_dir(self) -> StateDir:
        """The files of this API's ``PREFECT_HOME`` that its server and the runs share."""
        return self._state or StateDir(self.log_path.parent)

    def _launch(
        self, speculative: bool, env: dict[str, str] | None = None, home: Path | None = None
    ) -> None:
        if env is None or home is None:
            env, home = server_env(speculative)
        self._adopted = None
        self._mode = Mode.SPECULATIVE if speculative else Mode.STARTED
        self._log_path = home / LOG_FILE_NAME
        if self._state is not None:
            self._fingerprint = fingerprint(env, Path.cwd(), home)
        self._process, self._port = popen_server(env, self._log_path)
        self._owner_pid = os.getpid()
        self._started_at = time.monotonic()
        self._ready = False
        self.launches += 1
        self._register_atexit()
        logger.debug("Launched Prefect's ephemeral API server on port %s", self._port)

    def _register_atexit(self) -> None:
        if not self._atexit_registered:
            atexit.register(self._leave_at_exit)
            self._atexit_registered = True

    def _log_tail(self) -> str:
        return output_tail(self.log_path)


#: The one ephemeral API of this process.
EPHEMERAL_API = EphemeralAPI()
