"""A lingering local API: one server per ``PREFECT_HOME``, reused by the next runs until idle.

Starting the ephemeral API costs seconds, so after a run its server stays up for
``KEDRO_PREFECT_API_IDLE_SECONDS`` (default :data:`DEFAULT_IDLE_SECONDS`; ``0`` turns lingering
off) and the next run on the same ``PREFECT_HOME`` uses it, like a build daemon. The files that
find, share and stop it are in ``PREFECT_HOME/kedro-prefect-api/``
(:mod:`.state`). A run reuses the server only when its *fingerprint* is
the run's own: a hash of what its settings come from (Prefect and kedro-prefect versions, the
interpreter, the ``PREFECT_*`` environment, the idle and hibernate times, Prefect's settings
files) and of the code the server process runs (:data:`SERVER_MODULES`); otherwise it retires
that server (which stops once idle) and starts one.

Imported by the server process too: imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kedro_prefect.local_api.hibernate import HIBERNATE_ENV, seconds_setting
from kedro_prefect.local_api.state import ServerInfo, StateDir, is_api_server, pid_alive

logger = logging.getLogger(__name__)

#: Seconds an idle ephemeral API stays up after its last run; ``0``: stop when the run exits.
IDLE_ENV = "KEDRO_PREFECT_API_IDLE_SECONDS"
DEFAULT_IDLE_SECONDS = 900.0
#: Environment variables the launcher sets for the server itself: not part of the fingerprint.
_NOT_FINGERPRINTED = {
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_UI_ENABLED",
    "PREFECT_SERVER_ANALYTICS_ENABLED",
    "PREFECT_API_BLOCKS_REGISTER_ON_START",
    "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED",
    "PREFECT_API_EVENTS_STREAM_OUT_ENABLED",
    "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED",
}
_SETTINGS_FILES = ("prefect.toml", ".env", "pyproject.toml")

#: The modules of kedro-prefect that the server process may run, relative to the package: this
#: subpackage and what its modules import from the rest, at the top or in a function (a test
#: checks the list against the imports, from the app factory on).
SERVER_MODULES = (
    "__init__.py",
    "errors.py",
    "local_api/*.py",
    "_upstream/__init__.py",
    "_upstream/prefect.py",
    "_upstream/prefect_server.py",
)


def server_code_files() -> list[Path]:
    """The files of :data:`SERVER_MODULES`, sorted."""
    package = Path(__file__).parent.parent
    return sorted({path for pattern in SERVER_MODULES for path in package.glob(pattern)})


def code_hash() -> str:
    """A hash of the code the server process runs (:func:`server_code_files`), by content."""
    digest = hashlib.sha256()
    package = Path(__file__).parent.parent
    for path in server_code_files():
        digest.update(str(path.relative_to(package)).encode() + b"\0")
        with contextlib.suppress(OSError):
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def idle_seconds(env: Mapping[str, str] = os.environ) -> float:
    """The configured idle time (``KEDRO_PREFECT_API_IDLE_SECONDS``); ``0`` turns lingering off.

    Raises:
        PrefectRunnerConfigError: The value is not a number of seconds >= 0.
    """
    return seconds_setting(
        env,
        IDLE_ENV,
        DEFAULT_IDLE_SECONDS,
        "how long the ephemeral API stays up after a run; 0 turns lingering off",
    )


def fingerprint(env: Mapping[str, str], cwd: Path, home: Path) -> str:
    """What a server launched with ``env`` in ``cwd`` takes its settings from, hashed."""
    from importlib.metadata import version

    digest = hashlib.sha256()
    parts: list[Any] = [
        sys.executable,
        version("prefect"),
        version("kedro-prefect"),
        env.get(IDLE_ENV, ""),
        env.get(HIBERNATE_ENV, ""),
        sorted(
            (key, value)
            for key, value in env.items()
            if key.startswith("PREFECT_") and key not in _NOT_FINGERPRINTED
        ),
    ]
    # The server's own code: an edited (editable) install does not reuse a server of the old.
    parts.append(code_hash())
    profiles = env.get("PREFECT_PROFILES_PATH") or str(home / "profiles.toml")
    for path in (Path(profiles).expanduser(), *(cwd / name for name in _SETTINGS_FILES)):
        with contextlib.suppress(OSError):
            parts.append((str(path), hashlib.sha256(path.read_bytes()).hexdigest()))
    digest.update(json.dumps(parts, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def reusable_server(state: StateDir, fingerprint: str) -> ServerInfo | None:
    """The server of ``state``'s home if a run of ``fingerprint`` may reuse it (hold the lock).

    A server of another fingerprint is retired: no run finds it any more, and it stops by
    itself once the runs using it are gone and their states recorded.
    """
    info = state.read_server()
    if info is not None and info.fingerprint == fingerprint:
        return info
    if info is not None:
        logger.info(
            "Replacing the lingering Prefect ephemeral API (PID %s): other Prefect version or "
            "settings",
            info.pid,
        )
        state.remove_server(info.pid)
    state.remove_stale_server_dirs()
    return None


def terminate(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM a server (checked to be one), SIGKILL it after ``timeout`` s; return once gone."""
    if not is_api_server(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and not _zombie(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # our own child: reap it
        time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def server_status(home: Path) -> dict[str, Any] | None:
    """URL, PID, clients and idle time of the lingering server of ``home`` (``None``: none)."""
    state = StateDir(home)
    info = state.read_server()
    if info is None:
        return None
    since = state.idle_since(info.pid)
    return {
        **asdict(info),
        "clients": state.live_clients(info.pid),
        "services": state.services(info.pid),
        "hibernating": state.hibernating(info.pid),
        "idle_for": None if since is None else max(0.0, time.time() - since),
    }


def stop_server(home: Path | None = None) -> ServerInfo | None:
    """Stop the lingering server of ``home`` (default: Prefect's ``PREFECT_HOME``); return it."""
    if home is None:
        from prefect.settings import get_current_settings

        home = Path(get_current_settings().home)
    state = StateDir(home)
    if not state.path.is_dir():
        return None
    with state.locked():
        info = state.read_server()
        if info is None:
            return None
        state.remove_server(info.pid)  # no run finds it any more
    wait_for_pending(state, info.pid)
    terminate(info.pid)
    state.remove_server_dir(info.pid)
    return info


def wait_for_pending(state: StateDir, server_pid: int, most: float = 600.0) -> None:
    """Wait until the server recorded the states and log lines runs left it (or their deadline)."""
    limit = time.time() + most
    while state.unfinished(server_pid) and is_api_server(server_pid) and time.time() < limit:
        time.sleep(0.1)
