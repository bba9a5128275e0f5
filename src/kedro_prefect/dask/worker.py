"""The worker side of ``task_runner=dask``: what runs in a Dask worker process.

A ``KedroProjectPlugin`` per project is registered on every worker (also workers that join
later): it sets the worker process up for the project
(:func:`kedro_prefect.workers.bootstrap.bootstrap_worker`). Each node task runs through
:func:`run_task_on_worker` (Prefect's engine, with per-process caches) and its body is
:func:`kedro_prefect.workers.bootstrap.run_node_on_worker`; the worker keeps the records of the
task runs that ended there until the driver collects them.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from typing import Any

from kedro_prefect.execution.outputs import NodeData
from kedro_prefect.workers.bootstrap import bootstrap_worker

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
    *,
    context: dict[str, Any],
    settings_key: str | None = None,
    limited_tags: frozenset[str] | None = None,
    **run_task_kwargs: Any,
) -> Any:
    """Prefect's ``run_task_sync`` for a node task on a Dask worker.

    Each task carries the driver's Prefect settings (API URL and all). For every task, Prefect
    rebuilds a settings model from them (pydantic-settings reads the environment and config
    files again, ~80 ms on a small machine) and opens two API clients (~30 ms each, most of it
    loading CA certificates). Here the settings are built once per worker process and the
    client once per worker thread, and both are in place before Prefect hydrates the rest of
    the task's context, so it reuses them. ``settings_key`` names the settings (the driver
    computes it once per run); without it they are looked up by their JSON form. The task asks
    for concurrency slots of the run's ``limited_tags`` only, as on the driver (``None``: of
    every tag, as Prefect does).

    The task run's attempts, start, duration and this worker's address are kept on the worker
    for the driver to collect (:func:`take_worker_records`).
    """
    from kedro_prefect._upstream.prefect_tasks import run_task_with_worker_caches
    from kedro_prefect.execution.records import ended_task_run, recording_task_runs

    _register_sizes()
    with _worker_records_lock:
        if len(_worker_records) > MAX_WORKER_RECORDS:  # never collected (the driver died)
            _worker_records.clear()
    with recording_task_runs(_worker_records):
        state = run_task_with_worker_caches(context, settings_key, run_task_kwargs, limited_tags)
    task_run_id = run_task_kwargs.get("task_run_id")
    record = ended_task_run(_worker_records, task_run_id)
    if record is not None:
        _worker_records[task_run_id] = dataclasses.replace(record, worker=_worker_address())
    return state


@functools.cache
def _register_sizes() -> None:
    """Tell Dask how large a node task's result is: the in-memory outputs in its state.

    Dask measures each result with ``dask.sizeof``; it does not look into a Prefect state (nor
    into :class:`NodeData`), so a state holding 200 MB would count as a few hundred bytes. With
    the real size, the scheduler's transfer costs (work stealing), the worker's memory limits
    and :mod:`.placement`'s locality rule see the data.
    """
    from dask.sizeof import sizeof

    from kedro_prefect._upstream.prefect_dask import register_state_sizes

    @sizeof.register(NodeData)
    def _node_data(value: NodeData) -> int:
        return 64 + sum(sizeof(item) for item in value.data.values())

    register_state_sizes()


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
        names its project and gets that project's hooks
        (:func:`~kedro_prefect.workers.bootstrap.worker_hook_manager`).
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
