"""The hibernating local API: a few MB that hold the server's listening socket (:mod:`.hibernate`).

Run as a script, ``python -I -S sleeper.py CONFIG ARGV...``, by the server process's
``execve`` (same PID, same open listening socket): standard library only, it imports nothing of
kedro-prefect or Prefect. ``CONFIG`` is JSON: the socket's file descriptor, the state directory
(``PREFECT_HOME/kedro-prefect-api``), the epoch second the idle time ends; ``ARGV`` is the
server's own command line, which it runs again (``execve``, same environment) when:

* a connection waits on the socket (a run, or anything else, calls the API): the server starts
  on the same socket and accepts it; the client's request waits in the socket's backlog;
* a run left it task run states or log lines to record (``pending-*``/``logs-*`` files).

It exits, tidying the state files as the server does, on SIGTERM/SIGINT (``kedro prefect api
stop``), when its ``PREFECT_HOME`` is gone, when a newer server replaced it in ``server.json``,
and when the idle time ends with no run using it (under the start lock, as the server).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import selectors
import shutil
import signal
import sys
import time
from typing import Any

#: Seconds between looks at the state files while nothing connects.
CHECK_SECONDS = 5.0
#: The file that says the server hibernates (``kedro prefect api status``).
MARK = "hibernating"


class _Stop(Exception):
    pass


def _stop(signum: int, frame: object) -> None:
    raise _Stop


def _registered_pid(state_dir: str) -> int | None:
    try:
        with open(os.path.join(state_dir, "server.json")) as file:
            return int(json.load(file)["pid"])
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _names(server_dir: str) -> list[str]:
    try:
        return os.listdir(server_dir)
    except OSError:
        return []


def _live_clients(server_dir: str) -> list[str]:
    return [
        name
        for name in _names(server_dir)
        if name.startswith("client-") and name[7:].isdigit() and _alive(int(name[7:]))
    ]


def _unfinished(server_dir: str) -> bool:
    return any(
        name.endswith(".json") and name.startswith(("pending-", "logs-"))
        for name in _names(server_dir)
    )


def _try_stop(state_dir: str, server_dir: str, me: int) -> bool:
    """At the end of the idle time: stop unless a run is finding or using this server."""
    try:
        fd = os.open(os.path.join(state_dir, "start.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    try:
        if _live_clients(server_dir):
            return False
        _tidy(state_dir, server_dir, me)
        return True
    finally:
        os.close(fd)


def _tidy(state_dir: str, server_dir: str, me: int) -> None:
    if _registered_pid(state_dir) == me:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(state_dir, "server.json"))
    shutil.rmtree(server_dir, ignore_errors=True)


def main(argv: list[str]) -> int:
    config = json.loads(argv[1])
    server_argv = argv[2:]
    fd, state_dir, deadline = config["fd"], config["state_dir"], float(config["deadline"])
    me = os.getpid()
    server_dir = os.path.join(state_dir, str(me))
    mark = os.path.join(server_dir, MARK)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    try:
        with open(mark, "w") as file:
            file.write(repr(time.time()))
        while True:
            replaced = not os.path.isdir(state_dir) or _registered_pid(state_dir) != me
            if replaced and not _live_clients(server_dir):
                break  # its home is gone, or a newer server replaced it: no run finds it
            if _unfinished(server_dir):
                _wake(mark, server_argv, config)
            now = time.time()
            if now >= deadline and _try_stop(state_dir, server_dir, me):
                return 0
            timeout = min(CHECK_SECONDS, max(0.05, deadline - now))
            if selector.select(timeout):
                _wake(mark, server_argv, config)
    except _Stop:
        pass
    _tidy(state_dir, server_dir, me)
    return 0


def _wake(mark: str, server_argv: list[str], config: dict[str, Any]) -> None:
    """Become the full server again: same PID, same socket, same environment."""
    with contextlib.suppress(OSError):
        os.unlink(mark)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.execv(config["executable"], server_argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
