"""Launching the ephemeral API server process: its environment, command line and ending."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

from kedro_prefect.local_api.hibernate import FD_ENV
from kedro_prefect.local_api.server_app import HOME_ENV, PARENT_PID_ENV, PORT_ENV, SPECULATIVE_ENV
from kedro_prefect.local_api.state import APP_FACTORY

logger = logging.getLogger(__name__)

#: uvicorn's exit code when the server could not start (e.g. the port was taken meanwhile).
STARTUP_FAILURE = 3
#: The least time to wait for the server to answer: a loaded 2-core machine needs 20-30 s for a
#: fresh database, more than Prefect's default ``server.ephemeral.startup_timeout_seconds`` (20).
MIN_STARTUP_TIMEOUT = 90.0
#: The file under ``PREFECT_HOME`` that the server process writes its output to.
LOG_FILE_NAME = "kedro-prefect-ephemeral-api.log"
#: Prefect's background services a local API does not run (see :func:`server_env`).
LOCAL_SERVICES_ENV = {
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",  # automations: triggers and actions
    "PREFECT_API_EVENTS_STREAM_OUT_ENABLED": "false",  # events to websocket subscribers
    "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "false",  # logs to websocket subscribers
}


def server_env(speculative: bool) -> tuple[dict[str, str], Path]:
    """The environment of a server launched now, and its ``PREFECT_HOME``.

    The server reads the same environment, profile and ``prefect.toml`` as Prefect in this
    process does. ``speculative``: Prefect is not imported here. Otherwise the settings in
    force beyond those (``temporary_settings``) are passed on too: a run that imported Prefect
    before launching the server (``task_runner=dask``) and one that did not (threads) launch
    the same server, and reuse each other's.
    """
    if speculative:
        settings_env: dict[str, str] = {SPECULATIVE_ENV: "1"}
        home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    else:
        from prefect.settings import get_current_settings

        from kedro_prefect._upstream.prefect import settings_overrides

        settings_env = settings_overrides()
        home = Path(get_current_settings().home)
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
        # Only the services a local run needs (it serves no deployments, automations or event
        # subscribers): the task run recorder and the event persister (and its retention),
        # which Prefect's ephemeral mode runs anyway. Triggers, actions and the event stream
        # out cost CPU while the lingering server idles.
        **LOCAL_SERVICES_ENV,
        HOME_ENV: str(home),
    }
    env.pop("PREFECT_API_URL", None)
    if not speculative:
        env.pop(SPECULATIVE_ENV, None)
    return env, home


def popen_server(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``python -m uvicorn`` serving the app factory on 127.0.0.1; return it and its port.

    The socket is bound here and passed to uvicorn (``--fd``): no other process can take the
    port between choosing and binding it, and the server keeps the same socket when it
    hibernates (:mod:`.hibernate`). ``TCP_NODELAY`` is set on it for the connections it
    accepts (asyncio sets it only on sockets it knows to be TCP, and uvicorn's ``--fd`` says
    ``AF_UNIX``).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(2048)  # uvicorn's default backlog
        port, fd = sock.getsockname()[1], sock.fileno()
        env = {
            **env,
            PORT_ENV: str(port),
            FD_ENV: str(fd),
            # The server stays up while this process lives (then until idle, see server_watch).
            PARENT_PID_ENV: str(os.getpid()),
        }
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    APP_FACTORY,
                    "--fd",
                    str(fd),
                    "--log-level",
                    "error",
                    "--lifespan",
                    "on",
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(fd,),
                # Not in the terminal's process group: a Ctrl-C must not stop the server
                # before the run has recorded its Cancelled state (execution.cancellation).
                start_new_session=True,
            )
    finally:
        sock.close()  # the server's copy stays open
    return process, port


def reap(process: subprocess.Popen[bytes], timeout: float = 5) -> None:
    """Wait for a terminated server process to exit; kill it if it takes over ``timeout`` s."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def drain_prefect_workers(timeout: float) -> None:
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


def startup_timeout() -> float:
    from prefect.settings import get_current_settings

    configured = get_current_settings().server.ephemeral.startup_timeout_seconds
    return max(float(configured), MIN_STARTUP_TIMEOUT)


def answers(api_url: str, timeout: float) -> bool:
    """Whether the local API at ``api_url`` answers its health check."""
    import httpx

    try:
        # Plain HTTP to this machine: no CA bundle to load (~30 ms a client).
        with httpx.Client(timeout=timeout, verify=False) as client:
            return client.get(f"{api_url}/health").status_code == 200
    except Exception:
        return False


def output_tail(log_path: Path, chars: int = 3000) -> str:
    """The end of the server's output, for an error message (empty if there is none)."""
    try:
        tail = log_path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
    return f"Its output ({log_path}):\n{tail}"
