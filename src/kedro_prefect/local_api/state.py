"""The files of a ``PREFECT_HOME``'s local API: find, share and stop its server.

Everything that tells a run where the server of its home is lives in
``PREFECT_HOME/kedro-prefect-api/`` (a directory only its owner can read, files ``0600``):

* ``server.json``: URL, PID, user, versions and the fingerprint of the server of this home
  (:func:`.lingering.fingerprint`). A run reuses a server only when the
  fingerprint is its own, the file and the process belong to its user and the process is a
  kedro-prefect API server.
* ``start.lock``: held (``flock``) while a run looks for the server or starts one: two runs
  starting at once find one server.
* ``<server pid>/client-<pid>``: a run using that server; ``<server pid>/pending-<pid>.json``:
  task run states a finished run sent and the server must record before it stops (the run
  itself exits without waiting, :mod:`.server_watch`);
  ``<server pid>/logs-<pid>-<ns>.json``: log lines for the server to store
  (:mod:`.log_spool`).

Imported by the server process too: imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

#: The directory under ``PREFECT_HOME``.
DIR_NAME = "kedro-prefect-api"
#: What the server's command line names (to tell our servers from a recycled PID).
APP_FACTORY = "kedro_prefect.local_api.server_app:create_app"


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
        return try_lock_file(self.path / "start.lock")

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
        write_private(self.path / "server.json", json.dumps(asdict(info)))

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

    def register(self, url: str, pid: int, fingerprint: str, idle_seconds: float) -> None:
        """Make the server at ``url`` the one of this home (once it answers)."""
        from importlib.metadata import version

        info = ServerInfo(
            url, pid, os.getuid(), fingerprint, idle_seconds, version("prefect"), time.time()
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
        write_private(directory / f"client-{pid or os.getpid()}", "")

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
        write_private(directory / f"pending-{os.getpid()}-{time.time_ns()}.json", body)

    def pending(self, server_pid: int) -> list[Path]:
        with contextlib.suppress(OSError):
            return sorted(self.server_dir(server_pid).glob("pending-*.json"))
        return []

    def unfinished(self, server_pid: int) -> list[Path]:
        """Task run states and log lines that runs left the server to record."""
        from kedro_prefect.local_api.log_spool import spooled

        return self.pending(server_pid) + spooled(self.server_dir(server_pid))

    def write_services(self, server_pid: int, names: list[str]) -> None:
        """The background services the server runs (written by the server itself)."""
        directory = self.server_dir(server_pid)
        with contextlib.suppress(OSError):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_private(directory / "services.json", json.dumps(names))

    def services(self, server_pid: int) -> list[str] | None:
        with contextlib.suppress(OSError, ValueError):
            return list(json.loads((self.server_dir(server_pid) / "services.json").read_text()))
        return None

    def set_idle_since(self, server_pid: int, since: float | None) -> None:
        path = self.server_dir(server_pid) / "idle-since"
        with contextlib.suppress(OSError):
            if since is None:
                path.unlink(missing_ok=True)
            else:
                write_private(path, repr(since))

    def idle_since(self, server_pid: int) -> float | None:
        with contextlib.suppress(OSError, ValueError):
            return float((self.server_dir(server_pid) / "idle-since").read_text())
        return None

    def hibernating(self, server_pid: int) -> bool:
        """Whether the server hibernates (:mod:`.hibernate`; its sleeper writes the file)."""
        return (self.server_dir(server_pid) / "hibernating").exists()

    def remove_server_dir(self, server_pid: int) -> None:
        import shutil

        shutil.rmtree(self.server_dir(server_pid), ignore_errors=True)

    def remove_stale_server_dirs(self) -> None:
        """Directories of servers that are gone (killed, say)."""
        with contextlib.suppress(OSError):
            for path in self.path.iterdir():
                if path.is_dir() and path.name.isdigit() and not is_api_server(int(path.name)):
                    self.remove_server_dir(int(path.name))


def write_private(path: Path, text: str) -> None:
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


def try_lock_file(path: Path) -> int | None:
    """An exclusive lock on the file ``path`` (made, private, if missing), as an open file
    descriptor to close to release it; ``None`` if another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
