"""``kedro prefect deploy``: the one command that writes deployments, and ``kedro prefect list``.

Without flags it writes every deployment of ``prefect.yml`` (merged for the environment); with
flags it writes one deployment, starting from what the server has (else from its ``prefect.yml``
entry), so the flags change only what they name. Everything is checked (pipelines, work pools,
environment clashes) before anything is written; a deployment the server already has exactly as
described is left alone (its scheduled runs stay); an interval schedule keeps its anchor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kedro_prefect.config import DeploymentConfig, ProjectConfigError
from kedro_prefect.deploy import server
from kedro_prefect.deploy.check import check_deployment_grouping
from kedro_prefect.deploy.deployments import (
    Project,
    check_work_pool,
    deployment_name,
    validate_deployment,
)

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.client.orchestration import SyncPrefectClient
    from prefect.deployments.runner import RunnerDeployment

_SCHEDULE_FLAGS = ("cron", "interval", "rrule")


@dataclass
class _Plan:
    name: str
    config: DeploymentConfig
    full_name: str
    existing: Any
    deployment: RunnerDeployment
    on_this_machine: bool = True


def deploy(
    project: Project, env: str | None, flags: dict[str, Any], echo: Callable[[str], None]
) -> None:
    """Create or update the deployments that ``prefect.yml`` or the flags describe."""
    from prefect.client.orchestration import get_client

    from kedro_prefect.deploy.changes import describe_changes, replaced_schedule_note

    flags = dict(flags)
    keep_schedule = bool(flags.pop("keep_schedule", False))
    described = [f for f in (*_SCHEDULE_FLAGS, "timezone", "anchor_date") if flags.get(f)]
    if keep_schedule and described:
        raise ProjectConfigError(
            f"--keep-schedule keeps the server's schedule, --{described[0].replace('_', '-')} "
            "sets a new one: give one of them"
        )
    from_prefect_yml = not any(v not in (None, "", [], {}, ()) for v in flags.values())
    with get_client(sync_client=True) as client:
        triggers_from = "--on-dataset-saved" if flags.get("on_dataset_saved") else None
        plans = [
            _plan(client, project, env, name, config, path, triggers_from, keep_schedule)
            for name, (config, path) in _select(client, project, env, flags).items()
        ]
        for pool in sorted({p.config.work_pool for p in plans if p.config.work_pool}):
            check_work_pool(pool)
        for plan in plans:
            if plan.existing is not None and _unchanged(plan):
                echo(
                    f"Unchanged {plan.full_name!r} ({server.describe_schedules(plan.existing)}), "
                    f"run by {server.runs_on(plan.existing)}"
                )
                continue
            plan.deployment.apply(work_pool_name=plan.config.work_pool)
            flow_name, _, name = plan.full_name.partition("/")
            stored = server.read_deployment(client, flow_name, name)
            if plan.config.schedule is None and stored.schedules:
                # Prefect >= 3.7 sends no empty schedule list: remove what prefect.yml dropped.
                for schedule in stored.schedules:
                    client.delete_deployment_schedule(stored.id, schedule.id)
                stored = server.read_deployment(client, flow_name, name)
            verb = "Updated" if plan.existing is not None else "Created"
            env = server.stored_env(stored)
            changes = describe_changes(plan.existing, stored) if plan.existing else []
            echo(
                f"{verb} {plan.full_name!r}{f' for env {env!r}' if env else ''} "
                f"({server.describe_schedules(stored)}{_describe_triggers(plan.config)}), "
                f"run by {server.runs_on(stored)}"
                + (f"; changed: {', '.join(changes)}" if changes else "")
            )
            note = replaced_schedule_note(plan.existing, stored) if plan.existing else None
            if note and from_prefect_yml:
                echo(note)


def _describe_triggers(config: DeploymentConfig) -> str:
    from kedro_prefect.deploy.triggers import describe_triggers

    text = describe_triggers(config.on_dataset_saved, config.on_dataset_saved_all_within)
    return f"; runs {text}" if text else ""


def _plan(
    client: SyncPrefectClient,
    project: Project,
    env: str | None,
    name: str,
    config: DeploymentConfig,
    project_path: str | None,
    triggers_from: str | None = None,
    keep_schedule: bool = False,
) -> _Plan:
    project.check_pipeline(name, config.pipeline)
    check_deployment_grouping(project, name, config, env)
    run_env = config.env or env
    flow_name = project.flow_name(config)
    full_name = f"{flow_name}/{deployment_name(name, run_env)}"
    existing = server.read_deployment(client, flow_name, deployment_name(name, run_env))
    server.check_identity(existing, run_env, full_name)
    if keep_schedule and existing is not None:
        kept = server.schedule_from_server(existing.schedules[0]) if existing.schedules else None
        config = validate_deployment(
            name, {**config.model_dump(exclude_unset=True, mode="json"), "schedule": kept}
        )
    config = _keep_anchor(config, existing)
    deployment = project.deployment(
        name, config, default_env=env, project_path=project_path, triggers_from=triggers_from
    )
    return _Plan(name, config, full_name, existing, deployment)


def _keep_anchor(config: DeploymentConfig, existing: Any) -> DeploymentConfig:
    """An interval re-deployed without ``anchor_date`` keeps the server's anchor (not "now")."""
    schedule = config.schedule
    if existing is None or schedule is None or schedule.interval is None:
        return config
    if schedule.anchor_date is not None:
        return config
    for stored in existing.schedules or []:
        anchor = getattr(stored.schedule, "anchor_date", None)
        if getattr(stored.schedule, "interval", None) is not None and anchor is not None:
            kept = schedule.model_copy(update={"anchor_date": anchor})
            return config.model_copy(update={"schedule": kept})
    return config


def _unchanged(plan: _Plan) -> bool:
    """Whether the server has the deployment exactly as planned (then nothing is written).

    A deployment with dataset triggers is always written: its triggers are automations of the
    server, which applying the deployment replaces.
    """
    if plan.config.on_dataset_saved:
        return False
    from kedro_prefect._upstream.prefect_deploy import parameter_schema_of

    project_on_machine = plan.on_this_machine
    old = server.server_fingerprint(plan.existing)
    d = plan.deployment
    config = plan.config
    new = server.fingerprint(
        parameters=d.parameters,
        tags=list(d.tags),
        description=d.description,
        version=d.version,
        schedules=list(d.schedules or []),
        # Applied without a pool, a deployment keeps the pool the server has.
        work_pool=config.work_pool or plan.existing.work_pool_name,
        work_queue=config.work_queue,
        job_variables=config.job_variables or None,
        paused=config.paused,
        limit=config.concurrency_limit,
        form=parameter_schema_of(d) if project_on_machine else old["form"],
    )
    for key, given in (
        ("work_queue", config.work_queue),
        ("job_variables", config.job_variables or None),
        ("paused", config.paused),
        ("limit", config.concurrency_limit),
    ):
        if given is None:
            new[key] = old[key]
    return new == old


def _select(
    client: SyncPrefectClient, project: Project, env: str | None, flags: dict[str, Any]
) -> dict[str, tuple[DeploymentConfig, str | None]]:
    """All deployments of prefect.yml, or the one the flags describe: ``{name: (config, path)}``.

    ``path`` is the project path stored on the server for a flag re-deploy (kept), else None.
    """
    config = project.config
    given = {key: value for key, value in flags.items() if value not in (None, "", [], {}, ())}
    if not given:
        if not config.deployments:
            raise ProjectConfigError(
                "prefect.yml lists no deployments: add some under `deployments:` "
                "(`kedro prefect init` writes an example) or describe one with flags, "
                'e.g. `kedro prefect deploy --name nightly --cron "0 2 * * *"`'
            )
        return {name: (deployment, None) for name, deployment in config.deployments.items()}

    pipeline = flags.get("pipeline")
    name = flags.get("name") or (pipeline if pipeline and pipeline != "__default__" else "default")
    entry = config.deployments.get(name)
    run_env = (entry.env if entry else None) or env
    flow_name = project.flow_name(entry or DeploymentConfig())
    existing = server.read_deployment(client, flow_name, deployment_name(name, run_env))
    path = None
    if existing is not None:
        server.check_identity(existing, run_env, f"{flow_name}/{existing.name}")
        raw = server.config_from_server(existing)
        path = (existing.parameters or {}).get("project_path")
    elif entry is not None:
        raw = entry.model_dump(exclude_unset=True, mode="json")
    else:
        raw = {"env": env} if env else {}
    _apply_flags(raw, flags)
    _check_schedule_flags(raw.get("schedule"), flags)
    return {name: (validate_deployment(name, raw), path)}


#: How a cron looks, for an error about ``--cron``.
_CRON_FIELDS = (
    "a cron has five fields: minute hour day-of-month month day-of-week, "
    'e.g. --cron "0 2 * * *" (02:00 every day) or --cron "30 6 * * 1-5" (06:30 on weekdays)'
)


def _check_schedule_flags(schedule: dict[str, Any] | None, flags: dict[str, Any]) -> None:
    """A bad schedule flag is named as the flag (not as a prefect.yml key), cron with its form."""
    from pydantic import ValidationError

    from kedro_prefect.config import ScheduleConfig

    named = [f for f in (*_SCHEDULE_FLAGS, "timezone", "anchor_date") if flags.get(f) is not None]
    if not schedule or not named:
        return
    try:
        ScheduleConfig.model_validate(schedule)
    except ValidationError as exc:
        error = exc.errors()[0]
        reason = str(error["msg"]).removeprefix("Value error, ")
        if reason.startswith("bad ") and "': " in reason:  # "bad cron '...': why" -> why
            reason = reason.split("': ", 1)[1]
        field = error["loc"][0] if error["loc"] else None
        flag = field if field in named else next((f for f in named if f in reason), named[0])
        value = flags.get(flag, schedule.get(flag))
        hint = f"; {_CRON_FIELDS}" if flag == "cron" else ""
        raise ProjectConfigError(f"--{flag.replace('_', '-')} {value!r}: {reason}{hint}") from None


def _apply_flags(raw: dict[str, Any], flags: dict[str, Any]) -> None:
    """Change in ``raw`` (a prefect.yml entry) exactly what the flags name."""
    if flags.get("pipeline"):
        raw["pipeline"] = flags["pipeline"]
    kinds = {kind: flags[kind] for kind in _SCHEDULE_FLAGS if flags.get(kind) is not None}
    old = raw.get("schedule") or {}
    if kinds:
        raw["schedule"] = dict(kinds)
        for key in ("timezone", "active"):  # a new time, same zone (and same on/off)
            if key in old:
                raw["schedule"][key] = old[key]
    for flag, key, needs in (
        ("timezone", "timezone", "--cron, --interval or --rrule"),
        ("anchor_date", "anchor_date", "--interval"),
    ):
        if flags.get(flag):
            if not raw.get("schedule"):
                raise ProjectConfigError(f"--{flag.replace('_', '-')} needs {needs}")
            raw["schedule"][key] = flags[flag]
    if flags.get("params"):
        raw["parameters"] = {**raw.get("parameters", {}), **flags["params"]}
    if flags.get("job_variables"):
        raw["job_variables"] = {**raw.get("job_variables", {}), **flags["job_variables"]}
    for flag in ("tags", "work_pool", "work_queue", "version", "description"):
        if flags.get(flag):
            raw[flag] = flags[flag]
    if flags.get("paused") is not None:
        raw["paused"] = flags["paused"]
    if flags.get("on_dataset_saved"):
        raw["on_dataset_saved"] = list(flags["on_dataset_saved"])


# --- kedro prefect list ------------------------------------------------------------------------


def list_rows(project: Project, env: Any = ...) -> list[dict[str, str]]:
    """This project's deployments on the server (of ``env``, if given), one row each."""
    from prefect.client.orchestration import get_client

    flow_name = project.flow_name(DeploymentConfig())
    with get_client(sync_client=True) as client:
        return [
            {
                "name": f"{flow_name}/{d.name}",
                "env": server.stored_env(d) or "(default)",
                "schedule": server.describe_schedules(d),
                "runs on": f"work pool {d.work_pool_name}" if d.work_pool_name else "served",
                "paused": "yes" if d.paused else "no",
                "triggers": _stored_triggers(client, d.id),
                "next run": _when(_run(client, d.id, upcoming=True), _zone(d)),
                "last run": _last(_run(client, d.id, upcoming=False)),
            }
            for d in server.project_deployments(client, flow_name, env)
        ]


def _stored_triggers(client: SyncPrefectClient, deployment_id: UUID) -> str:
    """The dataset triggers the server has for a deployment (its automations), or ``-``."""
    from kedro_prefect.observe.events import DATASET_RESOURCE_PREFIX

    described = []
    for automation in client.read_resource_related_automations(
        f"prefect.deployment.{deployment_id}"
    ):
        trigger = automation.trigger
        parts = getattr(trigger, "triggers", None) or [trigger]
        names = []
        for part in parts:
            match: Any = getattr(part, "match", None)
            spec = match.model_dump() if hasattr(match, "model_dump") else dict(match or {})
            ids = spec.get("prefect.resource.id")
            for resource_id in [ids] if isinstance(ids, str) else ids or []:
                if resource_id.startswith(DATASET_RESOURCE_PREFIX):
                    names.append(resource_id.removeprefix(DATASET_RESOURCE_PREFIX))
        if names:
            joiner = " and " if getattr(trigger, "require", None) == "all" else " or "
            described.append(f"saved: {joiner.join(names)}")
    return "; ".join(described) or "-"


def _run(client: SyncPrefectClient, deployment_id: UUID, *, upcoming: bool) -> Any:
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    scheduled = [StateType.SCHEDULED]
    state = (
        FlowRunFilterStateType(any_=scheduled)
        if upcoming
        else FlowRunFilterStateType(not_any_=scheduled)
    )
    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=state)),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC if upcoming else FlowRunSort.START_TIME_DESC,
        limit=1,
    )
    return runs[0] if runs else None


def _zone(deployment: Any) -> str:
    """The time zone of the deployment's schedule (UTC without one)."""
    for stored in deployment.schedules or []:
        return getattr(stored.schedule, "timezone", None) or "UTC"
    return "UTC"


def _when(run: Any, zone: str = "UTC") -> str:
    """When a run is expected, in the schedule's time zone: ``2026-12-01 03:00 Europe/Paris``."""
    from zoneinfo import ZoneInfo

    if run is None or run.expected_start_time is None:
        return "-"
    moment: datetime = run.expected_start_time.astimezone(ZoneInfo(zone))
    return f"{moment:%Y-%m-%d %H:%M} {zone}"


def _last(run: Any) -> str:
    if run is None:
        return "-"
    moment = run.start_time or run.expected_start_time
    when = moment.strftime("%Y-%m-%d %H:%M %Z").strip() if moment else "?"
    return f"{run.state_name or run.state_type.value.title()} ({when})"
