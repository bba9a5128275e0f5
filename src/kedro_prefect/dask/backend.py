"""The ``dask`` backend: node tasks on a Dask cluster (see the package's docstring)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline
    from pluggy import PluginManager
    from prefect.task_runners import TaskRunner

    from kedro_prefect.config.options import RunnerOptions
    from kedro_prefect.dask.early import EarlyCluster
    from kedro_prefect.execution.protocol import NodeExecution, SavedEvents


class DaskBackend:  # implements execution.protocol.Backend
    """``task_runner=dask``: a local cluster of worker processes for the run, or ``address=``."""

    name = "dask"
    quiet_dask_logs = True

    def __init__(self, options: RunnerOptions):
        from kedro_prefect.dask.forkserver import start_server_early

        # first: a local cluster's fork server imports while this process imports Prefect and
        # Kedro sets up the session
        start_server_early(options)
        from kedro_prefect.dask.task_runner import require_prefect_dask

        require_prefect_dask()  # the missing extra: one line, when the runner is built
        self._options = options
        self._early: EarlyCluster | None = None

    @contextmanager
    def starting(self, pipeline: Pipeline, catalog: CatalogProtocol) -> Iterator[None]:
        """A ``LocalCluster`` for the run starts now, in the background, its workers importing
        what the pipeline's nodes and datasets need (:mod:`kedro_prefect.dask.early`); the
        task runner takes it."""
        from kedro_prefect.dask.early import local_cluster_started_early
        from kedro_prefect.observe.logs import quiet_dask_logs
        from kedro_prefect.workers.logging_line import workers_without_logging_line

        with (
            quiet_dask_logs(),  # as quiet as the run's terminal (observe.logs.quiet_terminal)
            workers_without_logging_line(
                local_cluster_started_early(self._options, pipeline, catalog)
            ) as early,
        ):
            self._early = early
            try:
                yield
            finally:
                self._early = None

    def task_runner(self, pipeline: Pipeline) -> AbstractContextManager[TaskRunner[Any]]:
        from kedro_prefect.dask.task_runner import dask_task_runner
        from kedro_prefect.workers.logging_line import workers_without_logging_line

        early, self._early = self._early, None  # one run's cluster, taken once
        runner: TaskRunner[Any] = dask_task_runner(self._options, early)
        if early is not None:  # its workers started within starting()'s quiet logging line
            return runner
        return workers_without_logging_line(runner)

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
        """Starts the cluster (:class:`~kedro_prefect.errors.DaskClusterError` if it cannot),
        checks the datasets and registers the project on every worker."""
        from kedro_prefect.dask.driver import DaskNodeExecution

        return DaskNodeExecution(
            task_runner, pipeline, catalog, is_async, run_id, events, hook_manager
        )

    def worker_label(self, task_runner: TaskRunner[Any]) -> str | None:
        return None  # a Dask worker names itself in its record of the task run
