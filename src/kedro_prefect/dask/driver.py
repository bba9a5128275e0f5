"""The driver side of ``task_runner=dask``: checks before the first node, task parameters, and
what happens when a node completes.

In-memory datasets travel as task results: consumers receive their producers' Dask futures as
task parameters, so Dask moves the data worker to worker and the driver never loads it. Only the
pipeline's free in-memory outputs are fetched to the driver, because ``run()`` returns them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kedro_prefect._upstream.kedro import memory_copy_mode, single_process
from kedro_prefect.dask.resources import node_resources
from kedro_prefect.dask.worker import plugin_class, take_worker_records
from kedro_prefect.errors import DaskClusterError, DaskDatasetError
from kedro_prefect.workers.bootstrap import project_log_levels, run_node_on_worker, run_project
from kedro_prefect.workers.session import run_session

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline
    from kedro.pipeline.node import Node
    from prefect.futures import PrefectFuture

    from kedro_prefect.execution.versions import RunVersions

logger = logging.getLogger(__name__)


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
        if single_process(dataset):
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


def _project_bootstrap(package_name: str | None, source_dir: str | None) -> Any:
    levels = project_log_levels(package_name)
    return plugin_class()(package_name, source_dir, levels)


class DaskNodeExecution:  # implements execution.protocol.NodeExecution
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
        events: Any = None,
        versions: RunVersions | None = None,
    ):
        from kedro_prefect.execution.versions import RunVersions

        for node in pipeline.nodes:
            node_resources(set(node.tags))
        validate_datasets(pipeline, catalog)
        self._catalog = catalog
        self._is_async = is_async
        self._run_id = run_id
        self._events = events
        # Versioned datasets go to the workers as copies with this run's versions pinned,
        # never with a load version the driver's object cached earlier.
        self._versions = versions or RunVersions(catalog)
        self._memory: dict[str, Any] = {}
        self._datasets: dict[str, Any] = {}
        for name in pipeline.datasets():
            dataset = catalog.get(name, fallback_to_runtime_pattern=True)
            if _is_in_memory(dataset):
                self._memory[name] = memory_copy_mode(dataset)
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
        self._client = client = _start_client(task_runner)
        _log_dashboard(client)
        _link_performance_report(task_runner.performance_report_path)
        self._project = run_project()
        # The run's session, for the project's hooks on the workers (workers.session).
        self._session = run_session(run_id, self._project[0])
        plugin = _project_bootstrap(*self._project)
        client.register_plugin(plugin, name=plugin.name)

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

        # Loaded here without Kedro's "Loading data from ..." line: the node's Task on the
        # worker loads it again from a MemoryDataset, and logs it, as SequentialRunner would.
        given = {
            name: self._catalog.get(name, fallback_to_runtime_pattern=True).load()
            for name in node.inputs
            if name in self._memory and name not in self._producer
        }
        datasets = {
            name: self._versions.for_node(name, loads=name in node.inputs)
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
            "events": self._events,
            "project": self._project,
            "session": self._session,
        }

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
