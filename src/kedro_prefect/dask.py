"""Running node tasks on a Dask cluster (``task_runner=dask``).

What happens, in order:

1. :func:`dask_task_runner` builds a ``KedroDaskTaskRunner`` (a ``prefect_dask.DaskTaskRunner``)
   that either starts a ``distributed.LocalCluster`` of worker *processes* (closed at the end of the
   run, also when a node fails) or connects to ``address=`` of an existing scheduler (left running).
   An unreachable address fails within :data:`CONNECT_TIMEOUT` seconds, naming the address, before
   any node runs.
2. :class:`DaskNodeExecution` checks the pipeline's datasets before the first node is submitted:
   a dataset that cannot cross process boundaries (``_SINGLE_PROCESS = True`` or not picklable)
   is refused, naming the dataset and the reason.
3. A ``KedroProjectPlugin`` is registered on every worker: it puts the project's ``src``
   directory on ``sys.path``, calls ``configure_project(package_name)`` (as Kedro's
   ``ParallelRunner`` does in its subprocesses), applies the project's log levels and sends log
   records emitted in node tasks to the Prefect API.
4. Each node runs in :func:`run_node_on_worker` on a worker: the hook manager is built there from
   the project's settings (a pluggy ``PluginManager`` cannot be pickled), persisted datasets load
   and save there, and the node's in-memory outputs are the *result* of its task. Consumers receive
   their producers' Dask futures as task parameters, so Dask moves the data worker to worker; the
   driver never loads it. Only the pipeline's free in-memory outputs are fetched to the driver,
   because ``run()`` returns them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import inspect
import ipaddress
import json
import logging
import socket
import sys
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from kedro_prefect.config import PrefectRunnerConfigError
from kedro_prefect.errors import KedroPrefectError

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline
    from kedro.pipeline.node import Node
    from prefect.futures import PrefectFuture

    from kedro_prefect.config import RunnerOptions

logger = logging.getLogger(__name__)

#: Seconds to wait for the scheduler at ``address=`` before giving up.
CONNECT_TIMEOUT = 10.0

#: Node tags ``dask-<RESOURCE>-<amount>`` ask for Dask worker resources, e.g. ``dask-GPU-1``.
#: (Kedro tags may only hold letters, digits, ``-``, ``_`` and ``.``.)
RESOURCE_TAG_PREFIX = "dask-"

_PLUGIN_NAME = "kedro-prefect-project"


class DaskSchedulerUnreachableError(KedroPrefectError, ConnectionError):
    """The Dask scheduler at ``address=`` did not answer; raised before any node runs."""


class DaskDatasetError(KedroPrefectError, ValueError):
    """A dataset of the pipeline cannot be used across processes; raised before any node runs."""


# --- node resources ------------------------------------------------------------------------------


def node_resources(tags: set[str] | frozenset[str]) -> dict[str, float]:
    """Dask worker resources asked for by ``dask-<NAME>-<amount>`` tags.

    Raises:
        PrefectRunnerConfigError: A ``dask-`` tag is not ``dask-<NAME>-<number>``.
    """
    resources: dict[str, float] = {}
    for tag in tags:
        if not tag.startswith(RESOURCE_TAG_PREFIX):
            continue
        name, sep, amount = tag.removeprefix(RESOURCE_TAG_PREFIX).rpartition("-")
        try:
            if not (sep and name):
                raise ValueError
            resources[name] = float(amount)
        except ValueError:
            raise PrefectRunnerConfigError(
                f"node tag {tag!r}: tags starting with 'dask-' ask for Dask worker resources "
                "and must look like dask-<resource>-<amount>, e.g. 'dask-GPU-1' or "
                "'dask-memory-4e9'"
            ) from None
    return resources


# --- the task runner -----------------------------------------------------------------------------


def _prefect_dask() -> Any:
    try:
        import prefect_dask
    except ImportError:  # pragma: no cover - guarded by resolve_task_runner_class
        raise PrefectRunnerConfigError(
            "task_runner=dask needs prefect-dask, dask and distributed: "
            "pip install 'kedro-prefect[dask]'"
        ) from None
    return prefect_dask


@functools.cache
def _task_runner_classes() -> tuple[type, type]:
    """``KedroDaskTaskRunner`` and ``KedroDaskFuture``, defined on first use (imports dask)."""
    import distributed
    from prefect.context import AssetContext, serialize_context
    from prefect.utilities.engine import collect_task_run_inputs_sync
    from prefect_dask.task_runners import DaskTaskRunner, PrefectDaskFuture

    class KedroDaskFuture(PrefectDaskFuture):
        """A Prefect future whose ``wait()``/``state`` never fetch the node's data to the driver.

        The task's result (a Prefect state holding the node's in-memory outputs) stays on the
        worker; a tiny companion Dask task returns the state without its data, and that is what
        the driver waits on. ``result()`` still fetches the full result.
        """

        def __init__(self, wrapped_future: Any, task_run_id: Any, summary: Any):
            super().__init__(wrapped_future=wrapped_future, task_run_id=task_run_id)
            self.summary = summary

        def wait(self, timeout: float | None = None) -> None:
            try:
                state = self.summary.result(timeout=timeout)
            except distributed.TimeoutError:
                return
            except Exception as exc:
                # The task never produced a Prefect state (e.g. the worker could not unpickle
                # it, or it died too often): fail with Dask's error instead of a PENDING state.
                from prefect.states import Failed

                state = Failed(
                    message=(
                        f"Dask could not run the task: {exc!r}. If the scheduler's log shows "
                        "a deserialization error, the scheduler and workers need the same "
                        "packages as the kedro run process."
                    ),
                    data=exc,
                )
            self._final_state = state

        def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
            state = self._wrapped_future.result(timeout=timeout)
            return state.result(raise_on_failure=raise_on_failure, _sync=True)

        def release(self) -> None:
            """Let Dask forget the node's in-memory outputs (no consumer needs them any more)."""
            self._wrapped_future.release()

    class KedroDaskTaskRunner(DaskTaskRunner):
        """``DaskTaskRunner`` that honours ``dask-<RESOURCE>-<n>`` node tags and keeps data off
        the driver (``wait_for`` and completion go through data-less companion futures)."""

        def duplicate(self) -> KedroDaskTaskRunner:
            return type(self)(
                address=self.address,
                cluster_class=self.cluster_class,
                cluster_kwargs=self.cluster_kwargs,
                client_kwargs=self.client_kwargs,
            )

        _context: tuple[dict[str, Any], str] | None = None

        def _run_context(self) -> tuple[dict[str, Any], str]:
            """The Prefect context every task of this run carries, serialized once per run.

            Prefect serializes the settings (hundreds of fields, secrets rendered) and the flow
            run context for each task it submits, ~75 ms of driver CPU per task on a small
            machine, competing with the workers. Within a run both stay the same; only the
            asset context is per task. Also returns a key naming the settings, so that workers
            find the settings they built for it without hashing them again.
            """
            if self._context is None:
                with _light_flow_run_context():
                    context = serialize_context()
                settings = json.dumps(context["settings_context"], sort_keys=True, default=str)
                key = hashlib.sha256(settings.encode()).hexdigest()
                self._context = (context, key)
            return dict(self._context[0]), self._context[1]

        def __exit__(self, *args: Any) -> None:
            # Node log records are sent in the background on the workers; make sure they
            # reached the API before the run ends (one flush per worker, not per task).
            if self._client is not None:
                with contextlib.suppress(Exception):
                    self._client.run(_flush_worker_logs)
            super().__exit__(*args)

        def submit(  # type: ignore[override]
            self,
            task: Any,
            parameters: dict[str, Any],
            wait_for: Any = None,
            dependencies: Any = None,
        ) -> KedroDaskFuture:
            if not self._started:
                raise RuntimeError("The task runner must be started before submitting work.")
            parameters = self._optimize_futures(parameters)
            wait_for = [f.summary if isinstance(f, KedroDaskFuture) else f for f in wait_for or []]
            wait_for = self._optimize_futures(wait_for) or None
            resources = node_resources(set(task.tags)) or None
            task_run_id = uuid.uuid4()
            # What prefect-dask's PrefectDaskClient.submit does, with two differences: the
            # worker runs `run_task_on_worker` (settings built once per worker, not per task),
            # and the Dask key names the node, so the dashboard shows node names.
            task_inputs = {
                name: collect_task_run_inputs_sync(value, future_cls=distributed.Future)
                for name, value in parameters.items()
            }
            context, settings_key = self._run_context()
            context["asset_context"] = AssetContext.from_task_and_inputs(
                task=task, task_run_id=task_run_id, task_inputs=task_inputs, copy_to_child_ctx=True
            ).serialize()
            future = distributed.Client.submit(
                self.client,
                run_task_on_worker,
                key=f"{task.name}-{task_run_id}",
                resources=resources,
                pure=False,
                task=task,
                task_run_id=task_run_id,
                parameters=parameters,
                wait_for=wait_for,
                return_type="state",
                dependencies=task_inputs,
                context=context,
                settings_key=settings_key,
            )
            summary = self.client.submit(
                _without_data, future, pure=False, key=f"state-{future.key}"
            )
            return KedroDaskFuture(wrapped_future=future, task_run_id=task_run_id, summary=summary)

    return KedroDaskTaskRunner, KedroDaskFuture


#: Prefect settings rebuilt on this worker, by their serialized form (few: one per API in use).
_worker_settings: dict[str, Any] = {}
#: Per worker thread: an open Prefect API client context for each of those settings.
_worker_clients = threading.local()
_worker_cache_lock = threading.Lock()


#: Attempts, start and duration of the task runs that ended on this worker, by task run id,
#: until the driver collects them at the end of its run (:func:`take_worker_records`).
_worker_records: dict[Any, Any] = {}
_worker_records_lock = threading.Lock()
MAX_WORKER_RECORDS = 100_000


def take_worker_records(task_run_ids: list[Any]) -> dict[Any, Any]:
    """Remove and return this worker's records of ``task_run_ids`` (run on every worker)."""
    with _worker_records_lock:
        return {i: _worker_records.pop(i) for i in task_run_ids if i in _worker_records}


def run_task_on_worker(
    *, context: dict[str, Any], settings_key: str | None = None, **run_task_kwargs: Any
) -> Any:
    """Prefect's ``run_task_sync`` for a node task on a Dask worker.

    Each task carries the driver's Prefect settings (API URL and all). For every task, Prefect
    rebuilds a settings model from them (pydantic-settings reads the environment and config
    files again, ~80 ms on a small machine) and opens two API clients (~30 ms each, most of it
    loading CA certificates). Here the settings are built once per worker process and the
    client once per worker thread, and both are in place before Prefect hydrates the rest of
    the task's context, so it reuses them. ``settings_key`` names the settings (the driver
    computes it once per run); without it they are looked up by their JSON form.

    The task run's attempts, start, duration and this worker's address are kept on the worker
    for the driver to collect (:func:`take_worker_records`).
    """
    from kedro_prefect.node_execution import ended_task_run, recording_task_runs

    with _worker_records_lock:
        if len(_worker_records) > MAX_WORKER_RECORDS:  # never collected (the driver died)
            _worker_records.clear()
    with recording_task_runs(_worker_records):
        state = _run_task_with_cached_settings(context, settings_key, run_task_kwargs)
    task_run_id = run_task_kwargs.get("task_run_id")
    record = ended_task_run(_worker_records, task_run_id)
    if record is not None:
        _worker_records[task_run_id] = dataclasses.replace(record, worker=_worker_address())
    return state


def _worker_address() -> str | None:
    from distributed import get_worker

    try:
        return get_worker().address
    except ValueError:  # not in a Dask worker
        return None


def _run_task_with_cached_settings(
    context: dict[str, Any], settings_key: str | None, run_task_kwargs: dict[str, Any]
) -> Any:
    from prefect.context import SettingsContext, SyncClientContext
    from prefect.task_engine import run_task_sync

    serialized = context.get("settings_context")
    if not serialized:
        return run_task_sync(context=context, **run_task_kwargs)
    key = settings_key or json.dumps(serialized, sort_keys=True, default=str)
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
            return run_task_sync(context={**context, "settings_context": {}}, **run_task_kwargs)
        finally:
            SyncClientContext.__var__.reset(token)


async def _flush_worker_logs() -> None:
    """Send this worker's queued log records to the Prefect API (run on each worker)."""
    from prefect.logging.handlers import APILogWorker

    result = APILogWorker.drain_all(timeout=10)
    if inspect.isawaitable(result):
        await result


def _flow_stand_in() -> None:
    """The function of the flow object that travels with each task (never called)."""


@contextmanager
def _light_flow_run_context() -> Iterator[None]:
    """Submit tasks with a flow run context whose flow object is a light stand-in.

    prefect-dask pickles the current flow run context, flow object included, into every task.
    The runner's flow function closes over the pipeline, the catalog and the hook manager:
    pickling those per task is slow, and the Dask scheduler (which deserializes task graphs)
    would need the project's code. The stand-in keeps the flow's name and result settings.
    """
    from prefect import Flow
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow is None:
        yield
        return
    flow = context.flow
    stand_in = _stand_ins.get(id(flow))
    if stand_in is None or stand_in.name != flow.name:
        stand_in = Flow(
            _flow_stand_in,
            name=flow.name,
            persist_result=flow.persist_result,
            log_prints=flow.log_prints,
            validate_parameters=False,
        )
        _stand_ins.clear()
        _stand_ins[id(flow)] = stand_in
    with context.model_copy(update={"flow": stand_in}):
        yield


_stand_ins: dict[int, Any] = {}

#: The data of a completed state as the driver sees it: the node's outputs stay on the worker.
DATA_ON_WORKER = "kedro-prefect: in-memory outputs stay on the Dask worker"


def _without_data(state: Any) -> Any:
    """A completed Prefect state without its data (failed states keep their exception)."""
    if getattr(state, "is_completed", None) and state.is_completed():
        return state.model_copy(update={"data": DATA_ON_WORKER})
    return state


def dask_task_runner(options: RunnerOptions) -> Any:
    """The task runner for ``task_runner=dask``: a LocalCluster of processes, or ``address=``.

    Raises:
        DaskSchedulerUnreachableError: ``address=`` did not answer within ``CONNECT_TIMEOUT``.
        PrefectRunnerConfigError: ``address=`` is on another machine while the Prefect API is
            only reachable from this one.
    """
    _prefect_dask()
    runner_cls, _ = _task_runner_classes()
    if options.address:
        from prefect.settings import get_current_settings

        check_api_reachable_from(options.address, str(get_current_settings().api.url))
        check_scheduler_reachable(options.address)
        return runner_cls(address=options.address, client_kwargs={"timeout": f"{CONNECT_TIMEOUT}s"})
    cluster_kwargs: dict[str, Any] = {"processes": True}
    if options.n_workers is not None:
        cluster_kwargs["n_workers"] = options.n_workers
    if options.threads_per_worker is not None:
        cluster_kwargs["threads_per_worker"] = options.threads_per_worker
    return runner_cls(cluster_class="distributed.LocalCluster", cluster_kwargs=cluster_kwargs)


def check_scheduler_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Open (and close) a connection to the Dask scheduler at ``address``.

    Raises:
        DaskSchedulerUnreachableError: No answer within ``timeout`` seconds.
    """
    from distributed.comm import connect

    async def probe() -> None:
        comm = await connect(address, timeout=timeout)
        await comm.close()

    try:
        asyncio.run(asyncio.wait_for(probe(), timeout + 1))
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        raise DaskSchedulerUnreachableError(
            f"Cannot reach the Dask scheduler at {address} (task_runner=dask, address=...): "
            f"no connection within {timeout:g} s: {reason}. Start it (`dask scheduler`) or "
            "fix the address; no node has run."
        ) from None


def _host(url_or_address: str) -> str | None:
    if "://" not in url_or_address:
        url_or_address = "tcp://" + url_or_address
    return urlparse(url_or_address).hostname


def is_local_host(host: str | None) -> bool:
    """Whether ``host`` names this machine (loopback, or this machine's name or address)."""
    if not host or host in ("localhost", "0.0.0.0", "::"):
        return True
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    names = {socket.gethostname(), socket.getfqdn()}
    if host in names:
        return True
    try:
        mine = {socket.gethostbyname(name) for name in names}
        return socket.gethostbyname(host) in mine
    except OSError:
        return False


def check_api_reachable_from(address: str, api_url: str) -> None:
    """Refuse a scheduler on another machine when the Prefect API only listens on this one.

    Task runs report their states and logs from the workers: a Prefect API on 127.0.0.1 (the
    ephemeral API, or a server bound to loopback) is out of their reach.

    Raises:
        PrefectRunnerConfigError: The scheduler is remote and the API host is loopback.
    """
    api_host = urlparse(api_url).hostname
    if is_local_host(_host(address)) or not _is_loopback(api_host):
        return
    raise PrefectRunnerConfigError(
        f"PrefectRunner option address={address!r}: the Dask scheduler is on another machine, "
        f"but the Prefect API ({api_url}) only listens on this machine, so the workers could "
        "not report task runs to it. Run a Prefect server the workers can reach "
        "(`prefect server start --host 0.0.0.0`) and set PREFECT_API_URL to its address, "
        "e.g. PREFECT_API_URL=http://<this host>:4200/api."
    )


def _is_loopback(host: str | None) -> bool:
    if host in (None, "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- datasets ------------------------------------------------------------------------------------


def _is_in_memory(dataset: Any) -> bool:
    from kedro.io import MemoryDataset

    return dataset is None or isinstance(dataset, MemoryDataset)


def validate_datasets(pipeline: Pipeline, catalog: CatalogProtocol) -> None:
    """Refuse datasets that cannot be used across processes, naming each one and why.

    In-memory datasets (``MemoryDataset`` and datasets not in the catalog) are fine: their data
    travels as task results. Every other dataset is pickled to the workers that load or save it.

    Raises:
        DaskDatasetError: Some dataset has ``_SINGLE_PROCESS = True`` or cannot be pickled.
    """
    import cloudpickle

    problems = []
    for name in sorted(pipeline.datasets()):
        dataset = catalog.get(name, fallback_to_runtime_pattern=True)
        if _is_in_memory(dataset):
            continue
        kind = type(dataset).__name__
        if getattr(dataset, "_SINGLE_PROCESS", False):
            problems.append(f"{name} ({kind}): _SINGLE_PROCESS = True (one process only)")
            continue
        try:
            cloudpickle.dumps(dataset)
        except Exception as exc:
            problems.append(f"{name} ({kind}): cannot be pickled to the workers: {exc}")
    if problems:
        raise DaskDatasetError(
            "These datasets cannot be used with task_runner=dask (nodes run in other "
            "processes); no node has run:\n  " + "\n  ".join(problems)
        )


# --- the worker side -----------------------------------------------------------------------------


@functools.cache
def _plugin_class() -> type:
    """``KedroProjectPlugin``, defined on first use (importing ``distributed`` takes seconds)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class KedroProjectPlugin(WorkerPlugin):
        """A Dask worker plugin that prepares each worker process for the Kedro project.

        ``setup`` runs on every worker, also on workers that join later: the project's source
        dir goes on ``sys.path`` (``kedro run`` only puts it there in the driver), the project
        settings are configured (``configure_project``, as in Kedro's ``ParallelRunner``), the
        driver's log levels are applied, and log records from node tasks go to the Prefect API.
        """

        name = _PLUGIN_NAME

        def __init__(
            self, package_name: str | None, source_dir: str | None, log_levels: dict[str, Any]
        ):
            self.package_name = package_name
            self.source_dir = source_dir
            self.log_levels = log_levels

        def setup(self, worker: Any = None) -> None:
            bootstrap_worker(self.package_name, self.source_dir, self.log_levels)

    return KedroProjectPlugin


class NodeData:
    """Datasets by name, in a box Prefect does not look into.

    Prefect walks task parameters and results that are lists, dicts, tuples or models (to find
    futures and states); on large data that walk is expensive. Dask still resolves the producer
    futures around the box, worker to worker.
    """

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any]):
        self.data = data

    def __getstate__(self) -> dict[str, Any]:
        return self.data

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.data = state


_bootstrapped: dict[str, Any] = {}


def bootstrap_worker(
    package_name: str | None, source_dir: str | None, log_levels: dict[str, Any]
) -> None:
    """Make the project importable and configured in this (worker) process. Idempotent."""
    if source_dir and Path(source_dir).is_dir() and source_dir not in sys.path:
        sys.path.insert(0, source_dir)
    key = (package_name, source_dir)
    if _bootstrapped.get("key") != key:
        if package_name:
            from kedro.framework.project import configure_project

            configure_project(package_name)
        worker_hook_manager.cache_clear()
        _bootstrapped["key"] = key
    _bootstrapped["package_name"] = package_name
    _bootstrapped["log_levels"] = log_levels


def _ensure_worker_logging() -> None:
    """Send node log records to the Prefect API from this worker, at the driver's levels.

    Checked at the start of every node task: Prefect and Kedro (re)apply their logging config
    with ``dictConfig`` when they start up in the worker, which drops handlers added before.
    """
    from prefect.logging.handlers import APILogHandler

    root = logging.getLogger()
    if any(isinstance(handler, APILogHandler) for handler in root.handlers):
        return
    from kedro_prefect.logs import node_logs_to_prefect

    for name, level in _bootstrapped.get("log_levels", {}).items():
        logging.getLogger(name or None).setLevel(level)
    logs = node_logs_to_prefect(_bootstrapped.get("package_name"))
    logs.__enter__()  # for the life of the worker process
    _bootstrapped["logs"] = logs


@functools.cache
def worker_hook_manager() -> Any:
    """The project's hook manager in this process, built once (like ``ParallelRunner``)."""
    from kedro.framework.hooks.manager import (
        _create_hook_manager,
        _register_hooks,
        _register_hooks_entry_points,
    )
    from kedro.framework.project import settings

    manager = _create_hook_manager()
    _register_hooks(manager, settings.HOOKS)
    _register_hooks_entry_points(manager, settings.DISABLE_HOOKS_FOR_PLUGINS)
    return manager


def run_node_on_worker(
    payload: bytes,
    upstream: dict[str, NodeData],
    memory: dict[str, Any],
    is_async: bool,
    run_id: str | None,
) -> NodeData:
    """The body of a node task on a Dask worker; returns the node's in-memory outputs.

    Args:
        payload: ``cloudpickle`` of ``(node, datasets, given)``: the node, the persisted datasets
            it loads or saves (by name), and its in-memory inputs that no node produces (e.g.
            parameters). Pickled by the driver and unpickled here, after the worker plugin has
            made the project importable: the Dask scheduler deserializes task graphs and must
            not need the project's code.
        upstream: Producer node name -> that producer's in-memory outputs (resolved by Dask
            from the producer's task result, worker to worker).
        memory: Copy mode (or ``None``) of each in-memory dataset the node uses, by name.
        is_async: Kedro's ``is_async``.
        run_id: The Kedro run id.
    """
    import cloudpickle
    from kedro.io import DataCatalog, MemoryDataset

    from kedro_prefect.node_execution import run_node

    _ensure_worker_logging()
    node, datasets, given = cloudpickle.loads(payload)
    catalog = DataCatalog(dict(datasets))
    available = dict(given)
    for outputs in upstream.values():
        available.update(outputs.data)
    for name, copy_mode in memory.items():
        if name in node.outputs:
            catalog[name] = MemoryDataset(copy_mode="assign")
        else:  # the dataset's own save() applies the copy mode, without catalog log lines
            catalog[name] = MemoryDataset(data=available[name], copy_mode=copy_mode)
    run_node(node, catalog, worker_hook_manager(), is_async, run_id)
    return NodeData({name: catalog[name].load() for name in node.outputs if name in memory})


# --- the driver side -----------------------------------------------------------------------------


def _project_bootstrap() -> Any:
    from kedro.framework.project import LOGGING, PACKAGE_NAME

    source_dir = None
    module = sys.modules.get(PACKAGE_NAME or "")
    if module is not None and getattr(module, "__file__", None):
        source_dir = str(Path(module.__file__).resolve().parents[1])
    levels: dict[str, Any] = {}
    config = getattr(LOGGING, "data", None) or {}
    for name, logger_config in (config.get("loggers") or {}).items():
        if "level" in (logger_config or {}):
            levels[name] = logger_config["level"]
    if "level" in (config.get("root") or {}):
        levels[""] = config["root"]["level"]
    for name in ("kedro", "kedro_prefect", PACKAGE_NAME):
        if name and name not in levels:
            levels[name] = logging.getLogger(name).getEffectiveLevel()
    return _plugin_class()(PACKAGE_NAME, source_dir, levels)


class DaskNodeExecution:
    """How the runner runs nodes on Dask: task body, task parameters, completion handling.

    In-memory datasets travel as task results (producer future -> consumer parameter). The
    driver's catalog only receives the pipeline's free in-memory outputs.
    """

    task_fn = staticmethod(run_node_on_worker)

    def __init__(
        self,
        task_runner: Any,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        is_async: bool,
        run_id: str | None,
    ):
        for node in pipeline.nodes:
            node_resources(set(node.tags))
        validate_datasets(pipeline, catalog)
        self._catalog = catalog
        self._is_async = is_async
        self._run_id = run_id
        self._memory: dict[str, Any] = {}
        self._datasets: dict[str, Any] = {}
        for name in pipeline.datasets():
            dataset = catalog.get(name, fallback_to_runtime_pattern=True)
            if _is_in_memory(dataset):
                self._memory[name] = getattr(dataset, "_copy_mode", None)
            else:
                self._datasets[name] = dataset
        self._producer = {out: node for node in pipeline.nodes for out in node.outputs}
        self._free_outputs = pipeline.outputs() & set(self._memory)
        # How many consumers of a node's in-memory outputs have not finished yet.
        self._pending_consumers: dict[Node, int] = defaultdict(int)
        self._upstream: dict[Node, set[Node]] = {}
        for node in pipeline.nodes:
            producers = {
                self._producer[name]
                for name in node.inputs
                if name in self._memory and name in self._producer
            }
            self._upstream[node] = producers
            for producer in producers:
                self._pending_consumers[producer] += 1
        self._client = client = task_runner.client  # starts or connects to the cluster
        _log_dashboard(client)
        client.register_plugin(_project_bootstrap(), name=_PLUGIN_NAME)

    def submit_arguments(
        self, node: Node, producers: set[Node], futures: dict[Node, PrefectFuture[Any]]
    ) -> dict[str, Any]:
        """Task parameters (the producers' in-memory outputs as Dask futures) and ``wait_for``."""
        return {
            "parameters": self._parameters(node, futures),
            "wait_for": [futures[producer] for producer in producers],
        }

    def _parameters(self, node: Node, futures: dict[Node, PrefectFuture[Any]]) -> dict[str, Any]:
        import cloudpickle

        given = {
            name: self._catalog.load(name)
            for name in node.inputs
            if name in self._memory and name not in self._producer
        }
        datasets = {
            name: self._datasets[name]
            for name in (*node.inputs, *node.outputs)
            if name in self._datasets
        }
        return {
            "payload": cloudpickle.dumps((node, datasets, given)),
            "upstream": {p.name: futures[p] for p in self._upstream[node]},
            "memory": {
                name: self._memory[name]
                for name in (*node.inputs, *node.outputs)
                if name in self._memory
            },
            "is_async": self._is_async,
            "run_id": self._run_id,
        }

    def nodes_finished(self, futures: dict[Node, Any]) -> None:
        """Collect the workers' records of this run's task runs (attempts, start, duration).

        One round trip to each worker, instead of waiting for the Prefect API to record the
        task run states the workers sent it. A worker that died meanwhile took its records
        with it: those nodes are read back from the API.
        """
        from kedro_prefect.node_execution import add_task_run_records

        ids = [future.task_run_id for future in futures.values()]
        try:
            by_worker = self._client.run(take_worker_records, ids)
        except Exception as exc:  # e.g. a worker left while answering
            logger.debug("Could not collect task run records from the workers: %r", exc)
            return
        for records in by_worker.values():
            add_task_run_records(records)

    def node_completed(self, node: Node, futures: dict[Node, Any]) -> None:
        """Save free in-memory outputs in the driver catalog; let Dask drop data no one needs.

        A node's in-memory outputs stay on the worker until its last consumer has finished
        (the Dask counterpart of Kedro releasing a ``MemoryDataset``).
        """
        free = [name for name in node.outputs if name in self._free_outputs]
        if free:
            outputs = futures[node].result().data
            for name in free:
                self._catalog.save(name, outputs[name])
        if not self._pending_consumers.get(node):
            futures[node].release()
        for producer in self._upstream[node]:
            self._pending_consumers[producer] -= 1
            if not self._pending_consumers[producer]:
                futures[producer].release()


def _log_dashboard(client: Any) -> None:
    try:
        link = client.dashboard_link
    except Exception:
        link = None
    info = client.scheduler_info()
    services = info.get("services", {}) if isinstance(info, dict) else {}
    if link and "dashboard" in services:
        logger.info("Dask dashboard: %s", link)
    else:
        logger.info(
            "Dask scheduler %s (%d workers); no dashboard (install bokeh to get one)",
            client.scheduler.address,
            len(info.get("workers", {})),
        )


def is_dask_runner(task_runner: Any) -> bool:
    """Whether ``task_runner`` is the Dask task runner built by :func:`dask_task_runner`."""
    if "prefect_dask" not in sys.modules:
        return False
    runner_cls, _ = _task_runner_classes()
    return isinstance(task_runner, runner_cls)


__all__ = [
    "DaskDatasetError",
    "DaskNodeExecution",
    "DaskSchedulerUnreachableError",
    "check_scheduler_reachable",
    "dask_task_runner",
    "node_resources",
    "run_node_on_worker",
]
