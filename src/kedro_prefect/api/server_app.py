"""The app factory served by the ephemeral API process (``python -m uvicorn --factory``).

It is Prefect's own server app, what Prefect's ``SubprocessASGIServer`` serves, built by
:func:`kedro_prefect._upstream.prefect_server.build_api_app` with three patches (see there).

Its start-up is cheaper than Prefect's own. Building the app leaves ~420,000 objects tracked by
CPython's collector (Prefect's modules, models and routes), and the allocations trigger four to
six full collections on the way, each traversing all that exist by then; the first flow run
waits for the next. Here the collector is paused while the app is built and the app's objects
are frozen (``gc.freeze``: later collections skip them): on a 2-core machine the server answered
after 2.3 s instead of 3.1 s, and its first flow run took 0.03 s instead of 0.22 s.

It also stops itself when the process that launched it is gone (``kill -9`` of ``kedro run``),
instead of running on as an orphan; and when launched before the driver knew whether the run
needs it (:data:`SPECULATIVE_ENV`), it exits with :data:`NOT_NEEDED_EXIT_CODE` before touching the
database if Prefect's settings name an API URL (a profile, ``prefect.toml``).

This module is imported by the driver too (for its constants): it imports nothing heavy.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from typing import Any

#: Set by :mod:`kedro_prefect.api.ephemeral`: the process that launched this server.
PARENT_PID_ENV = "KEDRO_PREFECT_EPHEMERAL_PARENT_PID"
#: Set when the server was launched before the driver imported Prefect's settings.
SPECULATIVE_ENV = "KEDRO_PREFECT_EPHEMERAL_SPECULATIVE"
#: Exit code of a speculative launch whose settings name an API URL: no ephemeral API needed.
NOT_NEEDED_EXIT_CODE = 4


def _exit_with_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Stop this server (as on Ctrl+C) once the process that launched it is gone.

    The launcher stops the server when it exits normally; this covers the cases where it
    cannot (``kill -9``, a crash), so no orphaned server keeps the port and the database.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="kedro-prefect-parent-watch", daemon=True).start()


def create_app() -> Any:
    """uvicorn factory: Prefect's API app for an ephemeral server (see the module docstring)."""
    if os.environ.get(SPECULATIVE_ENV):
        from prefect.settings import get_current_settings

        if get_current_settings().api.url:
            raise SystemExit(NOT_NEEDED_EXIT_CODE)
    parent = os.environ.get(PARENT_PID_ENV)
    if parent and parent.isdigit():
        _exit_with_parent(int(parent))
    gc.disable()
    try:
        from kedro_prefect._upstream.prefect_server import build_api_app

        return build_api_app()
    finally:
        gc.freeze()
        gc.enable()
