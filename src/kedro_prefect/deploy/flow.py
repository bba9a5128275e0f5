"""The deployable flow: every kedro-prefect deployment runs :func:`kedro_pipeline`.

Its entrypoint is a module path (``kedro_prefect.deploy.kedro_pipeline``), so ``prefect.serve`` and
workers re-import it from the installed package whatever their working directory. The flow opens a
``KedroSession`` for the project and runs the pipeline with :class:`~kedro_prefect.PrefectRunner`,
which, seeing the running flow run, submits one task per node into it: one flow run, N task runs.

The flow's parameters are names and plain values only (project path, pipeline, env, runtime
parameters, runner options): the catalog and credentials are loaded inside the run, from the
project's ``conf/``, and never reach the Prefect API.
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC
from pathlib import Path
from typing import Any

from prefect import flow


def _flow_run_name() -> str:
    """``<project dir>-<pipeline>-<scheduled start, UTC>``, like ``kedro run``'s flow run names."""
    from prefect.runtime import flow_run

    parameters = flow_run.parameters
    if parameters.get("nodes") and flow_run.name:  # a group's child run, named by its parent
        return str(flow_run.name)
    project = Path(parameters.get("project_path") or "kedro").name
    start = flow_run.scheduled_start_time.astimezone(UTC).strftime("%Y-%m-%dT%H.%M.%SZ")
    return f"{project}-{parameters.get('pipeline') or '__default__'}-{start}"


def _kedro_pipeline(
    project_path: str,
    pipeline: str = "__default__",
    env: str | None = None,
    params: dict[str, Any] | None = None,
    runner_options: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
    nodes: list[str] | None = None,
) -> None:
    """Run one Kedro pipeline of the project at ``project_path`` with ``PrefectRunner``.

    Args:
        project_path: Absolute path of the Kedro project (where its ``pyproject.toml`` is).
        pipeline: Name of a registered pipeline.
        env: Kedro environment (``conf/<env>``); default: Kedro's default (``local``).
        params: Runtime parameters, as ``kedro run --params``.
        runner_options: :class:`~kedro_prefect.RunnerOptions` fields, as ``--runner-params``.
        trigger: Set by an ``on_dataset_saved`` trigger: the ``kedro.dataset.saved`` event that
            started this run (dataset, project, version, upstream ``flow_run``...). Logged, linked
            to the upstream flow run by a ``kedro.run.triggered`` event, and given to the
            pipeline as the runtime parameter ``prefect_trigger``.
        nodes: Run only these nodes of the pipeline (``kedro run --nodes``): set by a run that
            hands a group of its nodes to a work pool (``infrastructure:``), as a child flow run.
    """
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from kedro_prefect._upstream.kedro import session_run_pipeline
    from kedro_prefect.runner import PrefectRunner

    path = Path(project_path).resolve()
    if not (path / "pyproject.toml").is_file():
        import socket

        from kedro_prefect.errors import ProjectNotFoundError

        raise ProjectNotFoundError(
            f"No Kedro project at project_path={project_path!r} on {socket.gethostname()}, the "
            "machine running this flow: the deployment's project_path must be where the project "
            "is on the machine that runs it (the worker, or `kedro prefect serve`). Install the "
            "project there, or re-deploy with that machine's path "
            "(kedro_deployment(..., project_path=...))."
        )
    if trigger:
        from kedro_prefect.observe.events import announce_trigger

        announce_trigger(trigger)
        params = {**(params or {}), "prefect_trigger": trigger}
    runner = PrefectRunner(**(runner_options or {}))
    with contextlib.chdir(path):
        bootstrap_project(path)
        session = KedroSession.create(project_path=path, env=env, runtime_params=params)
        with session:
            selection: dict[str, Any] = {"node_names": nodes} if nodes else {}
            session.run(runner=runner, **session_run_pipeline(pipeline), **selection)


# Deployments name the flow by the module path of its function: keep the public, stable
# `kedro_prefect.deploy.kedro_pipeline` (deployments made by earlier versions point there, and the
# package exports it).
_kedro_pipeline.__module__ = "kedro_prefect.deploy"
_kedro_pipeline.__name__ = _kedro_pipeline.__qualname__ = "kedro_pipeline"
kedro_pipeline = flow(
    name="kedro-pipeline",
    flow_run_name=_flow_run_name,
    persist_result=False,
    log_prints=False,
)(_kedro_pipeline)


def flow_of_this_run() -> Any:
    """:data:`kedro_pipeline`, named as the flow of the flow run this process executes.

    A worker or ``kedro prefect serve`` starts each flow run in a new process that imports the
    entrypoint; the flow found there is named ``kedro-pipeline``, while the server files the run
    under the project's flow (its package name). Named after the run's flow, the engine's log
    lines ("Beginning flow run ... for flow ...") name the same flow as the API and the UI.
    """
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if not run_id:
        return kedro_pipeline
    try:
        from uuid import UUID

        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            name = client.read_flow(client.read_flow_run(UUID(run_id)).flow_id).name
    except Exception:  # the engine reports API problems itself, with context
        return kedro_pipeline
    return kedro_pipeline if name == kedro_pipeline.name else kedro_pipeline.with_options(name=name)
