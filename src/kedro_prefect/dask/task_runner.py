"""The task runner of ``task_runner=dask``: a ``LocalCluster`` of worker processes for the run, or
an existing scheduler at ``address=``.

A local cluster is closed at the end of the run (also when a node fails); an existing one is
left running. An unreachable address fails within ``CONNECT_TIMEOUT`` seconds, naming the
address, before any node runs.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kedro_prefect._upstream.prefect_dask import task_runner_classes
from kedro_prefect.dask.network import (
    CONNECT_TIMEOUT,
    check_api_reachable_from,
    check_scheduler_reachable,
)
from kedro_prefect.dask.placement import Placement
from kedro_prefect.dask.resources import node_resources
from kedro_prefect.dask.worker import run_task_on_worker
from kedro_prefect.errors import DaskClusterError, PrefectRunnerConfigError

if TYPE_CHECKING:
    from kedro_prefect.config.options import RunnerOptions

#: The one message for a missing Dask extra.
DASK_EXTRA_MISSING = (
    "task_runner=dask needs prefect-dask, dask and distributed: "
    "pip install 'prefect-dask>=0.3.6' 'dask[distributed]>=2023.9.2'"
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
            "pip install -U 'prefect-dask>=0.3.6'"
        ) from None
    return DaskTaskRunner


def dask_task_runner(options: RunnerOptions, early: Callable[..., Any] | None = None) -> Any:
    """The task runner for ``task_runner=dask``: a LocalCluster of processes, or ``address=``.

    ``early``: the run's local cluster, already being started (an
    :class:`~kedro_prefect.dask.early.EarlyCluster`, from the same options).

    Raises:
        DaskSchedulerUnreachableError: ``address=`` did not answer within ``CONNECT_TIMEOUT``.
        PrefectRunnerConfigError: ``address=`` is on another machine while the Prefect API is
            only reachable from this one.
    """
    require_prefect_dask()
    runner_cls, _ = _classes()
    if options.performance_report_path:
        from importlib.util import find_spec

        if find_spec("bokeh") is None:
            raise DaskClusterError(
                "PrefectRunner option performance_report_path: Dask's performance report "
                "needs bokeh: pip install 'bokeh>=3.1'; no node has run."
            )
    if options.address:
        from prefect.settings import get_current_settings

        check_api_reachable_from(options.address, str(get_current_settings().api.url))
        check_scheduler_reachable(options.address)
        client_kwargs = {"timeout": f"{CONNECT_TIMEOUT}s", **(options.client_kwargs or {})}
        report = options.performance_report_path
        return runner_cls(
            address=options.address,
            client_kwargs=client_kwargs,
            performance_report_path=str(Path(report).resolve()) if report else None,
        )
    cls, cluster_kwargs = _cluster_spec(options)
    if options.adapt_kwargs:
        _check_adapt_kwargs(cls, options.adapt_kwargs)
    report = options.performance_report_path
    return runner_cls(
        cluster_class=early if early is not None else cls,
        cluster_kwargs=cluster_kwargs,
        adapt_kwargs=options.adapt_kwargs,
        client_kwargs=options.client_kwargs,
        performance_report_path=str(Path(report).resolve()) if report else None,
    )


def local_cluster_spec(options: RunnerOptions) -> tuple[type, dict[str, Any]] | None:
    """The class and keyword arguments of the run's ``LocalCluster`` (``None``: the run starts
    no ``LocalCluster``: ``address=`` or another cluster class).

    Raises:
        KedroPrefectError: The options the task runner refuses (see :func:`dask_task_runner`).
    """
    if options.address:
        return None
    require_prefect_dask()
    cls, cluster_kwargs = _cluster_spec(options)
    if not _is_local_cluster(cls):
        return None
    if options.adapt_kwargs:
        _check_adapt_kwargs(cls, options.adapt_kwargs)
    return cls, cluster_kwargs


def _cluster_spec(options: RunnerOptions) -> tuple[type, dict[str, Any]]:
    """The cluster class and its keyword arguments, checked (one error naming the option).

    A ``LocalCluster``'s workers import what node tasks need as they start
    (:mod:`kedro_prefect.dask.preload`, after any preload of ``cluster_kwargs``).
    """
    from kedro_prefect.config.options import DEFAULT_CLUSTER_CLASS

    cluster_class = options.cluster_class or DEFAULT_CLUSTER_CLASS
    cls = import_cluster_class(cluster_class)
    cluster_kwargs: dict[str, Any] = dict(options.cluster_kwargs or {})
    if _is_local_cluster(cls):
        cluster_kwargs.setdefault("processes", True)
    if options.n_workers is not None:
        cluster_kwargs["n_workers"] = options.n_workers
    if options.threads_per_worker is not None:
        cluster_kwargs["threads_per_worker"] = options.threads_per_worker
    check_signature(cls, cluster_kwargs, f"cluster_kwargs of {cluster_class}")
    if _is_local_cluster(cls):  # it passes unknown keywords on to each worker process
        _check_local_cluster_kwargs(cluster_kwargs)
        if cluster_kwargs.get("processes"):
            cluster_kwargs["preload"] = _with_preload(cluster_kwargs.get("preload"))
    return cls, cluster_kwargs


#: The module each worker of a ``LocalCluster`` imports as it starts (named, not imported here:
#: importing it freezes the importing process's objects).
PRELOAD = "kedro_prefect.dask.preload"


def _with_preload(preload: Any) -> list[str]:
    given = [preload] if isinstance(preload, str) else list(preload or [])
    return given if PRELOAD in given else [*given, PRELOAD]


def import_cluster_class(path: str) -> type:
    """The cluster class named by ``path`` (``package.module.Class`` or ``package.module:Class``).

    Raises:
        DaskClusterError: It does not import, or is not a class.
    """
    module_name, _, name = path.replace(":", ".").rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise DaskClusterError(
            f"PrefectRunner option cluster_class={path!r}: cannot import it ({reason}). "
            "Use the import path of a Dask cluster class, e.g. distributed.LocalCluster, and "
            "install its package where `kedro run` runs (e.g. dask-jobqueue for "
            "dask_jobqueue.SLURMCluster); no node has run."
        ) from None
    if not callable(cls):
        raise DaskClusterError(
            f"PrefectRunner option cluster_class={path!r} is not a class; no node has run."
        )
    return cls


def _is_local_cluster(cls: Any) -> bool:
    from distributed import LocalCluster

    return isinstance(cls, type) and issubclass(cls, LocalCluster)


def _check_local_cluster_kwargs(kwargs: dict[str, Any]) -> None:
    """``LocalCluster`` hands keywords it does not know to its workers, which then fail to
    start (after seconds, with a traceback per worker): refuse them here instead."""
    from distributed import LocalCluster, Nanny, Worker
    from distributed.core import Server

    known: set[str] = set()
    for fn in (LocalCluster, Nanny, Worker, Server):
        known |= {
            name
            for name, p in inspect.signature(fn).parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise DaskClusterError(
            f"PrefectRunner option cluster_kwargs: LocalCluster (and its workers) take no "
            f"argument {', '.join(map(repr, unknown))}; no node has run."
        )


def _parameter_names(*fns: Any) -> set[str]:
    names: set[str] = set()
    for fn in fns:
        try:
            parameters = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            continue
        names |= {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return names


def _check_adapt_kwargs(cls: Any, kwargs: dict[str, Any]) -> None:
    """``cluster.adapt`` hands keywords it does not know on to the scheduler, which logs an
    error every second and never adapts: refuse them here instead."""
    from distributed import Scheduler
    from distributed.deploy.adaptive import Adaptive
    from distributed.deploy.adaptive_core import AdaptiveCore

    known = _parameter_names(
        getattr(cls, "adapt", None), Adaptive, AdaptiveCore, Scheduler.workers_to_close
    ) - {"self", "Adaptive", "cluster", "n", "target", "attribute"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise DaskClusterError(
            f"PrefectRunner option adapt_kwargs: {', '.join(map(repr, unknown))} is not an "
            f"argument of {getattr(cls, '__name__', cls)}.adapt (known: "
            f"{', '.join(sorted(known))}); no node has run."
        )


def check_signature(fn: Any, kwargs: dict[str, Any], what: str) -> None:
    """Refuse keyword arguments ``fn`` does not take (when its signature says so).

    Raises:
        DaskClusterError: Some keyword is not a parameter of ``fn``.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        signature.bind_partial(**kwargs)
    except TypeError as exc:
        raise DaskClusterError(
            f"PrefectRunner option {what}: {exc} (given: {', '.join(sorted(kwargs))}); "
            "no node has run."
        ) from None


def _task_resources(task: Any) -> dict[str, float]:
    return node_resources(set(task.tags))


def _classes() -> tuple[type, type]:
    """``KedroDaskTaskRunner`` and ``KedroDaskFuture`` (defined on first use: imports dask)."""
    return task_runner_classes(run_task_on_worker, _task_resources, Placement)
