"""The ``process`` backend: node tasks in a pool of worker processes of this machine (Prefect's
``ProcessPoolTaskRunner``), for CPU-bound nodes without installing Dask.

Each worker process sets itself up for the project on its first node task
(:func:`kedro_prefect.workers.bootstrap.bootstrap_worker`: the project importable, its log
levels, node logs to the run's Prefect API) and runs each node with the project's hooks
(:func:`~kedro_prefect.workers.bootstrap.run_node_on_worker`). In-memory outputs are the task's
result; Prefect resolves a consumer's ``upstream`` futures to them in the driver and pickles them
to the consumer's process, as Kedro's ``ParallelRunner`` passes data through its manager.
"""

from __future__ import annotations

import gc
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from kedro_prefect.backends.thread import side_by_side
from kedro_prefect.process_exit import collect_then_freeze_at_exit
from kedro_prefect.workers.bootstrap import bootstrap_worker, run_node_on_worker

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline
    from pluggy import PluginManager
    from prefect.futures import PrefectFuture
    from prefect.task_runners import TaskRunner

    from kedro_prefect.config.options import RunnerOptions
    from kedro_prefect.execution.outputs import NodeData
    from kedro_prefect.execution.protocol import NodeExecution, SavedEvents
    from kedro_prefect.workers.session import RunSession


class ProcessBackend:  # implements execution.protocol.Backend
    """``task_runner=process``, or the import path of a ``ProcessPoolTaskRunner`` subclass."""

    name = "process"
    quiet_dask_logs = False

    def __init__(self, options: RunnerOptions, cls: type[TaskRunner[Any]] | None = None):
        self._options = options
        self._cls = cls  # a subclass named by import path; None: Prefect's ProcessPoolTaskRunner

    def starting(
        self, pipeline: Pipeline, catalog: CatalogProtocol
    ) -> AbstractContextManager[None]:
        return nullcontext()  # nothing starts ahead of the flow

    def task_runner(self, pipeline: Pipeline) -> AbstractContextManager[TaskRunner[Any]]:
        """A pool of ``max_workers`` processes (default: the CPU count), never more than the
        nodes that can run side by side (each process imports the project: seconds)."""
        from prefect.task_runners import ProcessPoolTaskRunner

        from kedro_prefect._upstream.prefect_pool import process_pool_in_run_context

        cls = process_pool_in_run_context(self._cls or ProcessPoolTaskRunner, start_worker)
        ceiling = self._options.max_workers or os.cpu_count() or 1
        runner = cls(max_workers=max(1, min(side_by_side(pipeline), ceiling)))
        return _reporting_to_the_run_api(runner)

    def node_execution(
        self,
        task_runner: TaskRunner[Any],
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        hook_manager: PluginManager,
        is_async: bool,
        run_id: str | None,
        events: SavedEvents | None = None,
    ) -> NodeExecution:
        """Checks the datasets (one line naming those that cannot cross processes)."""
        from kedro_prefect.workers.bootstrap import project_log_levels, run_project
        from kedro_prefect.workers.transfer import TransferNodeExecution, validate_datasets

        validate_datasets(pipeline, catalog, self.name)
        project = run_project()
        return TransferNodeExecution(
            run_node_in_process,
            pipeline,
            catalog,
            is_async,
            run_id,
            events,
            project,
            release=_drop_outputs,
            extra_parameters={"log_levels": project_log_levels(project[0])},
            group_fn=run_group_in_process,
            hook_manager=hook_manager,
        )

    def worker_label(self, task_runner: TaskRunner[Any]) -> str | None:
        return f"{socket.gethostname()} ({type(task_runner).__name__})"


@contextmanager
def _reporting_to_the_run_api(runner: TaskRunner[Any]) -> Iterator[TaskRunner[Any]]:
    """Run the pool with the run's API URL in the environment its processes start with.

    Prefect gives each task its settings as environment variables for the task's duration
    only (and restores the process's environment after it, from Prefect 3.5); a worker process
    that talks to the API outside a task (flushing its events and log workers when it exits)
    would otherwise find no ``PREFECT_API_URL`` and start a temporary API server of its own.
    """
    from prefect.settings import get_current_settings

    api_url = get_current_settings().api.url
    set_here = bool(api_url) and "PREFECT_API_URL" not in os.environ
    if set_here:
        os.environ["PREFECT_API_URL"] = str(api_url)
    from kedro_prefect.workers.logging_line import workers_without_logging_line

    try:
        with workers_without_logging_line(runner):
            yield runner
    finally:
        if set_here:
            os.environ.pop("PREFECT_API_URL", None)


def _drop_outputs(future: PrefectFuture[Any]) -> None:
    """Let go of a node's in-memory outputs in the driver once no consumer needs them (Prefect's
    future keeps a pickled copy of its result until the run ends)."""
    from kedro_prefect.execution.outputs import NodeData

    outputs = future.result()
    if isinstance(outputs, NodeData):
        outputs.data = {}


def start_worker() -> None:
    """In each worker process, as the pool starts it (while the driver prepares the run): the
    imports of its node tasks, then :func:`settle_worker`."""
    import prefect.task_engine  # noqa: F401

    import kedro_prefect.execution.tasks  # noqa: F401

    settle_worker()


def settle_worker() -> None:
    """Leave the objects of this worker's imports to reference counting alone (``gc.freeze``),
    and exit as the driver does (:mod:`kedro_prefect.process_exit`).

    Prefect's and Kedro's modules leave ~120,000 objects tracked by the garbage collector; each
    full collection traverses them all: those while nodes run, and the one at exit, which the
    run waits for (~0.5 s on a small machine). Frozen, the collections only traverse what the
    nodes and task runs created since.
    """
    gc.freeze()
    collect_then_freeze_at_exit()


#: The projects this worker process has been set up for (package name, source dir).
_set_up: set[tuple[str | None, str | None]] = set()
_set_up_lock = threading.Lock()


def _set_up_once(project: tuple[str | None, str | None], log_levels: dict[str, Any] | None) -> None:
    """Set this worker process up for the project on its first task (node or group)."""
    with _set_up_lock:
        if project not in _set_up:
            bootstrap_worker(project[0], project[1], log_levels or {})
            _set_up.add(project)
            settle_worker()  # again: this worker may not have run start_worker


def run_node_in_process(
    payload: bytes,
    upstream: dict[str, NodeData],
    memory: dict[str, Any],
    is_async: bool,
    run_id: str | None,
    events: SavedEvents | None = None,
    project: tuple[str | None, str | None] = (None, None),
    log_levels: dict[str, Any] | None = None,
    session: RunSession | None = None,
) -> NodeData:
    """The body of a node task in a worker process: set the process up for the project (on its
    first node task), then :func:`~kedro_prefect.workers.bootstrap.run_node_on_worker`."""
    _set_up_once(project, log_levels)
    return run_node_on_worker(payload, upstream, memory, is_async, run_id, events, project, session)


def run_group_in_process(
    payload: bytes,
    upstream: dict[str, NodeData],
    memory: dict[str, Any],
    is_async: bool,
    run_id: str | None,
    events: SavedEvents | None = None,
    project: tuple[str | None, str | None] = (None, None),
    log_levels: dict[str, Any] | None = None,
    session: RunSession | None = None,
) -> NodeData:
    """The body of a group's task (``group_by``) in a worker process: set the process up, then
    :func:`~kedro_prefect.workers.groups.run_group_on_worker`."""
    from kedro_prefect.workers.groups import run_group_on_worker

    _set_up_once(project, log_levels)
    return run_group_on_worker(
        payload, upstream, memory, is_async, run_id, events, project, session
    )
