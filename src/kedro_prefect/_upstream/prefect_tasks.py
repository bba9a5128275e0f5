"""Prefect's task engine: which concurrency slots a node task asks for, and a worker's caches.

Relies on, and buys:

* ``prefect.task_engine._concurrency``: the function the task engine calls to take slots of
  the ``tag:<tag>`` concurrency limits of a task run's tags, limit or no limit. During a run,
  :func:`slots_only_for_limited_tags` filters the names to the tags that have a limit: Kedro
  node tasks are all tagged (namespace, node tags), and each request for *no* limit is a round
  trip, and on SQLite a write transaction that fails with ``SQLITE_BUSY`` under concurrent task
  runs (503, client retries after 2 s, then 4 s). The driver's filter is handed to the node
  tasks it sends to Dask workers and worker processes (:func:`limited_tag_names`,
  :func:`worker_caches`), which filter the same way.
* ``ContextModel.__var__`` of ``SyncClientContext`` and ``run_task_sync(context=...)``: a Dask
  worker (and a worker process of ``task_runner=process``, :mod:`.prefect_pool`) sets its cached
  client context before Prefect hydrates a task's context (:func:`worker_caches`): settings
  built once per worker (~80 ms each) and one client per worker thread, instead of both per task.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Collection, Container, Iterator
from contextvars import ContextVar
from typing import Any

from kedro_prefect._upstream import Contract

CONTRACTS = (
    Contract(
        "prefect.task_engine:_concurrency",
        "ask for concurrency slots only for tags that have a limit (no request per node)",
    ),
    Contract(
        "prefect.context:SyncClientContext.__var__",
        "a Dask worker reuses one API client per thread across node tasks",
    ),
    Contract(
        "prefect.task_engine:run_task_sync",
        "run a node task on a Dask worker with the worker's cached settings and client",
        check=lambda fn: "context" in __import__("inspect").signature(fn).parameters,
    ),
)

# --- concurrency slots -------------------------------------------------------------------------

#: Names of the ``tag:<tag>`` limits that exist for the run in this context; None outside runs.
_LIMITED: ContextVar[Container[str] | None] = ContextVar("kedro_prefect_tag_limits", default=None)
_install_lock = threading.Lock()


@contextlib.contextmanager
def slots_only_for_limited_tags(limited: Container[str]) -> Iterator[None]:
    """In this context, node task runs ask for slots of the ``limited`` tag limits only.

    Limits are enforced exactly as before for tags that have one; a limit created while a run
    is going applies from the next run. Outside a run, and for other Prefect code of the same
    process, the task engine is unchanged.
    """
    if not _install_concurrency_filter():
        yield
        return
    token = _LIMITED.set(limited)
    try:
        yield
    finally:
        _LIMITED.reset(token)


def limited_tag_names() -> frozenset[str] | None:
    """The limited tags of the run in this context, for a node task sent to another process
    (it filters the same way there, :func:`worker_caches`); ``None`` outside runs. Waits for
    the limits if they are still being read (the run's first node task)."""
    limited = _LIMITED.get()
    if limited is None:
        return None
    if isinstance(limited, frozenset):
        return limited
    if isinstance(limited, Collection):
        return frozenset(limited)
    return None  # a container that cannot list them: the other process asks for every tag


def _install_concurrency_filter() -> bool:
    """Wrap the task engine's ``_concurrency`` (once); False if this Prefect has none."""
    from prefect import task_engine

    with _install_lock:
        original = getattr(task_engine, "_concurrency", None)
        if original is None:
            return False
        if getattr(original, "_kedro_prefect_filters_tags", False):
            return True

        def concurrency(names: Any, *args: Any, **kwargs: Any) -> Any:
            limited = _LIMITED.get()
            if limited is not None and isinstance(names, list):
                names = [name for name in names if name in limited]
            return original(names, *args, **kwargs)

        concurrency._kedro_prefect_filters_tags = True  # type: ignore[attr-defined]
        task_engine._concurrency = concurrency
        return True


# --- node tasks in worker processes ---------------------------------------------------------------

#: Prefect settings rebuilt on this worker, by their key (few: one per API in use).
_worker_settings: dict[str, Any] = {}
#: Per worker thread: an open Prefect API client context for each of those settings.
_worker_clients = threading.local()
_worker_cache_lock = threading.Lock()


def settings_key(serialized: dict[str, Any]) -> str:
    """A stable text naming serialized Prefect settings.

    Prefect < 3.8.2 serializes settings with ``Setting`` objects as keys, which ``json`` refuses
    as keys; they are named by their text here.
    """
    return json.dumps(_with_text_keys(serialized), sort_keys=True, default=str)


def _with_text_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(getattr(k, "name", k)): _with_text_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_with_text_keys(item) for item in value]
    return value


def run_task_with_worker_caches(
    context: dict[str, Any],
    key: str | None,
    run_task_kwargs: dict[str, Any],
    limited: frozenset[str] | None = None,
) -> Any:
    """Prefect's ``run_task_sync`` with this worker's cached settings and API client.

    Each task carries the driver's Prefect settings. For every task, Prefect would rebuild a
    settings model from them (~80 ms) and open two API clients (~30 ms each); here the settings
    are built once per worker process and the client once per worker thread, and both are in
    place before Prefect hydrates the rest of the task's context, so it reuses them.
    ``limited``: the run's limited tags (:func:`limited_tag_names`), the only ones the task
    asks slots for.
    """
    from prefect.task_engine import run_task_sync

    with worker_caches(context, key, limited) as context:
        return run_task_sync(context=context, **run_task_kwargs)


@contextlib.contextmanager
def worker_caches(
    context: dict[str, Any], key: str | None = None, limited: frozenset[str] | None = None
) -> Iterator[dict[str, Any]]:
    """The settings and API client context of this worker for a task's serialized ``context``,
    in place; yields the context for Prefect to hydrate the rest of (without the settings).
    ``key`` names the settings (:func:`settings_key`, computed here when not given);
    ``limited``: the run's limited tags, the only ones the task asks slots for (``None``:
    every tag, as Prefect does)."""
    with (
        slots_only_for_limited_tags(limited) if limited is not None else contextlib.nullcontext(),
        _cached_settings_and_client(context, key) as context,
    ):
        yield context


@contextlib.contextmanager
def _cached_settings_and_client(
    context: dict[str, Any], key: str | None
) -> Iterator[dict[str, Any]]:
    from prefect.context import SettingsContext, SyncClientContext

    serialized = context.get("settings_context")
    if not serialized:
        yield context
        return
    key = key or settings_key(serialized)
    with _worker_cache_lock:
        built = _worker_settings.get(key)
        if built is None:
            if len(_worker_settings) >= 8:
                _worker_settings.clear()
            built = _worker_settings[key] = SettingsContext(**serialized)
    with SettingsContext(profile=built.profile, settings=built.settings):
        clients = _worker_clients.__dict__.setdefault("by_settings", {})
        client_context = clients.get(key)
        if client_context is None:
            client_context = SyncClientContext()
            client_context.__enter__()  # opened once; used by this worker thread's tasks
            clients[key] = client_context
        token = SyncClientContext.__var__.set(client_context)
        try:
            yield {**context, "settings_context": {}}
        finally:
            SyncClientContext.__var__.reset(token)
