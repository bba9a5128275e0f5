"""The worker side of ``task_runner=dask``: what runs in a Dask worker process.

A ``KedroProjectPlugin`` per project is registered on every worker (also workers that join
later): it puts the project's ``src`` directory on ``sys.path``, applies the project's log levels
and sends log records emitted in node tasks to the Prefect API. Each node runs in
:func:`run_node_on_worker`, which names its project: the hook manager is built there from that
project's settings module (a pluggy ``PluginManager`` cannot be pickled), once per project and
process, without Kedro's process-wide ``configure_project`` (several projects, and several
environments of one project, may share one cluster). Persisted datasets load and save there,
and the node's in-memory outputs are the *result* of its task.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from kedro_prefect.execution.outputs import NodeData

PLUGIN_NAME = "kedro-prefect-project"


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
    from kedro_prefect._upstream.prefect import run_task_with_worker_caches
    from kedro_prefect.execution.records import ended_task_run, recording_task_runs

    _register_sizes()
    with _worker_records_lock:
        if len(_worker_records) > MAX_WORKER_RECORDS:  # never collected (the driver died)
            _worker_records.clear()
    with recording_task_runs(_worker_records):
        state = run_task_with_worker_caches(context, settings_key, run_task_kwargs)
    task_run_id = run_task_kwargs.get("task_run_id")
    record = ended_task_run(_worker_records, task_run_id)
    if record is not None:
        _worker_records[task_run_id] = dataclasses.replace(record, worker=_worker_address())
    return state


@functools.cache
def _register_sizes() -> None:
    """Tell Dask how large a node task's result is: the in-memory outputs in its state.

    Dask measures each result with ``dask.sizeof``; it does not look into a Prefect state, so a
    state holding 200 MB would count as a few hundred bytes. With the real size, the scheduler's
    transfer costs (work stealing), the worker's memory limits and :mod:`.placement`'s locality
    rule see the data.
    """
    from dask.sizeof import sizeof
    from prefect.client.schemas.objects import State

    @sizeof.register(NodeData)
    def _node_data(value: NodeData) -> int:
        return 64 + sum(sizeof(item) for item in value.data.values())

    @sizeof.register(State)
    def _state(value: Any) -> int:
        return 512 + (sizeof(value.data) if isinstance(value.data, NodeData) else 0)


def _worker_address() -> str | None:
    from distributed import get_worker

    try:
        return get_worker().address
    except ValueError:  # not in a Dask worker
        return None


def plugin_name(package_name: str | None, source_dir: str | None) -> str:
    """The worker plugin name of one project: projects sharing a cluster do not replace each
    other's plugin (Dask keeps one plugin per name)."""
    import hashlib

    digest = hashlib.sha256(f"{package_name}\0{source_dir}".encode()).hexdigest()[:12]
    return f"{PLUGIN_NAME}-{package_name or 'none'}-{digest}"


@functools.cache
def plugin_class() -> type:
    """``KedroProjectPlugin``, defined on first use (importing ``distributed`` takes seconds)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class KedroProjectPlugin(WorkerPlugin):
        """A Dask worker plugin that prepares each worker process for one Kedro project.

        ``setup`` runs on every worker, also on workers that join later: the project's source
        dir goes on ``sys.path`` (``kedro run`` only puts it there in the driver), and the
        driver's log levels are applied. Nothing process-wide of Kedro is configured (no
        ``configure_project``): several projects may share the cluster, so each node task
        names its project and gets that project's hooks (:func:`worker_hook_manager`).
        """

        def __init__(
            self, package_name: str | None, source_dir: str | None, log_levels: dict[str, Any]
        ):
            self.package_name = package_name
            self.source_dir = source_dir
            self.log_levels = log_levels
            self.name = plugin_name(package_name, source_dir)

        def setup(self, worker: Any = None) -> None:
            bootstrap_worker(self.package_name, self.source_dir, self.log_levels)

    return KedroProjectPlugin


_bootstrapped: dict[str, Any] = {}


def bootstrap_worker(
    package_name: str | None, source_dir: str | None, log_levels: dict[str, Any]
) -> None:
    """Make the project importable in this (worker) process and note its log levels."""
    _add_source_dir(source_dir)
    if package_name:
        from kedro_prefect.observe.logs import keep_project_logging_in_worker

        keep_project_logging_in_worker()  # once per process: Kedro's logging, kept by Prefect
    _bootstrapped["package_name"] = package_name
    _bootstrapped["log_levels"] = log_levels
    _bootstrapped.setdefault("levels_of", {})[package_name] = log_levels


def _add_source_dir(source_dir: str | None) -> None:
    """Put the project's ``src`` first on ``sys.path``.

    First, not only present: a local cluster's worker processes inherit the driver's
    ``sys.path``, which may hold another checkout of a package of the same name (a notebook or
    test session that bootstrapped several projects), and the project's must win.
    """
    if not source_dir or not Path(source_dir).is_dir():
        return
    if sys.path and sys.path[0] == source_dir:
        return
    if source_dir in sys.path:
        sys.path.remove(source_dir)
    sys.path.insert(0, source_dir)


def _ensure_worker_logging(package_name: str | None = None) -> None:
    """Send node log records to the Prefect API from this worker, at the driver's levels.

    Checked at the start of every node task: Prefect and Kedro (re)apply their logging config
    with ``dictConfig`` when they start up in the worker, which drops handlers added before.
    The log levels of each project sharing the worker are applied when its first node runs.
    """
    from prefect.logging.handlers import APILogHandler

    applied = _bootstrapped.setdefault("levels_applied", set())
    if package_name not in applied:
        applied.add(package_name)
        levels = _bootstrapped.get("levels_of", {}).get(package_name, {})
        for name, level in levels.items():
            logging.getLogger(name or None).setLevel(level)
    root = logging.getLogger()
    if any(isinstance(handler, APILogHandler) for handler in root.handlers):
        return
    from kedro_prefect.observe.logs import gate_run_lines, node_logs_to_prefect

    for name, level in _bootstrapped.get("log_levels", {}).items():
        logging.getLogger(name or None).setLevel(level)
    gate_run_lines()  # Prefect's "Finished in state Completed()": API only, as in the driver
    logs = node_logs_to_prefect(_bootstrapped.get("package_name"))
    logs.__enter__()  # for the life of the worker process
    _bootstrapped["logs"] = logs


def _check_project_source(package_name: str | None, source_dir: str | None) -> None:
    """Refuse to run a node of a project whose package this worker imported from elsewhere
    (two checkouts of one package sharing a cluster: a process holds one of them)."""
    module = sys.modules.get(package_name or "")
    file = getattr(module, "__file__", None)
    if not (file and source_dir) or Path(file).resolve().is_relative_to(source_dir):
        return
    raise RuntimeError(
        f"This Dask worker already runs package {package_name!r} from "
        f"{Path(file).resolve().parents[1]}, not from {source_dir}: a worker process holds one "
        "copy of a package. Run projects that share a package name on separate clusters."
    )


_hook_managers: dict[str | None, Any] = {}
_hook_managers_lock = threading.Lock()


def worker_hook_manager(package_name: str | None) -> Any:
    """The hook manager of one project in this process, built once per project (as
    ``ParallelRunner`` builds one per subprocess) from that project's own settings module,
    without touching Kedro's process-wide ``settings``; ``None``: the hooks of no project
    (Kedro's plugin hooks only, as a run outside a project gets)."""
    with _hook_managers_lock:
        manager = _hook_managers.get(package_name)
        if manager is None:
            from kedro_prefect._upstream.kedro import project_hook_manager, project_settings

            manager = project_hook_manager(project_settings(package_name))
            _hook_managers[package_name] = manager
        return manager


def run_node_on_worker(
    payload: bytes,
    upstream: dict[str, NodeData],
    memory: dict[str, Any],
    is_async: bool,
    run_id: str | None,
    events: Any = None,
    project: tuple[str | None, str | None] = (None, None),
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
        events: A :class:`~kedro_prefect.observe.events.DatasetEvents`: emit an event for each
            persisted dataset the node saved (here, where it saved them).
        project: The package name and source dir of the run's Kedro project (from the
            driver's session): the node gets that project's hooks, whatever other projects
            share the cluster.
    """
    import cloudpickle
    from kedro.io import DataCatalog, MemoryDataset

    from kedro_prefect.execution.local import run_node

    package_name, source_dir = project
    _add_source_dir(source_dir)
    _ensure_worker_logging(package_name)
    node, datasets, given = cloudpickle.loads(payload)
    _check_project_source(package_name, source_dir)
    catalog = DataCatalog(dict(datasets))
    available = dict(given)
    for outputs in upstream.values():
        available.update(outputs.data)
    for name, copy_mode in memory.items():
        if name in node.outputs:
            catalog[name] = MemoryDataset(copy_mode="assign")
        else:  # the dataset's own save() applies the copy mode, without catalog log lines
            catalog[name] = MemoryDataset(data=available[name], copy_mode=copy_mode)
    run_node(node, catalog, worker_hook_manager(package_name), is_async, run_id, events=events)
    return NodeData({name: catalog[name].load() for name in node.outputs if name in memory})
