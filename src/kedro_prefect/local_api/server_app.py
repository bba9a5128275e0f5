"""The app factory served by the ephemeral API process (``python -m uvicorn --factory``).

It is Prefect's own server app, what Prefect's ``SubprocessASGIServer`` serves, built by
:func:`kedro_prefect._upstream.prefect_server.build_api_app` with three patches (see there).

Its start-up is cheaper than Prefect's own. Building the app leaves ~420,000 objects tracked by
CPython's collector (Prefect's modules, models and routes), and the allocations trigger four to
six full collections on the way, each traversing all that exist by then; the first flow run
waits for the next. Here the collector is paused while the app is built and the app's objects
are frozen (``gc.freeze``: later collections skip them): on a 2-core machine the server answered
after 2.3 s instead of 3.1 s, and its first flow run took 0.03 s instead of 0.22 s.

It runs only the background services a local run needs (:data:`.launch.LOCAL_SERVICES_ENV`) and
says which in its state directory (``kedro prefect api status``).

It also stops itself once no run uses it any more (:mod:`.server_watch`):
the process that launched it and the runs that reuse it are gone (also after ``kill -9``), the
task run states they sent are recorded and the idle time has passed. Idle for a shorter while,
it hibernates (:mod:`.hibernate`). When launched before the
driver knew whether the run needs it (:data:`SPECULATIVE_ENV`), it exits with
:data:`NOT_NEEDED_EXIT_CODE` before touching the database if Prefect's settings name an API URL
(a profile, ``prefect.toml``).

This module is imported by the driver too (for its constants): it imports nothing heavy.
"""

from __future__ import annotations

import atexit
import gc
import os
from typing import Any

#: Set by :mod:`.launch`: the process that launched this server.
PARENT_PID_ENV = "KEDRO_PREFECT_EPHEMERAL_PARENT_PID"
#: Set when the server was launched before the driver imported Prefect's settings.
SPECULATIVE_ENV = "KEDRO_PREFECT_EPHEMERAL_SPECULATIVE"
#: Set by the launcher: the ``PREFECT_HOME`` and port of this server.
HOME_ENV = "KEDRO_PREFECT_EPHEMERAL_HOME"
PORT_ENV = "KEDRO_PREFECT_EPHEMERAL_PORT"
#: Exit code of a speculative launch whose settings name an API URL: no ephemeral API needed.
NOT_NEEDED_EXIT_CODE = 4


def create_app() -> Any:
    """uvicorn factory: Prefect's API app for an ephemeral server (see the module docstring)."""
    if os.environ.get(SPECULATIVE_ENV):
        from prefect.settings import get_current_settings

        if get_current_settings().api.url:
            raise SystemExit(NOT_NEEDED_EXIT_CODE)
    _watch_use()
    gc.disable()
    try:
        from kedro_prefect._upstream.prefect_server import build_api_app

        app = build_api_app()
    finally:
        gc.freeze()
        gc.enable()
    _record_services()
    return app


def _record_services() -> None:
    """Write the background services this server runs where ``kedro prefect api status`` reads."""
    home = os.environ.get(HOME_ENV)
    if not home:
        return
    from pathlib import Path

    from kedro_prefect._upstream.prefect_server import background_services
    from kedro_prefect.local_api.state import StateDir

    StateDir(Path(home)).write_services(os.getpid(), background_services())


def _watch_use() -> None:
    """Stop once unused (:mod:`.server_watch`); tidy up the state files at exit."""
    home = os.environ.get(HOME_ENV)
    if not home:
        return
    from pathlib import Path

    from kedro_prefect.local_api.hibernate import (
        can_hibernate,
        exec_if_requested,
        hibernate_seconds,
        keep_environment,
    )
    from kedro_prefect.local_api.lingering import idle_seconds
    from kedro_prefect.local_api.server_watch import start_watch
    from kedro_prefect.local_api.state import StateDir

    parent = os.environ.get(PARENT_PID_ENV, "")
    port = os.environ.get(PORT_ENV, "")
    state = StateDir(Path(home))
    pid = os.getpid()

    keep_environment()

    def tidy() -> None:
        exec_if_requested()  # hibernating: becomes the sleeper, same PID
        state.remove_server(pid)
        state.remove_server_dir(pid)

    atexit.register(tidy)
    start_watch(
        Path(home),
        int(parent) if parent.isdigit() else None,
        idle_seconds(),
        int(port) if port.isdigit() else None,
        hibernate_after=hibernate_seconds() if can_hibernate() else 0.0,
    )
