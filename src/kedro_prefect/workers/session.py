"""Kedro's session-level state in a worker process: the run's context and catalog, as its hooks
saw them in ``kedro run``.

``kedro run`` creates the project's ``KedroContext`` (hook ``after_context_created``) and the
run's catalog (``after_catalog_created``, with the run's save version and load versions) in the
driver, then calls ``before_pipeline_run``, the runner, and ``after_pipeline_run``. Hooks keep
state from the first two (kedro-viz: the catalog; kedro-mlflow: its configuration, tracking URI
and experiment) and use it in node and dataset hooks, which fire where the node runs. A worker
process has hook objects of its own, so before the first node of a run there, the worker creates
the run's context and catalog the way the session does, from the same project, configuration
source, environment and runtime parameters, and the project's hooks see
``after_context_created`` and ``after_catalog_created``: once per run and project in each worker
process (several projects and runs may share a cluster). ``before_pipeline_run`` and
``after_pipeline_run`` stay in the driver, once per run, as in Kedro.

kedro-telemetry's hooks are left out on workers (the driver already sent the run's telemetry).

Hook state decided in the driver for the run (kedro-mlflow: whether this pipeline is tracked)
reaches the workers' hooks before each node (:mod:`.hook_state`).

MLflow: if the driver has an active MLflow run when the nodes start (kedro-mlflow starts it in
``before_pipeline_run``), each node on a worker runs with that run active in its thread, on the
driver's tracking URI (:mod:`kedro_prefect._upstream.mlflow`): what the node, its hooks and its
datasets log goes to the run of the ``kedro run``, as with threads.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pluggy import PluginManager

logger = logging.getLogger(__name__)

#: Runs whose context a worker process keeps (the oldest is forgotten past this).
MAX_RUNS = 16
TELEMETRY = "kedro-telemetry"


@dataclass(frozen=True)
class RunSession:
    """What a worker needs to create a run's context and catalog as the session did."""

    run_id: str | None
    package_name: str | None
    project_path: str
    conf_source: str | None
    env: str | None
    runtime_params: dict[str, Any] = field(default_factory=dict)
    load_versions: dict[str, str] = field(default_factory=dict)
    save_version: str | None = None
    mlflow_run: tuple[str, str] | None = None  # (tracking URI, run id) active in the driver
    #: What the driver's hooks pass to the workers' copies for this run (:mod:`.hook_state`).
    hook_states: dict[str, Any] = field(default_factory=dict)


def run_session(
    run_id: str | None, package_name: str | None, hook_manager: PluginManager | None = None
) -> RunSession | None:
    """The driver's session of this run (``None``: the runner runs outside a Kedro session);
    ``hook_manager``: the driver's, whose hooks may pass state to the workers."""
    from kedro_prefect._upstream.kedro import run_params_run_id
    from kedro_prefect.hooks import run_params_recorder
    from kedro_prefect.workers.hook_state import for_workers

    context = run_params_recorder.context
    params = run_params_recorder.get(run_id)
    if context is None or not params:
        return None
    conf_source = getattr(getattr(context, "config_loader", None), "conf_source", None)
    return RunSession(
        run_id=run_id,
        package_name=package_name,
        project_path=str(params.get("project_path") or context.project_path),
        conf_source=str(conf_source) if conf_source is not None else None,
        env=params.get("env") or getattr(context, "env", None),
        runtime_params=dict(params.get("runtime_params") or {}),
        load_versions=dict(params.get("load_versions") or {}),
        save_version=run_params_run_id(params) or run_id,
        mlflow_run=_driver_mlflow_run(),
        hook_states=for_workers(hook_manager),
    )


def _driver_mlflow_run() -> tuple[str, str] | None:
    if "mlflow" not in sys.modules:
        return None
    from kedro_prefect._upstream.mlflow import active_run

    return active_run()


_runs: OrderedDict[tuple[str | None, str | None], Any] = OrderedDict()
_runs_lock = threading.Lock()
_settings: dict[str | None, Any] = {}
_settings_lock = threading.Lock()


def project_settings_once(package_name: str | None) -> Any:
    """The settings of the project ``package_name`` in this process, loaded once, as Kedro
    loads them once per process (dynaconf looks through the call stack as it loads them: ~0.2-1 s
    in a worker that has imported thousands of modules)."""
    from kedro_prefect._upstream.kedro import project_settings

    with _settings_lock:
        if package_name not in _settings:
            _settings[package_name] = project_settings(package_name)
        return _settings[package_name]


def enter_run(session: RunSession | None, hook_manager: PluginManager) -> None:
    """Create the run's context and catalog in this process, once per run and project, firing
    ``after_context_created`` and ``after_catalog_created`` on ``hook_manager``."""
    if session is None:
        return
    key = (session.package_name, session.run_id)
    with _runs_lock:
        if key in _runs:
            return
        _runs[key] = None
        while len(_runs) > MAX_RUNS:
            _runs.popitem(last=False)
        conf = Path(session.conf_source or Path(session.project_path) / "conf")
        if not Path(session.project_path).is_dir() or not conf.exists():
            logger.warning(
                "kedro-prefect: this worker cannot read the configuration of project %s (%s); "
                "its hooks did not see after_context_created / after_catalog_created here, and "
                "hooks keeping state from them will lack it. Make the project directory "
                "available on the workers at the same path.",
                session.package_name,
                conf,
            )
            return
        try:
            _runs[key] = _create(session, hook_manager)
        except BaseException:
            del _runs[key]  # each node here fails the same way, as the session would have
            raise


def _create(session: RunSession, hook_manager: PluginManager) -> Any:
    import warnings

    from kedro_prefect._upstream.kedro import create_run_catalog, create_run_context

    hooks = _SessionHooks(hook_manager)
    with warnings.catch_warnings():
        # Kedro 1.7's config loader on OmegaConf 2.4: the driver's session printed it once,
        # as under Kedro's runners; every worker reading the config again would repeat it.
        warnings.filterwarnings(
            "ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning
        )
        context = create_run_context(
            project_settings_once(session.package_name),
            session.package_name,
            session.project_path,
            session.conf_source,
            session.env,
            session.runtime_params,
            hooks,
        )
        hooks.hook.after_context_created(context=context)
        create_run_catalog(context, session.save_version, session.load_versions)
    return context


class _SessionHooks:
    """The project's hook manager as the worker's context sees it: kedro-telemetry left out."""

    def __init__(self, manager: Any):
        import re
        from types import SimpleNamespace

        removed = [
            plugin
            for plugin, dist in manager.list_plugin_distinfo()
            if re.sub(r"[-_.]+", "-", dist.project_name).lower() == TELEMETRY
        ]
        self.hook = SimpleNamespace(
            **{
                name: manager.subset_hook_caller(name, remove_plugins=removed)
                for name in ("after_context_created", "after_catalog_created")
            }
        )


def node_in_run(session: RunSession | None, hook_manager: PluginManager | None = None) -> Any:
    """A context manager around one node on a worker: the driver's MLflow run active in this
    thread while it runs (nothing when the driver has none). Before it, the worker's hooks get
    what the driver's passed for this run (:func:`.hook_state.use_driver_states`)."""
    if session is not None and session.hook_states:
        from kedro_prefect.workers.hook_state import use_driver_states

        use_driver_states(hook_manager, session.hook_states)
    if session is None or session.mlflow_run is None:
        return contextlib.nullcontext()
    from kedro_prefect._upstream.mlflow import run_active_in_thread

    return _mlflow_run_here(run_active_in_thread, *session.mlflow_run)


@contextlib.contextmanager
def _mlflow_run_here(activate: Any, tracking_uri: str, run_id: str) -> Iterator[None]:
    """``activate(tracking_uri, run_id)`` around the node; an unreachable run is one clear
    error (the node fails), never a new MLflow run on the worker."""
    from kedro_prefect.errors import WorkerRunStateError

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(activate(tracking_uri, run_id))
        except Exception as exc:
            raise WorkerRunStateError(
                f"This worker cannot reach the MLflow run {run_id} of the kedro run at "
                f"{tracking_uri} ({type(exc).__name__}: {exc}). Track to an MLflow server, or "
                "to a directory the workers share at the same path (mlflow.yml "
                "server.mlflow_tracking_uri)."
            ) from exc
        yield
