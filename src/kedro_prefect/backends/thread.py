"""The ``thread`` backend (the default): node tasks in a thread pool of the ``kedro run``
process, loading and saving through the driver's own catalog."""

from __future__ import annotations

import os
import socket
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline
    from pluggy import PluginManager
    from prefect.task_runners import TaskRunner

    from kedro_prefect.config.options import RunnerOptions
    from kedro_prefect.execution.protocol import NodeExecution, SavedEvents


def default_thread_count(pipeline: Pipeline, max_workers: int | None) -> int:
    """Threads for a pipeline: never more than the nodes that could ever run side by side.

    Like Kedro's ``ThreadRunner``, the upper bound is ``nodes - layers + 1``; the default
    ceiling is the one of Python's ``ThreadPoolExecutor`` (``min(32, cpu_count + 4)``), because
    node tasks often wait on I/O.
    """
    ceiling = max_workers or min(32, (os.cpu_count() or 1) + 4)
    return max(1, min(side_by_side(pipeline), ceiling))


def side_by_side(pipeline: Pipeline) -> int:
    """The most nodes of ``pipeline`` that can ever run at once (``nodes - layers + 1``)."""
    return len(pipeline.nodes) - len(pipeline.grouped_nodes) + 1


class ThreadBackend:  # implements execution.protocol.Backend
    """``task_runner=thread``, or the import path of a ``ThreadPoolTaskRunner`` subclass."""

    name = "thread"
    quiet_dask_logs = False

    def __init__(self, options: RunnerOptions, cls: type[TaskRunner[Any]] | None = None):
        self._options = options
        self._cls = cls  # a subclass named by import path; None: Prefect's ThreadPoolTaskRunner

    def starting(
        self, pipeline: Pipeline, catalog: CatalogProtocol
    ) -> AbstractContextManager[None]:
        return nullcontext()  # nothing starts ahead of the flow

    def task_runner(self, pipeline: Pipeline) -> AbstractContextManager[TaskRunner[Any]]:
        from prefect.task_runners import ThreadPoolTaskRunner

        max_workers = self._options.max_workers
        if self._cls is None or self._cls is ThreadPoolTaskRunner:
            return ThreadPoolTaskRunner(max_workers=default_thread_count(pipeline, max_workers))
        if max_workers is not None:
            return self._cls(max_workers=max_workers)  # type: ignore[call-arg]
        return self._cls()

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
        from kedro_prefect.execution.local import LocalNodeExecution

        return LocalNodeExecution(catalog, hook_manager, is_async, run_id, events)

    def worker_label(self, task_runner: TaskRunner[Any]) -> str | None:
        return f"{socket.gethostname()} ({type(task_runner).__name__})"
