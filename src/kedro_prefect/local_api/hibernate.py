"""Hibernation: an idle lingering local API becomes a process of a few MB until it is used.

The server process of the local API takes ~190 MB (Prefect's server code alone ~160 MB). After
``KEDRO_PREFECT_API_HIBERNATE_SECONDS`` (default :data:`DEFAULT_HIBERNATE_SECONDS`; ``0``:
never) with no run using it and nothing left to record, the watch thread (:mod:`.server_watch`)
asks uvicorn to shut down as on a stop (Prefect's services stop: the event persister writes
what it holds), and at the process's exit, instead of exiting, the process ``execve``'s
:mod:`.sleeper`: same PID, and the listening socket the launcher bound and passed to uvicorn
(``--fd``) stays open, so ``server.json``, the URL and the idle deadline stay valid. The
sleeper execs the server again on that socket as soon as a connection waits on it (a run's
first request waits in the socket's backlog meanwhile, ~2 s); a run that finds it hibernating
connects at once (:func:`wake`), before it imports Prefect itself.

Imported by the server process and the driver: imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Seconds of idle time before the server hibernates; ``0``: never.
HIBERNATE_ENV = "KEDRO_PREFECT_API_HIBERNATE_SECONDS"
DEFAULT_HIBERNATE_SECONDS = 300.0
#: Set by the launcher: the file descriptor of the listening socket (uvicorn's ``--fd``).
FD_ENV = "KEDRO_PREFECT_EPHEMERAL_FD"
#: The sleeper script, run by path (no package import).
SLEEPER = Path(__file__).with_name("sleeper.py")

#: What the process execs at exit once hibernation was asked for (:func:`request`).
_request: dict[str, Any] = {}
_environment: dict[str, str] = {}


def hibernate_seconds(env: Mapping[str, str] = os.environ) -> float:
    """The configured time before an idle server hibernates (``0``: never).

    Raises:
        PrefectRunnerConfigError: The value is not a number of seconds >= 0.
    """
    return seconds_setting(
        env,
        HIBERNATE_ENV,
        DEFAULT_HIBERNATE_SECONDS,
        "how long the idle ephemeral API waits before it hibernates; 0: never",
    )


def seconds_setting(env: Mapping[str, str], name: str, default: float, meaning: str) -> float:
    """The number of seconds >= 0 that ``name`` sets in ``env`` (``default`` if unset).

    Raises:
        PrefectRunnerConfigError: The value is not a number of seconds >= 0.
    """
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        from kedro_prefect.errors import PrefectRunnerConfigError

        raise PrefectRunnerConfigError(
            f"{name}={raw!r} is not a number of seconds >= 0 ({meaning})."
        )
    return value


def can_hibernate() -> bool:
    """Whether this server process may hibernate: launched on a passed socket, setting on."""
    return os.environ.get(FD_ENV, "").isdigit() and hibernate_seconds() > 0


def keep_environment() -> None:
    """Remember the environment the server started with (the sleeper execs it again with it)."""
    _environment.update(os.environ)


def request(state_dir: Path, deadline: float, lock_fd: int | None) -> bool:
    """Shut the server down now and hibernate at exit; ``False``: uvicorn cannot be asked.

    ``lock_fd`` (the start lock) stays held until the ``execve`` closes it: no run finds the
    server while it shuts down.
    """
    from kedro_prefect._upstream.prefect_server import request_exit

    _request.update(
        fd=int(os.environ[FD_ENV]),
        state_dir=str(state_dir),
        deadline=deadline,
        executable=sys.executable,
        lock_fd=lock_fd,
    )
    if not request_exit():
        _request.clear()
        return False
    return True


def exec_if_requested() -> None:
    """At the server process's exit: become the sleeper if hibernation was asked for."""
    if not _request:
        return
    config = {key: _request[key] for key in ("fd", "state_dir", "deadline", "executable")}
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    argv = [sys.executable, "-I", "-S", str(SLEEPER), json.dumps(config), *sys.orig_argv]
    os.execve(sys.executable, argv, _environment or dict(os.environ))


def wake(port: int) -> None:
    """Wake a hibernating server at once: a connection on its socket (closed right away)."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
