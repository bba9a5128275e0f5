"""The task runner of ``task_runner=dask``: a ``LocalCluster`` of worker processes for the run, or
an existing scheduler at ``address=``.

A local cluster is closed at the end of the run (also when a node fails); an existing one is
left running. An unreachable address fails within ``CONNECT_TIMEOUT`` seconds, naming the
address, before any node runs.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from kedro_prefect._upstream.prefect_dask import task_runner_classes
from kedro_prefect.dask.network import (
    CONNECT_TIMEOUT,
    check_api_reachable_from,
    check_scheduler_reachable,
)
from kedro_prefect.dask.resources import node_resources
from kedro_prefect.dask.worker import run_task_on_worker
from kedro_prefect.errors import PrefectRunnerConfigError

if TYPE_CHECKING:
    from kedro_prefect.config.options import RunnerOptions

#: The one message for a missing Dask extra.
DASK_EXTRA_MISSING = (
    "task_runner=dask needs prefect-dask, dask and distributed: pip install 'kedro-prefect[dask]'"
)


def require_prefect_dask() -> type:
    """prefect-dask's ``DaskTaskRunner``, or one clear error saying what is missing.

    Raises:
        PrefectRunnerConfigError: prefect-dask is not installed, or it is installed but does
            not import (e.g. a version that does not match the installed Prefect).
    """
    from importlib.util import find_spec

    if find_spec("prefect_dask") is None or find_spec("distributed") is None:
        raise PrefectRunnerConfigError(DASK_EXTRA_MISSING)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise PrefectRunnerConfigError(
            f"task_runner=dask: prefect-dask is installed but does not import ({exc}); "
            "install a version that matches the installed Prefect: "
            "pip install -U 'kedro-prefect[dask]'"
        ) from None
    return DaskTaskRunner


def dask_task_runner(options: RunnerOptions) -> Any:
    """The task runner for ``task_runner=dask``: a LocalCluster of processes, or ``address=``.

    Raises:
        DaskSchedulerUnreachableError: ``address=`` did not answer within ``CONNECT_TIMEOUT``.
        PrefectRunnerConfigError: ``address=`` is on another machine while the Prefect API is
            only reachable from this one.
    """
    require_prefect_dask()
    runner_cls, _ = _classes()
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


def is_dask_runner(task_runner: Any) -> bool:
    """Whether ``task_runner`` is the Dask task runner built by :func:`dask_task_runner`."""
    if "prefect_dask" not in sys.modules:
        return False
    runner_cls, _ = _classes()
    return isinstance(task_runner, runner_cls)


def _task_resources(task: Any) -> dict[str, float]:
    return node_resources(set(task.tags))


def _classes() -> tuple[type, type]:
    """``KedroDaskTaskRunner`` and ``KedroDaskFuture`` (defined on first use: imports dask)."""
    return task_runner_classes(run_task_on_worker, _task_resources)
