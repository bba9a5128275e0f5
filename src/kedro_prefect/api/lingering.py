"""A lingering ephemeral API: one server per ``PREFECT_HOME``, reused by the next runs until idle.

Starting the ephemeral API costs seconds, so after a run its server stays up for
``KEDRO_PREFECT_API_IDLE_SECONDS`` (default :data:`DEFAULT_IDLE_SECONDS`; ``0`` turns lingering
off) and the next run on the same ``PREFECT_HOME`` uses it, like a build daemon. Everything that
tells a run where it is lives in ``PREFECT_HOME/kedro-prefect-api/`` (a directory only its owner
can read, files ``0600``):

* ``server.json``: URL, PID, user, versions and the *fingerprint* of the server of this home:
  a hash of what its settings come from (Prefect and kedro-prefect versions, the interpreter, the
  ``PREFECT_*`` environment, the idle time and Prefect's settings files). A run reuses a server
  only when the fingerprint is its own, the file and the process belong to its user and the
  process is a kedro-prefect API server; otherwise it stops that server (if idle) and starts one.
* ``start.lock``: held (``flock``) while a run looks for the server or starts one: two runs
  starting at once find one server.
* ``<server pid>/client-<pid>``: a run using that server; ``<server pid>/pending-<pid>.json``:
  task run states a finished run sent and the server must record before it stops (the run
  itself exits without waiting, :mod:`kedro_prefect.api.server_watch`);
  ``<server pid>/logs-<pid>-<ns>.json``: log lines for the server to store
  (:mod:`kedro_prefect.api.log_spool`).

Imported by the server process too: imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Seconds an idle ephemeral API stays up after its last run; ``0``: stop when the run exits.
IDLE_ENV = "KEDRO_PREFECT_API_IDLE_SECONDS"
DEFAULT_IDLE_SECONDS = 900.0
#: The directory under ``PREFECT_HOME``.
DIR_NAME = "kedro-prefect-api"
#: What the server's command line names (to tell our servers from a recycled PID).
APP_FACTORY = "kedro_prefect.api.server_app:create_app"
#: Environment variables the launcher sets for the server itself: not part of the fingerprint.
_NOT_FINGERPRINTED = {
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_UI_ENABLED",
    "PREFECT_SERVER_ANALYTICS_ENABLED",
    "PREFECT_API_BLOCKS_REGISTER_ON_START",
    "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
}
_SETTINGS_FILES = ("prefect.toml", ".env", "pyproject.toml")


def idle_seconds(env: Mapping[str, str] = os.environ) -> float:
    """The configured idle time (``KEDRO_PREFECT_API_IDLE_SECONDS``); ``0`` turns lingering off.

    Raises:
        PrefectRunnerConfigError: The value is not a number of seconds >= 0.
    """
    raw = env.get(IDLE_ENV, "").strip()
    if not raw:
        return DEFAULT_IDLE_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        from kedro_prefect.errors import PrefectRunnerConfigError

        raise PrefectRunnerConfigError(
            f"{IDLE_ENV}={raw!r} is not a number of seconds >= 0 (how long the ephemeral API "
            "stays up after a run; 0 turns lingering off)."
        )
    return value


def home_from_env(env: Mapping[str, str] = os.environ) -> Path:
    """``PREFECT_HOME`` as the environment gives it (Prefect's default ``~/.prefect``)."""
    return Path(env.get("PREFECT_HOME") or "~/.prefect").expanduser()


def fingerprint(env: Mapping[str, str], cwd: Path, home: Path) -> str:
    """What a server launched with ``env`` in ``cwd`` takes its settings from, hashed."""
    from importlib.metadata import version

    digest = hashlib.sha256()
    parts: list[Any] = [
        sys.executable,
        version("prefect"),
        version("kedro-prefect"),
        env.get(IDLE_ENV, ""),
        sorted(
            (key, value)
            for key, value in env.items()
            if key.startswith("PREFECT_") and key not in _NOT_FINGERPRINTED
        ),
    ]
    # The server's own code: an edited (editable) install does not reuse a server of the old.
    package = Path(__file__).parent
    parts.append(sorted((p.name, p.stat().st_mtime_ns) for p in package.glob("*.py")))
    profiles = env.get("PREFECT_PROFILES_PATH") or str(home / "profiles.toml")
    for path in (Path(profiles).expanduser(), *(cwd / name for name in _SETTINGS_FILES)):
        with contextlib.suppress(OSError):
            parts.append((str(path), hashlib.sha256(path.read_bytes()).hexdigest()))
    digest.update(json.dumps(parts, sort_keys=True, default=str).encode())
    return digest.hexdigest()


@dataclass
class ServerInfo:
    """What ``server.json`` says about the lingering server of a ``PREFECT_HOME``."""

    url: str
    pid: int
    uid: int
    fingerprint: str
    idle_seconds: float
    prefect_version: str
    started_at: float


class StateDir:
    """``PREFECT_HOME/kedro-prefect-api``: the files that find, share and stop the server."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.path = self.home / DIR_NAME

    def ensure(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)

    # -- the start lock ----------------------------------------------------------------------

    def lock(self) -> int:
        """Take ``start.lock`` (waits while another run holds it); returns the fd to unlock."""
        self.ensure()
        fd = os.open(self.path / "start.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def try_lock(self) -> int | None:
        """Take ``start.lock`` if nobody holds it."""
        try:
            fd = os.open(self.path / "start.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd

    @staticmethod
    def unlock(fd: int | None) -> None:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # releases the flock

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fd = self.lock()
        try:
            yield
        finally:
            self.unlock(fd)

    # -- server.json -------------------------------------------------------------------------

    def write_server(self, info: ServerInfo) -> None:
        self.ensure()
        _write_private(self.path / "server.json", json.dumps(asdict(info)))

    def read_server(self) -> ServerInfo | None:
        """The server of this home, if it is alive, this user's and a kedro-prefect API server."""
        path = self.path / "server.json"
        try:
            stat = path.stat()
            if stat.st_uid != os.getuid() or stat.st_mode & 0o077:
                return None
            info = ServerInfo(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if info.uid != os.getuid() or not is_api_server(info.pid):
            return None
        return info

    def register(self, url: str, pid: int, fingerprint: str) -> None:
        """Make the server at ``url`` the one of this home (once it answers)."""
        from importlib.metadata import version

        info = ServerInfo(
            url, pid, os.getuid(), fingerprint, idle_seconds(), version("prefect"), time.time()
        )
        self.write_server(info)

    def registered_pid(self) -> int | None:
        """The PID ``server.json`` names, without checking that process."""
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            return int(json.loads((self.path / "server.json").read_text())["pid"])
        return None

    def remove_server(self, pid: int) -> None:
        """Remove ``server.json`` if it names ``pid``."""
        path = self.path / "server.json"
        with contextlib.suppress(OSError, ValueError, TypeError):
            if json.loads(path.read_text())["pid"] == pid:
                path.unlink()

    # -- clients and pending records, per server ---------------------------------------------

    def server_dir(self, server_pid: int) -> Path:
        return self.path / str(server_pid)

    def add_client(self, server_pid: int, pid: int | None = None) -> None:
        self.ensure()
        directory = self.server_dir(server_pid)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_private(directory / f"client-{pid or os.getpid()}", "")

    def remove_client(self, server_pid: int, pid: int | None = None) -> None:
        with contextlib.suppress(OSError):
            (self.server_dir(server_pid) / f"client-{pid or os.getpid()}").unlink()

    def live_clients(self, server_pid: int) -> list[int]:
        """PIDs of the runs using the server (files of processes gone are removed)."""
        alive = []
        with contextlib.suppress(OSError):
            for path in self.server_dir(server_pid).glob("client-*"):
                pid = int(path.name.split("-", 1)[1])
                if pid_alive(pid):
                    alive.append(pid)
                else:
                    with contextlib.suppress(OSError):
                        path.unlink()
        return alive

    def add_pending(self, server_pid: int, states: Mapping[str, str], deadline: float) -> None:
        """Task run id -> final state type, to be recorded by ``deadline`` (epoch seconds)."""
        self.ensure()
        directory = self.server_dir(server_pid)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        body = json.dumps({"deadline": deadline, "states": dict(states)})
        _write_private(directory / f"pending-{os.getpid()}-{time.time_ns()}.json", body)

    def pending(self, server_pid: int) -> list[Path]:
        with contextlib.suppress(OSError):
            return sorted(self.server_dir(server_pid).glob("pending-*.json"))
        return []

    def unfinished(self, server_pid: int) -> list[Path]:
        """Task run states and log lines that runs left the server to record."""
        from kedro_prefect.api.log_spool import spooled

        return self.pending(server_pid) + spooled(self.server_dir(server_pid))

    def set_idle_since(self, server_pid: int, since: float | None) -> None:
        path = self.server_dir(server_pid) / "idle-since"
        with contextlib.suppress(OSError):
            if since is None:
                path.unlink(missing_ok=True)
            else:
                _write_private(path, repr(since))

    def idle_since(self, server_pid: int) -> float | None:
        with contextlib.suppress(OSError, ValueError):
            return float((self.server_dir(server_pid) / "idle-since").read_text())
        return None

    def remove_server_dir(self, server_pid: int) -> None:
        import shutil

        shutil.rmtree(self.server_dir(server_pid), ignore_errors=True)

    def remove_stale_server_dirs(self) -> None:
        """Directories of servers that are gone (killed, say)."""
        with contextlib.suppress(OSError):
            for path in self.path.iterdir():
                if path.is_dir() and path.name.isdigit() and not is_api_server(int(path.name)):
                    self.remove_server_dir(int(path.name))


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


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by its owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def is_api_server(pid: int) -> bool:
    """Whether ``pid`` is a live kedro-prefect ephemeral API server process of this user."""
    if not pid_alive(pid):
        return False
    proc = Path(f"/proc/{pid}")
    if not proc.exists():  # no procfs (macOS): trust the PID
        return True
    try:
        if proc.stat().st_uid != os.getuid():
            return False
        cmdline = (proc / "cmdline").read_bytes()
        status = (proc / "status").read_text()
    except OSError:
        return False
    return APP_FACTORY.encode() in cmdline and "\nState:\tZ" not in status


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
