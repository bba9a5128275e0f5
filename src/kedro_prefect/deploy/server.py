"""What is deployed: this project's deployments as the Prefect server stores them.

The server is the source of truth: ``kedro prefect serve`` serves what is deployed there (never
re-creating it from ``prefect.yml``), ``kedro prefect list`` shows it, and a
``kedro prefect deploy`` with flags starts from it, so that the flags change only what they name.

A deployment belongs to the project when its flow is the project's flow and its entrypoint is
:data:`~kedro_prefect.deploy.flow.FLOW_ENTRYPOINT`; its Kedro environment is its ``env``
parameter.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from kedro_prefect.deploy.deployments import ENV_TAG_PREFIX, deployment_name, env_label
from kedro_prefect.errors import DeployError
from kedro_prefect.workpools import FLOW_ENTRYPOINT, GROUP_DEPLOYMENT_TAG

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.responses import DeploymentResponse

#: What Prefect puts in front of an rrule given without DTSTART (its default anchor).
_DEFAULT_RRULE_START = "DTSTART:20200101T000000"


def stored_env(deployment: DeploymentResponse) -> str | None:
    """The Kedro environment a deployment runs in (its ``env`` parameter)."""
    return (deployment.parameters or {}).get("env")


def project_deployments(
    client: SyncPrefectClient, flow_name: str, env: Any = ...
) -> list[DeploymentResponse]:
    """The kedro-prefect deployments of flow ``flow_name`` (of ``env`` only, if given), by name.

    The deployments a run makes for its groups on work pools (``infrastructure:``) are not
    among them: the run rewrites them itself.
    """
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    found = client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
    return sorted(
        (
            d
            for d in found
            if d.entrypoint == FLOW_ENTRYPOINT
            and GROUP_DEPLOYMENT_TAG not in (d.tags or [])
            and (env is ... or stored_env(d) == env)
        ),
        key=lambda d: (stored_env(d) or "", d.name),
    )


def read_deployment(client: SyncPrefectClient, flow_name: str, name: str) -> Any:
    """The deployment ``flow_name/name`` on the server, or None."""
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(f"{flow_name}/{name}")
    except ObjectNotFound:
        return None


def check_identity(existing: Any, env: str | None, full_name: str) -> None:
    """Refuse to overwrite a deployment of another environment, or not made by kedro-prefect."""
    if existing is None:
        return
    if existing.entrypoint != FLOW_ENTRYPOINT:
        raise DeployError(
            f"deployment {full_name!r} exists on the server and is not a kedro-prefect deployment "
            f"(entrypoint {existing.entrypoint!r}): choose another --name, or delete it first "
            f"(`prefect deployment delete {full_name}`)"
        )
    if stored_env(existing) != env:
        raise DeployError(
            f"deployment {full_name!r} exists already for {env_label(stored_env(existing))}; "
            f"deploying it for {env_label(env)} would overwrite it: choose another --name, or "
            f"delete the other one first (`prefect deployment delete {full_name}`)"
        )


def config_from_server(deployment: DeploymentResponse) -> dict[str, Any]:
    """A deployment on the server as a ``prefect.yml`` entry (raw, to validate)."""
    parameters = deployment.parameters or {}
    raw: dict[str, Any] = {
        "pipeline": parameters.get("pipeline") or "__default__",
        "env": parameters.get("env"),
        "parameters": parameters.get("params") or {},
        "runner": dict(parameters.get("runner_options") or {}),
        "tags": [t for t in deployment.tags if not t.startswith(ENV_TAG_PREFIX)],
        "description": deployment.description,
        "version": deployment.version,
        "paused": deployment.paused,
    }
    if "infrastructure" in raw["runner"]:  # prefect.yml's deployment infrastructure:
        raw["infrastructure"] = raw["runner"].pop("infrastructure")
    if deployment.work_pool_name:
        raw["work_pool"] = deployment.work_pool_name
        raw["work_queue"] = deployment.work_queue_name
        raw["job_variables"] = dict(deployment.job_variables or {})
    limit = concurrency_limit(deployment)
    if limit:
        raw["concurrency_limit"] = limit
    if deployment.schedules:
        raw["schedule"] = schedule_from_server(deployment.schedules[0])
    return raw


def schedule_from_server(deployment_schedule: Any) -> dict[str, Any]:
    schedule = deployment_schedule.schedule
    raw: dict[str, Any] = {"timezone": schedule.timezone, "active": deployment_schedule.active}
    if getattr(schedule, "cron", None) is not None:
        raw["cron"] = schedule.cron
        if schedule.day_or is False:
            raw["day_or"] = False
    elif getattr(schedule, "interval", None) is not None:
        raw["interval"] = schedule.interval.total_seconds()
        raw["anchor_date"] = schedule.anchor_date.isoformat()
    else:
        raw["rrule"] = schedule.rrule
    return {key: value for key, value in raw.items() if value is not None}


def concurrency_limit(deployment: Any) -> int | None:
    limit = getattr(deployment, "global_concurrency_limit", None)
    if limit is not None:
        return limit.limit
    return getattr(deployment, "concurrency_limit", None)


def fingerprint(
    *,
    parameters: dict[str, Any],
    tags: list[str],
    description: str | None,
    version: str | None,
    schedules: list[Any],
    work_pool: str | None,
    work_queue: str | None,
    job_variables: dict[str, Any] | None,
    paused: bool | None,
    limit: int | None,
    form: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a deployment is, in a form comparable between a new one and one on the server."""
    return {
        "form": json.loads(json.dumps(form or {}, default=str, sort_keys=True)),
        "parameters": json.loads(json.dumps(parameters, default=str, sort_keys=True)),
        "tags": sorted(tags),
        "description": description,
        "version": version,
        "schedules": [schedule_key(s.schedule, s.active) for s in schedules],
        "work_pool": work_pool,
        "work_queue": work_queue,
        "job_variables": job_variables or {},
        "paused": bool(paused),
        "limit": limit,
    }


def server_fingerprint(deployment: DeploymentResponse) -> dict[str, Any]:
    pooled = bool(deployment.work_pool_name)
    return fingerprint(
        parameters=deployment.parameters or {},
        tags=list(deployment.tags),
        description=deployment.description,
        version=deployment.version,
        schedules=list(deployment.schedules or []),
        work_pool=deployment.work_pool_name,
        work_queue=deployment.work_queue_name if pooled else None,
        job_variables=dict(deployment.job_variables or {}) if pooled else None,
        paused=deployment.paused,
        limit=concurrency_limit(deployment),
        form=deployment.parameter_openapi_schema,
    )


def schedule_key(schedule: Any, active: bool | None) -> tuple[Any, ...]:
    timezone = getattr(schedule, "timezone", None) or "UTC"
    if getattr(schedule, "cron", None) is not None:
        return ("cron", schedule.cron, timezone, schedule.day_or, active is not False)
    if getattr(schedule, "interval", None) is not None:
        anchor = schedule.anchor_date.timestamp() if schedule.anchor_date else None
        seconds = schedule.interval.total_seconds()
        return ("interval", seconds, timezone, anchor, active is not False)
    rule = [line for line in schedule.rrule.splitlines() if line != _DEFAULT_RRULE_START]
    return ("rrule", "\n".join(rule), timezone, active is not False)


def describe_schedule(schedule: Any, active: bool | None = True) -> str:
    """A schedule in words: ``daily at 03:00 Europe/Paris (cron 0 3 * * *)``."""
    timezone = getattr(schedule, "timezone", None) or "UTC"
    if getattr(schedule, "cron", None) is not None:
        text = f"cron '{schedule.cron}' {timezone}"
        fields = schedule.cron.split()
        if len(fields) == 5 and fields[0].isdigit() and fields[1].isdigit():
            at = f"{int(fields[1]):02d}:{int(fields[0]):02d} {timezone}"
            days = {
                ("*", "*", "*"): "daily",
                ("*", "*", "1-5"): "weekdays",
            }.get(tuple(fields[2:]))
            if days:
                text = f"{days} at {at} (cron '{schedule.cron}')"
    elif getattr(schedule, "interval", None) is not None:
        text = f"every {_duration(schedule.interval)}"
        if schedule.anchor_date is not None:
            text += f" from {schedule.anchor_date.isoformat(timespec='seconds')}"
    else:
        rule = [line for line in schedule.rrule.splitlines() if line != _DEFAULT_RRULE_START]
        text = f"rrule '{' '.join(rule)}' {timezone}"
    return text if active is not False else f"{text} (schedule paused)"


def describe_schedules(deployment: Any) -> str:
    schedules = list(deployment.schedules or [])
    if not schedules:
        return "no schedule, runs on demand"
    return "; ".join(describe_schedule(s.schedule, s.active) for s in schedules)


def runs_on(deployment: Any) -> str:
    """Who runs it: ``work pool 'x'`` or ``kedro prefect serve``."""
    if deployment.work_pool_name:
        return f"work pool {deployment.work_pool_name!r} (`prefect worker start --pool " + (
            f"{deployment.work_pool_name}`)"
        )
    return "`kedro prefect serve`"


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts) or f"{value.total_seconds():g}s"


def servable(
    client: SyncPrefectClient, flow_name: str, env: str | None, names: tuple[str, ...] = ()
) -> list[DeploymentResponse]:
    """What ``kedro prefect serve`` serves right now: deployed, of ``env``, no work pool, and
    (given ``names``) of those names. Serve reads it again as it runs, to follow the server."""
    wanted = {n for name in names for n in (name, deployment_name(name, env))}
    return [
        d
        for d in project_deployments(client, flow_name, env)
        if not d.work_pool_name and (not names or d.name in wanted)
    ]


def served_deployments(
    client: SyncPrefectClient, flow_name: str, env: str | None, names: tuple[str, ...]
) -> list[DeploymentResponse]:
    """The deployments ``kedro prefect serve`` starts with (checking the names it is given).

    Without names, none is fine: serve waits for the first ``kedro prefect deploy``.
    """
    of_env = project_deployments(client, flow_name, env)
    served = [d for d in of_env if not d.work_pool_name]
    flag_env = f" --env {env}" if env else ""
    if not names:
        return served
    chosen = []
    for name in names:
        wanted = {name, deployment_name(name, env)}
        match = next((d for d in of_env if d.name in wanted), None)
        if match is None:
            known = ", ".join(d.name for d in served) or "none"
            raise DeployError(
                f"no deployment {name!r} of flow {flow_name!r} for {env_label(env)} on the server "
                f"(served deployments there: {known}); deploy it first: "
                f"`kedro prefect deploy{flag_env} --name {name}`"
            )
        if match.work_pool_name:
            raise DeployError(
                f"deployment '{flow_name}/{match.name}' runs on work pool "
                f"{match.work_pool_name!r}, not served: start a worker "
                f"(`prefect worker start --pool {match.work_pool_name}`)"
            )
        chosen.append(match)
    return chosen
