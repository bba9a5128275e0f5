"""The worker side of ``task_runner=dask``: what runs in a Dask worker process.

A ``KedroProjectPlugin`` is registered on every worker (also workers that join later): it puts
the project's ``src`` directory on ``sys.path``, calls ``configure_project(package_name)`` (as
Kedro's ``ParallelRunner`` does in its subprocesses), applies the project's log levels and sends
log records emitted in node tasks to the Prefect API. Each node runs in
:func:`run_node_on_worker`: the hook manager is built there from the project's settings (a
pluggy ``PluginManager`` cannot be pickled), persisted datasets load and save there, and the
node's in-memory outputs are the *result* of its task.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import threading
from pathlib import Path
from typing import Any

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


def _worker_address() -> str | None:
    from distributed import get_worker

    try:
        return get_worker().address
    except ValueError:  # not in a Dask worker
        return None


@functools.cache
def plugin_class() -> type:
    """``KedroProjectPlugin``, defined on first use (importing ``distributed`` takes seconds)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class KedroProjectPlugin(WorkerPlugin):
        """A Dask worker plugin that prepares each worker process for the Kedro project.

        ``setup`` runs on every worker, also on workers that join later: the project's source
        dir goes on ``sys.path`` (``kedro run`` only puts it there in the driver), the project
        settings are configured (``configure_project``, as in Kedro's ``ParallelRunner``), the
        driver's log levels are applied, and log records from node tasks go to the Prefect API.
        """

        name = PLUGIN_NAME

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

            from kedro_prefect.observe.logs import keep_project_logging_in_worker

            configure_project(package_name)
            keep_project_logging_in_worker()
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
    from kedro_prefect.observe.logs import gate_run_lines, node_logs_to_prefect

    for name, level in _bootstrapped.get("log_levels", {}).items():
        logging.getLogger(name or None).setLevel(level)
    gate_run_lines()  # Prefect's "Finished in state Completed()": API only, as in the driver
    logs = node_logs_to_prefect(_bootstrapped.get("package_name"))
    logs.__enter__()  # for the life of the worker process
    _bootstrapped["logs"] = logs


@functools.cache
def worker_hook_manager() -> Any:
    """The project's hook manager in this process, built once (like ``ParallelRunner``)."""
    from kedro.framework.project import settings

    from kedro_prefect._upstream.kedro import project_hook_manager

    return project_hook_manager(settings)


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

    from kedro_prefect.execution.local import run_node

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
