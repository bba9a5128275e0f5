"""Test set-up shared by unit and integration tests.

Every test runs with Kedro telemetry off, no tracking, a temporary ``PREFECT_HOME`` and no
``PREFECT_API_URL`` (so Prefect's ephemeral API is used, started once per test session by the
runner and shared by all tests) and no lingering ephemeral API
(``KEDRO_PREFECT_API_IDLE_SECONDS=0``). Nothing reaches outside this machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Before anything imports prefect or kedro: settings are read from the environment.
_PREFECT_HOME = tempfile.mkdtemp(prefix="kedro-prefect-tests-")
os.environ.update(
    {
        "KEDRO_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "PREFECT_HOME": _PREFECT_HOME,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        # No ephemeral API lingers after the suite (tests of lingering turn it on for theirs).
        "KEDRO_PREFECT_API_IDLE_SECONDS": "0",
    }
)
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_PROFILES_PATH", None)

import signal  # noqa: E402

import pytest  # noqa: E402

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # A suite started in the background of a shell without job control ignores Ctrl-C, and the
    # processes the tests start (and stop with SIGINT, as a user's Ctrl-C) would inherit that.
    signal.signal(signal.SIGINT, signal.default_int_handler)

from tests.helpers import PrefectServer, copy_example_project  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _no_project_left_configured():
    """A module that bootstraps a Kedro project in this process leaves no project configured
    for the next modules: runners built outside a session would register that project's hooks
    on their worker processes (as Kedro's ParallelRunner does for the configured project)."""
    import kedro.framework.project as project

    before = project.PACKAGE_NAME
    yield
    project.PACKAGE_NAME = before


def pytest_sessionfinish(session, exitstatus):
    """Stop the ephemeral Prefect API the runner started, while pytest can still log."""
    from kedro_prefect.local_api import EPHEMERAL_API

    EPHEMERAL_API.shutdown()
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


@pytest.fixture
def example_project(tmp_path: Path) -> Path:
    """A fresh copy of ``examples/sales_demo`` with no outputs yet."""
    return copy_example_project(tmp_path / "sales_demo")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> PrefectServer:
    """``prefect server start`` on 127.0.0.1 (free port, own PREFECT_HOME), stopped by PID."""
    server = PrefectServer(tmp_path_factory.mktemp("prefect-server-home"))
    server.start()
    yield server
    # Deliver what this process still queues for that server (events, logs) before it goes.
    from kedro_prefect.local_api import drain_prefect_workers

    drain_prefect_workers(timeout=10)
    server.stop()


@pytest.fixture(scope="session")
def scheduling_server(tmp_path_factory) -> PrefectServer:
    """Another ``prefect server start`` whose scheduler creates runs every second (by PID)."""
    server = PrefectServer(
        tmp_path_factory.mktemp("prefect-scheduling-server"),
        env={"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1"},
    )
    server.start()
    yield server
    server.stop()
