"""Prefect (client side): the task engine, the client context, run settings, logging set-up.

Relies on, and buys:

* ``SyncClientContext._httpx_settings``: a client context hands its client only to callers
  asking with the same httpx settings. :func:`shared_run_client` opens one client per run with
  an SSL context that loads no CA certificates for ``http://`` APIs (~30 ms per client) and
  clears the attribute, so the flow engine and helpers asking with none get that one client.
* ``prefect.logging.configuration.PROCESS_LOGGING_CONFIG`` and the import of ``prefect.main``,
  which sets Prefect's logging up once per process (:func:`set_up_prefect_logging_once`).
* The ``flows.heartbeat_frequency`` setting (Prefect >= 3.6.13): turned off for runs driven by
  ``kedro run`` in the foreground (a synchronous flow run otherwise waits ~1 s at its end).
* ``Runner.add_deployment`` asks the deployment it is given for its id with ``apply()`` (Prefect
  < 3.6: awaited) or ``aapply()`` and reads its ``name`` and ``storage``:
  ``kedro prefect serve`` (:mod:`.prefect_deploy`) hands it deployments that exist on the server
  already (``_Deployed``), so serving runs
  them exactly as deployed instead of re-creating them (``prefect.serve`` re-applies what it gets).
* ``upsert_global_concurrency_limit_by_name`` of the client: Prefect 3.6.10 to 3.6.12 send
  ``slot_decay_per_second: null`` (422 on create, 409 on update); there the limit is created or
  updated without that field (:func:`upsert_global_concurrency_limit`).
* ``APILogWorker._handle_batch(items)`` sends one batch of log lines with the worker's API client
  (``_client``): :func:`route_api_log_batches` hands the batches for the ephemeral API to files
  instead (:mod:`kedro_prefect.local_api.log_spool`), so a run exits without waiting for the busy
  server to store its last lines.
* Prefect's queue services (the events and API log workers) drain at interpreter exit from
  ``threading._register_atexit`` hooks, which run last-registered first:
  :func:`before_prefect_exit_drains` registers a hook after them that runs before their drains
  (the last log lines of a run against a server go to files, :mod:`kedro_prefect.api.log_courier`).
* ``prefect.context.GLOBAL_SETTINGS_CONTEXT``: the settings the process loaded at import
  (environment, profile, ``prefect.toml``). :func:`settings_overrides` passes on to the local
  API server only what is in force beyond them (``temporary_settings``), so that a server
  launched before or after this process imports Prefect gets the same environment and is
  reused by both kinds of run.
* ``result_storage`` of a flow: a ``pathlib.Path`` names local storage from Prefect 3.6.5 on;
  before, only a ``str`` block slug or a saved block is accepted, and the flow keeps Prefect's
  default there (:func:`local_result_storage`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from kedro_prefect._upstream import Contract, version_at_least

_install_lock = threading.Lock()

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient


def _has_heartbeat_setting() -> bool:
    return version_at_least("prefect", 3, 6, 13)


CONTRACTS = (
    Contract(
        "prefect.logging.handlers:APILogWorker._handle_batch",
        "log lines for the local ephemeral API go to files its server stores (no wait at exit)",
        check=lambda fn: list(__import__("inspect").signature(fn).parameters) == ["self", "items"],
    ),
    Contract(
        "prefect._internal.concurrency.services:_QueueServiceBase._instances",
        "at exit, the log lines still queued for a server go to the courier in one file",
    ),
    Contract(
        "prefect._internal.concurrency.services:QueueService._at_exit",
        "Prefect's workers drain at thread shutdown, last registered first: later hooks run first",
    ),
    Contract(
        "prefect.context:SyncClientContext",
        "one API client per run, without loading CA certificates for http:// APIs",
        check=lambda cls: "_httpx_settings" in getattr(cls, "__private_attributes__", {}),
    ),
    Contract(
        "prefect.logging.configuration:PROCESS_LOGGING_CONFIG",
        "set Prefect's logging up once per process, keeping the project's root handlers",
    ),
    Contract(
        "prefect.runner:Runner.add_deployment",
        "serve deployments as they are on the server, without re-applying them",
        check=lambda fn: _registers_by_apply(),
    ),
    Contract(
        "prefect.settings:PREFECT_FLOWS_HEARTBEAT_FREQUENCY",
        "no flow run heartbeat thread (~1 s at the end of every run)",
        expected=_has_heartbeat_setting,
    ),
    Contract(
        "prefect.context:GLOBAL_SETTINGS_CONTEXT",
        "one local API server for runs launched before and after Prefect's import",
        check=lambda context: hasattr(context, "settings"),
    ),
)


def settings_overrides() -> dict[str, str]:
    """The settings in force in this process that differ from those it loaded at import
    (environment, profile, ``prefect.toml``), as environment variables: those set by
    ``temporary_settings``; ``{}`` outside them."""
    import prefect.context
    from prefect.settings import get_current_settings

    current = get_current_settings()
    loaded = prefect.context.GLOBAL_SETTINGS_CONTEXT.settings
    if current is loaded:
        return {}
    base = loaded.to_environment_variables(exclude_unset=True)
    return {
        name: value
        for name, value in current.to_environment_variables(exclude_unset=True).items()
        if base.get(name) != value
    }


# --- the API client of a run ---------------------------------------------------------------------


@contextlib.contextmanager
def shared_run_client(ssl_context: Any) -> Iterator[Any]:
    """A ``SyncClientContext`` whose client every caller in this context shares.

    ``get_client()`` hands a context's client only to callers asking with the same settings:
    with ``_httpx_settings`` cleared, callers asking with none (the flow engine, artifacts,
    result storage) get this one.
    """
    from prefect.context import SyncClientContext

    context = SyncClientContext(httpx_settings={"verify": ssl_context})
    context._httpx_settings = None
    with context:
        yield context.client


# --- logging -------------------------------------------------------------------------------------


def set_up_prefect_logging_once() -> bool:
    """Have Prefect set its logging up in this process; ``False`` if it already had.

    Importing ``prefect.main`` sets it up (calling ``setup_logging`` first would only make that
    import set it up a second time, ~60 ms each); a Prefect whose ``prefect.main`` does not is
    set up explicitly.
    """
    from prefect.logging import configuration

    if configuration.PROCESS_LOGGING_CONFIG:
        return False
    import prefect.main  # noqa: F401  (sets Prefect's logging up on first import)

    if not configuration.PROCESS_LOGGING_CONFIG:
        configuration.setup_logging()
    return True


#: Takes (API URL, batch of log lines) and returns True if it took the batch; see below.
_log_route: list[Callable[[str, list[Any]], bool]] = []


def route_api_log_batches(route: Callable[[str, list[Any]], bool]) -> None:
    """Offer each batch of Prefect's API log worker to ``route`` first; POST it only if refused.

    ``route`` gets the URL of the API the worker sends to and the batch (JSON bytes of a
    ``LogCreate`` each from Prefect 3.7, dicts before); it runs on Prefect's event loop thread.
    Installed once per process; a later call replaces the route.
    """
    from prefect.logging.handlers import APILogWorker

    with _install_lock:
        _log_route[:] = [route]
        original = APILogWorker._handle_batch
        if getattr(original, "_kedro_prefect_routes", False):
            return

        async def _handle_batch(self: Any, items: list[Any]) -> None:
            client = getattr(self, "_client", None)
            url = str(getattr(client, "api_url", "") or "")
            if url and _log_route and _log_route[0](url, items):
                return
            await original(self, items)

        _handle_batch._kedro_prefect_routes = True  # type: ignore[attr-defined]
        APILogWorker._handle_batch = _handle_batch  # type: ignore[method-assign]


def take_queued_api_logs(api_urls: set[str]) -> dict[str, list[Any]]:
    """The log lines queued in Prefect's API log workers for ``api_urls``, taken out of their
    queues (API URL -> lines, in the order they were logged).

    The worker hands out queued lines one by one (~1 ms each on a busy machine: ~1 s for the
    1,000 lines a big run still queues at exit); taken here they go to one file at once. What a
    worker already holds in its current batch stays with it.
    """
    import queue as queue_module

    from prefect._internal.concurrency.services import _QueueServiceBase
    from prefect.logging.handlers import APILogWorker

    taken: dict[str, list[Any]] = {}
    instances: dict[Any, Any] = getattr(_QueueServiceBase, "_instances", {})
    for worker in list(instances.values()):
        client = getattr(worker, "_client", None)
        url = str(getattr(client, "api_url", "") or "").rstrip("/")
        if not isinstance(worker, APILogWorker) or url not in api_urls:
            continue
        items = taken.setdefault(url, [])
        while True:
            try:
                item = worker._queue.get_nowait()
            except queue_module.Empty:
                break
            worker._queue.task_done()
            if item is None:  # the worker's stop signal: give it back, after the lines
                worker._queue.put_nowait(None)
                break
            items.append(item)
    return {url: items for url, items in taken.items() if items}


def before_prefect_exit_drains(hook: Callable[[], None]) -> None:
    """Run ``hook`` at interpreter exit before the drains of Prefect's workers started so far.

    Prefect's queue services register their drain with ``threading._register_atexit`` when they
    start; those hooks run at thread shutdown (before ``atexit``), last registered first.
    """
    threading._register_atexit(hook)  # type: ignore[attr-defined]


# --- settings ------------------------------------------------------------------------------------


def without_flow_heartbeat(current: Any, api_url: str) -> Any:
    """``current`` settings with ``api_url`` and no flow run heartbeat (where Prefect has one)."""
    from prefect.settings import PREFECT_API_URL

    heartbeat = _has_heartbeat_setting()
    if current.api.url == api_url:
        if not heartbeat:
            return current
        # Only the heartbeat changes: copy without validating every setting again (~50 ms).
        flows = current.flows.model_copy(update={"heartbeat_frequency": None})
        return current.model_copy(update={"flows": flows})
    updates: dict[Any, Any] = {PREFECT_API_URL: api_url}
    if heartbeat:
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

        updates[PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None
    return current.copy_with_update(updates=updates)


def local_result_storage() -> dict[str, Any]:
    """``flow(...)`` keyword naming local result storage, where Prefect accepts a path.

    Naming it spares the flow engine reading the server's default result storage twice per
    flow run. Before Prefect 3.6.5 a path is refused (a block would have to be saved first):
    the flow keeps Prefect's default there.
    """
    if not version_at_least("prefect", 3, 6, 5):
        return {}
    from pathlib import Path

    from prefect.settings import get_current_settings

    return {"result_storage": Path(get_current_settings().results.local_storage_path)}


# --- serving deployed deployments ----------------------------------------------------------------


def _registers_by_apply() -> bool:
    """Whether ``Runner`` registers a deployment as :class:`_Deployed` offers it: its id from
    ``apply``/``aapply``, then its name and storage (nothing sent to an API)."""
    import asyncio
    import inspect
    import uuid

    from prefect.runner import Runner
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deployment_id = uuid.uuid4()
    # Runner() makes API clients (Prefect < 3.6 at once): a URL, so that none starts a server;
    # registering a deployment sends nothing.
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        runner = Runner(name="kedro-prefect-contract-probe")
        add = getattr(runner, "aadd_deployment", None) or runner.add_deployment
        got = add(cast(Any, _Deployed(deployment_id, "probe", "probe-flow")))  # < 3.6: sync
        if inspect.isawaitable(got):
            got = asyncio.run(got)  # type: ignore[arg-type]
    return bool(got == deployment_id)


class _Deployed:
    """A deployment that exists on the server, as ``Runner.add_deployment`` takes it."""

    def __init__(self, deployment_id: Any, name: str, flow_name: str):
        self.id = deployment_id
        self.name = name
        self.flow_name = flow_name
        self.work_pool_name = None
        self.storage = None

    async def apply(self, *args: Any, **kwargs: Any) -> Any:
        return self.id

    async def aapply(self, *args: Any, **kwargs: Any) -> Any:
        return self.id


def upsert_global_concurrency_limit(client: SyncPrefectClient, name: str, limit: int) -> None:
    """``client.upsert_global_concurrency_limit_by_name(name, limit)`` (a sync client).

    Prefect 3.6.10 to 3.6.12 send ``slot_decay_per_second: null`` when they create a limit (the
    server answers ``422 Unprocessable Entity``) or change one (``409 Conflict``: the column is
    NOT NULL); fixed in 3.6.13. There the limit is created or updated here without that field.
    """
    if not (version_at_least("prefect", 3, 6, 10) and not version_at_least("prefect", 3, 6, 13)):
        client.upsert_global_concurrency_limit_by_name(name, limit)
        return
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    try:
        existing = client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
        return
    if existing.limit != limit:
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=limit))
