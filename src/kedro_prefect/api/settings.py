"""The Prefect settings and API client in force during one pipeline run.

* ``PREFECT_API_URL`` set: runs report to that server (self-hosted or Prefect Cloud).
* Not set: the local ephemeral API (:mod:`kedro_prefect.local_api`), launched as soon as the
  runner is constructed (:func:`start_ephemeral_api_early`), whose URL is put into the settings
  of the run, so every task (also on Dask workers) talks to that one server.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kedro_prefect.api.health import configured_api_url, plain_http_ssl_context
from kedro_prefect.local_api import EPHEMERAL_API, hibernate_seconds, idle_seconds

logger = logging.getLogger(__name__)


def start_ephemeral_api_early() -> None:
    """Launch the ephemeral API in the background if this run will need it.

    Called when a ``PrefectRunner`` is constructed, so the server starts while Kedro creates the
    session and loads the catalog -- before this process imports Prefect, when it has not yet.
    Does nothing when ``PREFECT_API_URL`` is configured.
    """
    idle_seconds()  # a bad KEDRO_PREFECT_API_IDLE_SECONDS fails here, before anything
    hibernate_seconds()  # and a bad KEDRO_PREFECT_API_HIBERNATE_SECONDS
    launched = EPHEMERAL_API.start_before_prefect_import()
    if configured_api_url():
        if launched:
            EPHEMERAL_API.not_needed()
    elif not launched:
        EPHEMERAL_API.start()


def expect_recorded(states: dict[Any, Any]) -> None:
    """Have ``states`` (task run id -> final state type) recorded before the ephemeral API stops.

    Does nothing when the run reported to a server given by ``PREFECT_API_URL``: that server
    keeps running and records them.
    """
    from prefect.settings import get_current_settings

    if states and EPHEMERAL_API.running and get_current_settings().api.url == EPHEMERAL_API.url:
        EPHEMERAL_API.expect_final_states(states)


@contextmanager
def prefect_run_settings() -> Iterator[str]:
    """Prefect settings for one pipeline run; yields the API URL in use.

    The flow run heartbeat is turned off: Kedro runs are driven by ``kedro run`` in the
    foreground, and a synchronous flow run otherwise waits ~1 s at the end for the heartbeat
    thread to join.
    """
    from prefect.context import SettingsContext, get_settings_context

    context = get_settings_context()
    api_url = configured_api_url()
    if api_url is None:
        EPHEMERAL_API.start()  # launched already, normally: its URL is known before it answers
        _settings_for_run(context.settings, EPHEMERAL_API.url)  # made while it starts
        api_url = EPHEMERAL_API.wait()
        _hand_logs_to(EPHEMERAL_API)
    settings = _settings_for_run(context.settings, api_url)
    _events_go_to(api_url)
    with SettingsContext(profile=context.profile, settings=settings):
        if api_url != EPHEMERAL_API.url:
            _hand_run_to_courier(api_url)
        yield api_url


def _hand_run_to_courier(api_url: str) -> None:
    """The run's log lines for a server go to a courier process (:mod:`.log_courier`)."""
    from kedro_prefect.api.log_courier import hand_run_to_courier

    try:
        hand_run_to_courier(api_url)
    except Exception:  # then Prefect sends them, as it does without this
        logger.debug("Could not hand the log lines to a courier", exc_info=True)


def _hand_logs_to(api: Any) -> None:
    """Log lines for the ephemeral API go to its server as files (``local_api.log_spool``)."""
    from kedro_prefect.local_api import hand_logs_to_server

    if api.pid is not None:
        hand_logs_to_server(api.url, api.state_dir().server_dir(api.pid))


def _settings_for_run(current: Any, api_url: str) -> Any:
    """``current`` with ``api_url`` and no flow run heartbeat, kept for the next run.

    What ``prefect.settings.temporary_settings`` does, but building the settings validates
    every setting again (~80-120 ms), so they are made once per API URL and process.
    """
    from kedro_prefect._upstream.prefect import without_flow_heartbeat

    cached = _run_settings.get(api_url)
    if cached is not None and cached[0] is current:
        return cached[1]
    settings = without_flow_heartbeat(current, api_url)
    _run_settings[api_url] = (current, settings)
    return settings


#: API URL -> (the settings a run's settings were derived from, the run's settings).
_run_settings: dict[str, tuple[Any, Any]] = {}


@contextmanager
def run_client(api_url: str) -> Iterator[Any]:
    """One Prefect API client for everything a run sends from this process.

    Prefect otherwise opens a client for the flow run and another for each helper that asks for
    one, and each new client builds an SSL context from certifi's bundle (~30 ms) even for an
    ``http://`` API. For ``http://`` URLs this client gets an SSL context without certificates,
    never used for plain HTTP (and failing verification, rather than skipping it, if a
    response ever redirected to ``https://``). ``https://`` URLs keep Prefect's own TLS set-up.
    """
    if not api_url.startswith("http://"):
        from prefect.context import SyncClientContext

        with SyncClientContext.get_or_create() as context:
            yield context.client
        return
    from kedro_prefect._upstream.prefect import shared_run_client

    with shared_run_client(plain_http_ssl_context()) as client:
        yield client


#: The API that this process's Prefect events worker sends to (``None``: not used yet).
_events_api_url: str | None = None


def _events_go_to(api_url: str) -> None:
    """Make Prefect's events (task run states, artifacts) go to ``api_url``.

    Prefect keeps one events worker per process for any self-hosted API, bound to the URL in
    force when it started: a second run in the same process against another API (a notebook
    switching from the ephemeral API to a server, a test suite) would send its task run states
    to the first one. When the URL changes, the old worker is drained and stopped, and Prefect
    starts a new one for the new URL.
    """
    global _events_api_url
    if _events_api_url not in (None, api_url):
        worker = getattr(sys.modules.get("prefect.events.worker"), "EventsWorker", None)
        if worker is not None:
            try:
                worker.drain_all(timeout=10)
            except Exception:  # the old API may be gone: its events cannot be delivered anyway
                logger.debug("Could not drain the events worker for %s", _events_api_url)
    _events_api_url = api_url
