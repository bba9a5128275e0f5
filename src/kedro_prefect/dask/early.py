"""A local cluster for the run, started in the background as the run begins.

Starting a ``LocalCluster`` takes seconds (the scheduler, one process per worker, each
importing Dask, then Prefect, Kedro and kedro-prefect: :mod:`kedro_prefect.dask.preload`).
The run starts it in a background thread before Prefect's flow run is set up (the local API,
the flow run, the run's observers), and the task runner takes it when the flow needs it: the
two overlap instead of adding up.

Only for a ``LocalCluster`` (or a subclass) started by the run: ``address=`` (an existing
cluster) and other cluster classes (SLURM, Kubernetes...) start as before, when the flow
enters the task runner. A cluster the run never took (the run failed before its flow
started) is closed when the run ends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline

    from kedro_prefect.config.options import RunnerOptions

#: What the workers of a cluster started early prepare as they start
#: (:mod:`kedro_prefect.dask.preload`): JSON, in the environment they start with (the Nanny's
#: ``env``, set in each worker process before its preload).
WARM_UP_ENV = "KEDRO_PREFECT_DASK_WARM_UP"


class EarlyCluster:
    """A cluster being started in a background thread; called like its class, it waits for it.

    prefect-dask's task runner builds its cluster with ``cluster_class(**cluster_kwargs)`` and
    closes it with the run: given this object as ``cluster_class``, it gets the cluster started
    here (or the exception its start raised, which the driver words as before).
    """

    def __init__(self, cls: type, kwargs: dict[str, Any]):
        self.cls = cls
        self.kwargs = dict(kwargs)
        self.__qualname__ = getattr(cls, "__qualname__", str(cls))  # named as its class
        self.__module__ = getattr(cls, "__module__", __name__)
        self.taken = False
        self._cluster: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._start, name="kedro-prefect-dask-cluster-start", daemon=True
        )
        self._thread.start()

    def _start(self) -> None:
        try:
            self._cluster = self.cls(**self.kwargs)
        except BaseException as exc:  # raised where the task runner takes the cluster
            self._error = exc

    def __call__(self, **kwargs: Any) -> Any:
        """The started cluster (``kwargs``: the same as it was started with)."""
        self._thread.join()
        self.taken = True
        if self._error is not None:
            raise self._error
        return self._cluster

    def close(self) -> None:
        """Close the cluster if the run never took it."""
        if self.taken:
            return
        self._thread.join()
        self.taken = True
        if self._cluster is not None:
            self._cluster.close()


@contextmanager
def local_cluster_started_early(
    options: RunnerOptions, pipeline: Pipeline, catalog: CatalogProtocol
) -> Iterator[EarlyCluster | None]:
    """Start the run's ``LocalCluster`` now, in the background; closed at the end if untaken.

    Its workers set themselves up for the run's project as they start (:func:`warm_up`).
    Yields ``None`` (nothing started) for ``address=``, another cluster class, or options the
    task runner will refuse (it says so itself, as before, when the flow enters it).
    """
    import json

    from kedro_prefect.dask.forkserver import forked_workers
    from kedro_prefect.dask.task_runner import local_cluster_spec

    try:
        spec = local_cluster_spec(options)
    except Exception:  # refused: the task runner raises the same error in the flow
        spec = None
    if spec is None:
        yield None
        return
    try:
        plan = json.dumps(warm_up(pipeline, catalog))
    except Exception:  # the workers then prepare only what every run needs
        plan = "{}"
    cls, kwargs = spec
    processes = bool(kwargs.get("processes"))
    workers: AbstractContextManager[dict[str, str]] = (
        forked_workers() if processes else nullcontext({})
    )
    with workers as added:  # forked: their imports done
        if processes:  # given to each worker process as it starts (the Nanny's `env`): what
            # the run added since the fork server started (a spawned worker inherits it)
            env = {**added, **(kwargs.get("env") or {}), WARM_UP_ENV: plan}
            kwargs = {**kwargs, "env": env}
        early = EarlyCluster(cls, kwargs)
        try:
            yield early
        finally:
            early.close()


def warm_up(pipeline: Pipeline, catalog: CatalogProtocol) -> dict[str, Any]:
    """What a worker prepares as it starts, for the run's first node task there: the project
    (its ``src`` on ``sys.path``, its log levels, its hooks: what the project's worker plugin
    and the first node do) and the modules of the nodes' functions and of the persisted
    datasets (a node task unpickles them: pandas and the like)."""
    from kedro_prefect._upstream.kedro import is_in_memory, pipeline_dataset
    from kedro_prefect.workers.bootstrap import project_log_levels, run_project

    package_name, source_dir = run_project()
    modules = {getattr(node.func, "__module__", None) for node in pipeline.nodes}
    for name in pipeline.datasets():
        try:
            dataset = pipeline_dataset(catalog, name)
        except Exception:  # the run says so itself, before any node
            continue
        if not is_in_memory(dataset):
            modules.add(type(dataset).__module__)
    return {
        "package_name": package_name,
        "source_dir": source_dir,
        "log_levels": project_log_levels(package_name),
        "modules": sorted(m for m in modules if m and m != "__main__"),
    }
