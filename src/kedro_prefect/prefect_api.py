"""Which Prefect API a run reports to, and the Prefect settings in force during a run.

* ``PREFECT_API_URL`` set: runs report to that server (self-hosted or Prefect Cloud).
* Not set: Prefect's ephemeral API, a local server process on 127.0.0.1 storing its SQLite
  database under ``PREFECT_HOME``. It is started once per Python process, in the driver, and its
  URL is put into the settings of the run, so every task (also on Dask workers) talks to that
  one server instead of starting its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def configured_api_url() -> str | None:
    """``PREFECT_API_URL`` as Prefect's settings see it (env, profile or ``.env``)."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def ephemeral_api_url() -> str:
    """Start (once per process) Prefect's ephemeral API server and return its URL."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings

    from kedro_prefect.cancellation import start_ephemeral_server

    server = SubprocessASGIServer()
    if not server.running:
        # The server process inherits the settings in force when it starts: no analytics
        # (they try to reach the internet and fight the first migration for the SQLite lock).
        with temporary_settings({PREFECT_SERVER_ANALYTICS_ENABLED: False}):
            server = start_ephemeral_server()  # detached from Ctrl-C, dies with this process
    return server.api_url


@contextmanager
def prefect_run_settings() -> Iterator[str]:
    """Prefect settings for one pipeline run; yields the API URL in use.

    The flow run heartbeat is turned off: Kedro runs are driven by ``kedro run`` in the
    foreground, and a synchronous flow run otherwise waits ~1 s at the end for the heartbeat
    thread to join.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    api_url = configured_api_url() or ephemeral_api_url()
    with temporary_settings({PREFECT_API_URL: api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield api_url
