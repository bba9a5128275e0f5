"""Prefect deployments of Kedro pipelines: the Python API (``kedro_deployment``) and the project
(``prefect.yml`` deployments) that ``kedro prefect deploy`` and ``serve`` work with."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from kedro_prefect.config import (
    DeploymentConfig,
    ProjectConfig,
    ProjectConfigError,
    ScheduleConfig,
    check_deployment_name,
)
from kedro_prefect.deploy.flow import kedro_pipeline
from kedro_prefect.errors import DeployError
from kedro_prefect.workpools import FLOW_ENTRYPOINT

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment


def kedro_deployment(
    name: str,
    project_path: str | Path = ".",
    pipeline: str = "__default__",
    *,
    env: str | None = None,
    params: dict[str, Any] | None = None,
    runner_options: dict[str, Any] | None = None,
    cron: str | None = None,
    interval: float | timedelta | None = None,
    rrule: str | None = None,
    timezone: str | None = None,
    anchor_date: datetime | None = None,
    tags: Iterable[str] = (),
    description: str | None = None,
    version: str | None = None,
    work_pool: str | None = None,
    work_queue: str | None = None,
    job_variables: dict[str, Any] | None = None,
    paused: bool | None = None,
    concurrency_limit: int | None = None,
    flow_name: str | None = None,
    on_dataset_saved: Iterable[str] = (),
    on_dataset_saved_all_within: float | timedelta | None = None,
) -> RunnerDeployment:
    """A Prefect ``RunnerDeployment`` running ``pipeline`` of the Kedro project at ``project_path``.

    Serve it with ``prefect.serve(deployment)``, or register it for a work pool with
    ``prefect.deploy(deployment, work_pool_name=...)`` or ``deployment.apply(work_pool_name=...)``.
    Everything is validated before anything is created; a bad value raises
    :class:`~kedro_prefect.config.ProjectConfigError` naming it.

    Args:
        name: Deployment name (unique per flow; re-applying the same name updates it).
        project_path: The Kedro project directory. A path that is not on this machine (only on
            the worker that runs the flow) must be absolute and needs ``flow_name``; the
            project is then checked where the run starts, on the worker.
        pipeline: A registered pipeline of the project.
        env: Kedro environment of the runs.
        params: Kedro runtime parameters (plain values), as ``kedro run --params``.
        runner_options: PrefectRunner options, as ``--runner-params``.
        cron: Cron schedule, e.g. ``"0 2 * * *"``.
        interval: Seconds (or a ``timedelta``) between runs.
        rrule: iCalendar RRULE schedule.
        timezone: IANA time zone of the schedule (default UTC).
        anchor_date: Start of the intervals (``interval`` only).
        tags: Deployment tags.
        description: Deployment description (shown in the UI).
        version: Deployment version label.
        work_pool: Work pool the deployment is for (only needed with ``apply``).
        work_queue: Work queue of that pool.
        job_variables: Overrides of the work pool's job template.
        paused: Create the deployment paused.
        on_dataset_saved: Run when one of these datasets is saved (``<package>.<dataset>`` for
            another project's); see ``docs/data-driven.md``.
        on_dataset_saved_all_within: Instead, run once all of them were saved within this
            window (seconds or a ``timedelta``).
        concurrency_limit: Most runs of this deployment at once.
        flow_name: Name of the Prefect flow; default: the project's ``runner.flow_name`` in
            ``prefect.yml``, else its package name (the flow ``kedro run`` reports to).

    Returns:
        The deployment, not yet registered with the API.
    """
    kinds = {"cron": cron, "interval": interval, "rrule": rrule}
    schedule: dict[str, Any] | None = None
    if any(value is not None for value in kinds.values()):
        schedule = {key: value for key, value in kinds.items() if value is not None}
        schedule.update(
            {
                key: value
                for key, value in {"timezone": timezone, "anchor_date": anchor_date}.items()
                if value is not None
            }
        )
    elif timezone or anchor_date:
        raise ProjectConfigError("timezone and anchor_date need one of cron, interval or rrule")
    raw = {
        "pipeline": pipeline,
        "env": env,
        "schedule": schedule,
        "parameters": params or {},
        "runner": runner_options or {},
        "tags": list(tags),
        "description": description,
        "version": version,
        "work_pool": work_pool,
        "work_queue": work_queue,
        "job_variables": job_variables or {},
        "paused": paused,
        "concurrency_limit": concurrency_limit,
        "on_dataset_saved": list(on_dataset_saved),
        "on_dataset_saved_all_within": on_dataset_saved_all_within,
    }
    config = validate_deployment(name, raw)
    path = Path(project_path)
    if (path / "pyproject.toml").is_file():
        project = load_project(path, env)
        project.check_pipeline(name, config.pipeline)
    else:
        project = _remote_project(path, flow_name)
    return project.deployment(name, config, default_env=env, flow_name=flow_name)


def _remote_project(path: Path, flow_name: str | None) -> Project:
    """A project that is not on this machine (only where the flow runs): checked at run start."""
    if not path.is_absolute():
        raise ProjectConfigError(
            f"project_path {str(path)!r}: no Kedro project there (no pyproject.toml). A path that "
            "exists only on the machine running the flow (a worker) must be absolute, "
            "e.g. '/srv/sales_demo'"
        )
    if not flow_name:
        raise ProjectConfigError(
            f"project_path {str(path)!r} is not on this machine, so the project's package name "
            "(the flow name) cannot be read from it: pass flow_name='<package name>' (the flow "
            "`kedro run --runner=kedro_prefect.PrefectRunner` reports to)"
        )
    from kedro_prefect.config import ProjectConfig

    return Project(path, flow_name, ProjectConfig(), on_this_machine=False)


def validate_deployment(name: str, raw: dict[str, Any]) -> DeploymentConfig:
    """Validate one deployment as if it were ``deployments: {name: raw}`` in prefect.yml."""
    from kedro_prefect.config import validate_project_config

    return validate_project_config({"deployments": {name: raw}}).deployments[name]


def load_project(project_path: Path, env: str | None = None) -> Project:
    """Bootstrap the Kedro project and read its validated prefect.yml for ``env``."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from kedro_prefect.config import load_project_config

    path = project_path.resolve()
    metadata = bootstrap_project(path)
    session = KedroSession.create(project_path=path, env=env, save_on_close=False)
    with session:
        config_loader = session.load_context().config_loader
    project = Project(path, metadata.package_name, load_project_config(config_loader))
    project.config_loaders[env] = config_loader  # reused for the parameter form of that env
    return project


class Project:
    """A Kedro project on disk (bootstrapped): its package, pipelines and prefect.yml."""

    def __init__(
        self,
        path: Path,
        package_name: str,
        config: ProjectConfig,
        *,
        on_this_machine: bool = True,
    ):
        self.path = path
        self.package_name = package_name
        self.config = config
        self.on_this_machine = on_this_machine
        self.config_loaders: dict[str | None, Any] = {}

    def check_pipeline(self, deployment: str, pipeline: str) -> None:
        from kedro.framework.project import pipelines

        if pipeline not in pipelines:
            allowed = ", ".join(sorted(pipelines)) or "(none registered)"
            raise ProjectConfigError(
                f"Invalid prefect.yml: deployments.{deployment}.pipeline: unknown pipeline "
                f"{pipeline!r}; the project's pipelines are: {allowed}"
            )

    def triggers(
        self,
        name: str,
        config: DeploymentConfig,
        default_env: str | None = None,
        where: str | None = None,
    ) -> list[Any]:
        """The deployment's ``on_dataset_saved`` triggers (checked: no self-trigger)."""
        if not config.on_dataset_saved:
            return []
        from kedro_prefect.deploy.triggers import deployment_triggers, project_datasets

        datasets = project_datasets(self.path, self.package_name, config.env or default_env)
        return deployment_triggers(
            name,
            config.on_dataset_saved,
            config.pipeline,
            datasets,
            config.on_dataset_saved_all_within,
            where,
        )

    def flow_name(self, config: DeploymentConfig) -> str:
        return (
            config.runner.get("flow_name")
            or self.config.runner.get("flow_name")
            or self.package_name
        )

    def deployment(
        self,
        name: str,
        config: DeploymentConfig,
        *,
        default_env: str | None = None,
        flow_name: str | None = None,
        project_path: str | None = None,
        triggers_from: str | None = None,
    ) -> RunnerDeployment:
        """The ``RunnerDeployment`` of prefect.yml's (or the flags') deployment ``name``.

        Its name on the server is :func:`deployment_name` (``name`` with the environment, if any)
        and an ``env:<env>`` tag shows the environment in the UI. ``project_path`` replaces this
        project's path (a re-deploy keeps the path stored on the server). ``triggers_from``
        names where ``on_dataset_saved`` came from in errors (e.g. ``--on-dataset-saved``).
        """
        from prefect.client.schemas.actions import DeploymentScheduleCreate
        from prefect.deployments.runner import EntrypointType

        check_deployment_name(name)
        env = config.env or default_env
        parameters = {
            "project_path": project_path or str(self.path),
            "pipeline": config.pipeline,
            "env": env,
            "params": config.parameters,
            "runner_options": config.runner,
        }
        if config.infrastructure:  # the run merges it over prefect.yml's `infrastructure:`
            parameters["runner_options"] = {
                **config.runner,
                "infrastructure": {
                    group: where.model_dump(exclude_defaults=True)
                    for group, where in config.infrastructure.items()
                },
            }
        # Left out when empty: a run then reads conf/ as it is, and the form shows the schema's
        # defaults (the project's values when deployed).
        if not parameters["params"]:
            del parameters["params"]
        schedules = None
        if config.schedule is not None:
            schedules = [
                DeploymentScheduleCreate(
                    schedule=config.schedule.to_prefect(), active=config.schedule.active
                )
            ]
        named_flow = kedro_pipeline.with_options(name=flow_name or self.flow_name(config))
        tags = [tag for tag in config.tags if not tag.startswith(ENV_TAG_PREFIX)]
        if env:
            tags.append(f"{ENV_TAG_PREFIX}{env}")
        deployment = named_flow.to_deployment(
            name=deployment_name(name, env),
            schedules=schedules,
            parameters=parameters,
            tags=tags,
            description=config.description
            or f"Kedro pipeline {config.pipeline!r} of {self.package_name}",
            version=config.version,
            paused=config.paused,
            concurrency_limit=config.concurrency_limit,
            work_pool_name=config.work_pool,
            work_queue_name=config.work_queue,
            job_variables=config.job_variables or None,
            entrypoint_type=EntrypointType.MODULE_PATH,
            triggers=self.triggers(name, config, default_env, triggers_from) or None,
        )
        deployment = cast("RunnerDeployment", deployment)  # called outside an event loop: sync
        # Without this, an empty schedule list would not clear a schedule removed from prefect.yml.
        if schedules is None:
            deployment.schedules = []
        if self.on_this_machine:
            from kedro_prefect._upstream.prefect_deploy import set_parameter_schema

            set_parameter_schema(deployment, self.parameter_form(config, parameters))
        return deployment

    def parameter_form(
        self, config: DeploymentConfig, parameters: dict[str, Any]
    ) -> dict[str, Any]:
        """The deployment's parameter schema: the UI's *Custom run* form (see ``schema.py``)."""
        from kedro.config import MissingConfigException
        from kedro.framework.project import pipelines, settings

        from kedro_prefect._upstream.kedro import typed_parameters
        from kedro_prefect.deploy import schema

        env = parameters["env"]
        loader = self.config_loaders.get(env) or settings.CONFIG_LOADER_CLASS(
            conf_source=str(self.path / settings.CONF_SOURCE),
            env=env,
            **settings.CONFIG_LOADER_ARGS,
        )
        self.config_loaders[env] = loader
        try:
            conf_params = dict(loader["parameters"] or {})
        except MissingConfigException:  # no parameter files
            conf_params = {}
        conf = self.path / settings.CONF_SOURCE
        run_env = env or getattr(loader, "default_run_env", "") or ""
        dirs = [conf / (getattr(loader, "base_env", "") or "base")] + (
            [conf / run_env] if run_env else []
        )
        pipeline = pipelines[config.pipeline]
        typed = {k: v for k, v in typed_parameters(pipeline).items() if "." not in k}
        return schema.parameter_schema(
            project_path=parameters["project_path"],
            pipeline=config.pipeline,
            pipelines=list(pipelines),
            env=env,
            params=config.parameters,
            runner_options=parameters["runner_options"],
            conf_params=conf_params,
            used=schema.used_parameters(pipeline),
            descriptions=schema.comment_descriptions(dirs),
            typed=typed,
        )


#: Tag showing a deployment's Kedro environment in the UI (``env:prod``).
ENV_TAG_PREFIX = "env:"


def deployment_name(name: str, env: str | None) -> str:
    """The server's name of deployment ``name`` for Kedro environment ``env``.

    The environment is part of a deployment's identity: ``nightly`` deployed for ``--env prod``
    is ``nightly-prod``, next to ``nightly`` (deployed without an environment).
    """
    return f"{name}-{env}" if env else name


def env_label(env: str | None) -> str:
    return f"env {env!r}" if env else "the default env (no --env)"


def check_api_reachable(timeout: float = 10) -> str:
    """Return ``PREFECT_API_URL`` if a Prefect API answers there; raise :class:`DeployError`.

    Deployments and schedules need a running Prefect server (or Prefect Cloud): Prefect's
    ephemeral API, used by ``kedro run`` when ``PREFECT_API_URL`` is unset, cannot schedule runs.
    """
    from kedro_prefect.api.health import api_problem, configured_api_url

    url = configured_api_url()
    if not url:
        raise DeployError(
            "PREFECT_API_URL is not set. Deployments and schedules need a Prefect server: start "
            "one with `prefect server start` and run `prefect config set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api` (or log in to Prefect Cloud)."
        )
    problem = api_problem(url, timeout)
    if problem and "must end with /api" in problem:
        base = url.rstrip("/")
        raise DeployError(
            f"PREFECT_API_URL={url} is missing /api: the server answers at {base}/api. Run "
            f"`prefect config set PREFECT_API_URL={base}/api` (or export it)."
        )
    if problem:
        raise DeployError(
            f"No Prefect API answers at PREFECT_API_URL={url} ({problem}). Start the server "
            "(`prefect server start`) or set PREFECT_API_URL to a running one."
        )
    return url


def check_work_pool(name: str) -> None:
    """Raise :class:`DeployError` if the work pool ``name`` does not exist."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            pools = ", ".join(sorted(p.name for p in client.read_work_pools())) or "none"
            raise DeployError(
                f"work pool {name!r} does not exist (existing pools: {pools}); create it with "
                f"`prefect work-pool create {name} --type process`"
            ) from None


__all__ = [
    "ENV_TAG_PREFIX",
    "FLOW_ENTRYPOINT",
    "DeployError",
    "ScheduleConfig",
    "check_api_reachable",
    "deployment_name",
    "kedro_deployment",
    "kedro_pipeline",
]
