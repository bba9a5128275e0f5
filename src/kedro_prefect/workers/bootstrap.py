"""Setting up a worker process for a Kedro project, and running a node there.

Backend-neutral: whichever backend runs node tasks in other processes (Dask workers today)
calls :func:`bootstrap_worker` once per process with what the driver computed
(:func:`run_project`, :func:`project_log_levels`), then runs each node in
:func:`run_node_on_worker`, which names its project: the hook manager is built there from that
project's settings module (a pluggy ``PluginManager`` cannot be pickled), once per project and
process, without Kedro's process-wide ``configure_project`` (several projects, and several
environments of one project, may share one cluster). Persisted datasets load and save there,
and the node's in-memory outputs are the *result* of its task.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

from kedro_prefect.execution.outputs import NodeData
from kedro_prefect.workers.hook_state import for_driver
from kedro_prefect.workers.session import (
    RunSession,
    enter_run,
    node_in_run,
    project_settings_once,
)


def run_project() -> tuple[str | None, str | None]:
    """Package name and source dir of the project being run, from the session's context.

    Kedro's process-wide ``PACKAGE_NAME`` is the fallback (``configure_project`` in a notebook,
    or a runner used outside a session): it names whichever project was configured last.
    """
    from kedro.framework.project import PACKAGE_NAME

    from kedro_prefect._upstream.kedro import context_package_name
    from kedro_prefect.hooks import run_params_recorder

    package_name = context_package_name(run_params_recorder.context) or PACKAGE_NAME
    source_dir = None
    module = sys.modules.get(package_name or "")
    if module is not None and module.__file__:
        source_dir = str(Path(module.__file__).resolve().parents[1])
    return package_name, source_dir


def project_log_levels(package_name: str | None) -> dict[str, Any]:
    """The driver's log levels, for the worker processes (:func:`bootstrap_worker`)."""
    from kedro.framework.project import LOGGING

    levels: dict[str, Any] = {}
    config = getattr(LOGGING, "data", None) or {}
    for name, logger_config in (config.get("loggers") or {}).items():
        if "level" in (logger_config or {}):
            levels[name] = logger_config["level"]
    if "level" in (config.get("root") or {}):
        levels[""] = config["root"]["level"]
    for name in ("kedro", "kedro_prefect", package_name):
        if name and name not in levels:
            levels[name] = logging.getLogger(name).getEffectiveLevel()
    return levels


_bootstrapped: dict[str, Any] = {}


def bootstrap_worker(
    package_name: str | None, source_dir: str | None, log_levels: dict[str, Any]
) -> None:
    """Make the project importable in this (worker) process and note its log levels."""
    _add_source_dir(source_dir)
    if package_name:
        from kedro_prefect.observe.logs import keep_project_logging_in_worker

        keep_project_logging_in_worker()  # once per process: Kedro's logging, kept by Prefect
    _bootstrapped["package_name"] = package_name
    _bootstrapped["log_levels"] = log_levels
    _bootstrapped.setdefault("levels_of", {})[package_name] = log_levels


def _add_source_dir(source_dir: str | None) -> None:
    """Put the project's ``src`` first on ``sys.path``.

    First, not only present: a local cluster's worker processes inherit the driver's
    ``sys.path``, which may hold another checkout of a package of the same name (a notebook or
    test session that bootstrapped several projects), and the project's must win.
    """
    if not source_dir or not Path(source_dir).is_dir():
        return
    if sys.path and sys.path[0] == source_dir:
        return
    if source_dir in sys.path:
        sys.path.remove(source_dir)
    sys.path.insert(0, source_dir)


def _ensure_worker_logging(package_name: str | None = None) -> None:
    """Send node log records to the Prefect API from this worker, at the driver's levels.

    Checked at the start of every node task: Prefect and Kedro (re)apply their logging config
    with ``dictConfig`` when they start up in the worker, which drops handlers added before.
    The log levels of each project sharing the worker are applied when its first node runs.
    """
    from prefect.logging.handlers import APILogHandler

    applied = _bootstrapped.setdefault("levels_applied", set())
    if package_name not in applied:
        applied.add(package_name)
        levels = _bootstrapped.get("levels_of", {}).get(package_name, {})
        for name, level in levels.items():
            logging.getLogger(name or None).setLevel(level)
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


def _check_project_source(package_name: str | None, source_dir: str | None) -> None:
    """Refuse to run a node of a project whose package this worker imported from elsewhere
    (two checkouts of one package sharing a cluster: a process holds one of them)."""
    module = sys.modules.get(package_name or "")
    file = getattr(module, "__file__", None)
    if not (file and source_dir) or Path(file).resolve().is_relative_to(source_dir):
        return
    raise RuntimeError(
        f"This Dask worker already runs package {package_name!r} from "
        f"{Path(file).resolve().parents[1]}, not from {source_dir}: a worker process holds one "
        "copy of a package. Run projects that share a package name on separate clusters."
    )


_hook_managers: dict[str | None, Any] = {}
_hook_managers_lock = threading.Lock()


def worker_hook_manager(package_name: str | None) -> Any:
    """The hook manager of one project in this process, built once per project (as
    ``ParallelRunner`` builds one per subprocess) from that project's own settings module,
    without touching Kedro's process-wide ``settings``; ``None``: the hooks of no project
    (Kedro's plugin hooks only, as a run outside a project gets)."""
    with _hook_managers_lock:
        manager = _hook_managers.get(package_name)
        if manager is None:
            from kedro_prefect._upstream.kedro import project_hook_manager

            manager = project_hook_manager(project_settings_once(package_name))
            _hook_managers[package_name] = manager
        return manager


def run_node_on_worker(
    payload: bytes,
    upstream: dict[str, NodeData],
    memory: dict[str, Any],
    is_async: bool,
    run_id: str | None,
    events: Any = None,
    project: tuple[str | None, str | None] = (None, None),
    session: RunSession | None = None,
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
        events: A :class:`~kedro_prefect.observe.events.DatasetEvents`: emit an event for each
            persisted dataset the node saved (here, where it saved them).
        project: The package name and source dir of the run's Kedro project (from the
            driver's session): the node gets that project's hooks, whatever other projects
            share the cluster.
        session: The driver's Kedro session of this run (:mod:`.session`): before the run's
            first node in this process, the project's hooks see ``after_context_created`` and
            ``after_catalog_created`` with the run's context and catalog, created here.

    Returns:
        The node's in-memory outputs, and what the hooks here gathered for the driver's
        (:mod:`.hook_state`).
    """
    import cloudpickle
    from kedro.io import DataCatalog, MemoryDataset

    from kedro_prefect._upstream.kedro_memory import infer_copy_mode
    from kedro_prefect.execution.local import run_node

    package_name, source_dir = project
    _add_source_dir(source_dir)
    _ensure_worker_logging(package_name)
    node, datasets, given = cloudpickle.loads(payload)
    _check_project_source(package_name, source_dir)
    catalog = DataCatalog(dict(datasets))
    available = dict(given)
    for outputs in upstream.values():
        available.update(outputs.data)
    for name, copy_mode in memory.items():
        if name in node.outputs:
            catalog[name] = MemoryDataset(copy_mode="assign")
        else:  # the dataset's own save() applies the copy mode, without catalog log lines
            data = available[name]
            catalog[name] = MemoryDataset(data=data, copy_mode=copy_mode or infer_copy_mode(data))
    hook_manager = worker_hook_manager(package_name)
    enter_run(session, hook_manager)
    with node_in_run(session, hook_manager):
        run_node(node, catalog, hook_manager, is_async, run_id, events=events)
    return NodeData(
        {name: catalog[name].load() for name in node.outputs if name in memory},
        for_driver(hook_manager, catalog, [node], run_id),
    )
