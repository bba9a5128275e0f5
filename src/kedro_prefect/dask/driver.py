"""The driver side of ``task_runner=dask``: the cluster started before the first node (one clear
error), the project registered on every worker, Dask resources, and the workers' records of the
task runs collected at the end.

In-memory datasets travel as task results (:mod:`kedro_prefect.workers.transfer`): consumers
receive their producers' Dask futures as task parameters, so Dask moves the data worker to
worker and the driver never loads it. Only the pipeline's free in-memory outputs are fetched to
the driver, because ``run()`` returns them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kedro_prefect.dask.resources import node_resources
from kedro_prefect.dask.worker import plugin_class, take_worker_records
from kedro_prefect.errors import DaskClusterError, DaskDatasetError
from kedro_prefect.workers.bootstrap import project_log_levels, run_node_on_worker, run_project
from kedro_prefect.workers.groups import run_group_on_worker
from kedro_prefect.workers.transfer import TransferNodeExecution, validate_datasets

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline
    from kedro.pipeline.node import Node
    from pluggy import PluginManager

    from kedro_prefect.execution.protocol import SavedEvents

logger = logging.getLogger(__name__)


def _project_bootstrap(package_name: str | None, source_dir: str | None) -> Any:
    levels = project_log_levels(package_name)
    return plugin_class()(package_name, source_dir, levels)


class DaskNodeExecution(TransferNodeExecution):  # implements execution.protocol.NodeExecution
    """How the runner runs nodes on Dask: in-memory datasets travel as task results (producer
    future -> consumer parameter), worker to worker; Dask forgets them once no consumer needs
    them. The driver's catalog only receives the pipeline's free in-memory outputs.
    """

    def __init__(
        self,
        task_runner: Any,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        is_async: bool,
        run_id: str | None,
        events: SavedEvents | None = None,
        hook_manager: PluginManager | None = None,
    ):
        for node in pipeline.nodes:
            node_resources(set(node.tags))
        validate_datasets(pipeline, catalog, "dask", DaskDatasetError)
        project = run_project()
        super().__init__(
            run_node_on_worker,
            pipeline,
            catalog,
            is_async,
            run_id,
            events,
            project,
            release=_release,
            group_fn=run_group_on_worker,
            hook_manager=hook_manager,
        )
        self._client = client = _start_client(task_runner)
        _log_dashboard(client)
        _link_performance_report(task_runner.performance_report_path)
        plugin = _project_bootstrap(*project)
        client.register_plugin(plugin, name=plugin.name)

    def _returned(self, future: Any) -> Any:
        """The task's state without its data (the outputs stay on the worker), which keeps what
        the hooks there gathered for the driver's (``NodeData.without_data``)."""
        state = future.state
        return state.data if state is not None else None

    def nodes_finished(self, futures: dict[Node, Any]) -> None:
        """Collect the workers' records of this run's task runs (attempts, start, duration).

        One round trip to each worker, instead of waiting for the Prefect API to record the
        task run states the workers sent it. A worker that died meanwhile took its records
        with it: those nodes are read back from the API.
        """
        from kedro_prefect.execution.records import add_task_run_records

        ids = [future.task_run_id for future in futures.values()]
        try:
            by_worker = self._client.run(take_worker_records, ids)
        except Exception as exc:  # e.g. a worker left while answering
            logger.debug("Could not collect task run records from the workers: %r", exc)
            return
        for records in by_worker.values():
            add_task_run_records(records)


def _release(future: Any) -> None:
    """Let Dask forget a node's in-memory outputs (``KedroDaskFuture.release``)."""
    future.release()


def _start_client(task_runner: Any) -> Any:
    """Start (or connect to) the run's cluster; a cluster that cannot be built as configured is
    one :class:`DaskClusterError` naming the options, before any node runs.

    Raises:
        DaskClusterError: The cluster class or ``cluster.adapt`` refused their arguments, or
            the cluster failed to start.
    """
    if task_runner.address:
        return task_runner.client  # reachability was checked before (dask.network)
    name = getattr(task_runner.cluster_class, "__qualname__", task_runner.cluster_class)
    prefect_dask_logger = task_runner.logger
    level = prefect_dask_logger.level
    prefect_dask_logger.setLevel(logging.CRITICAL)  # its own traceback: ours says it all
    try:
        return task_runner.client
    except Exception as exc:
        raise DaskClusterError(
            f"task_runner=dask could not start the cluster {name}"
            f"(**cluster_kwargs={task_runner.cluster_kwargs!r})"
            + (
                f" with adapt_kwargs={task_runner.adapt_kwargs!r}"
                if task_runner.adapt_kwargs
                else ""
            )
            + f": {type(exc).__name__}: {exc}. Check cluster_class, cluster_kwargs and "
            "adapt_kwargs (prefect.yml `runner:`); no node has run."
        ) from None
    finally:
        prefect_dask_logger.setLevel(level)


def _link_performance_report(path: str | None) -> None:
    """Link Dask's performance report (written when the run ends) from the flow run."""
    if not path:
        return
    from prefect.artifacts import create_link_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    uri = Path(path).resolve().as_uri()
    try:
        create_link_artifact(
            link=uri,
            link_text=Path(path).name,
            description="Dask performance report of this run (HTML, written when the run ends)",
        )
    except Exception as exc:  # an artifact is not worth failing the run for
        logger.debug("Could not link the Dask performance report: %r", exc)
    logger.info("Dask performance report: %s", path)


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
