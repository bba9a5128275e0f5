"""What a ``kedro prefect deploy`` changed in a deployment, in words.

``Updated 'sales_demo/nightly' (...); changed: schedule 0 3 * * * Europe/Paris → 0 2 * * * UTC``:
the deployment before (as the server had it) and after (as the server has it now) compared field
by field, so the message says what a person would look for in the UI.
"""

from __future__ import annotations

import json
from typing import Any

from kedro_prefect.deploy import server

_PARAMETERS = (("pipeline", "pipeline"), ("env", "env"), ("params", "parameters"))


def short_schedule(deployment: Any) -> str:
    """The schedules as a person writes them: ``0 3 * * * Europe/Paris``, ``every 1h``."""
    parts = []
    for stored in deployment.schedules or []:
        schedule = stored.schedule
        zone = getattr(schedule, "timezone", None) or "UTC"
        if getattr(schedule, "cron", None) is not None:
            text = f"{schedule.cron} {zone}"
        elif getattr(schedule, "interval", None) is not None:
            text = server.describe_schedule(schedule).split(" from ")[0]
        else:
            text = server.describe_schedule(schedule)
        parts.append(text if stored.active is not False else f"{text} (paused)")
    return "; ".join(parts) or "none"


def _compact(value: Any) -> str:
    if value in (None, {}, []):
        return "none"
    return json.dumps(value, sort_keys=True, default=str)


def describe_changes(before: Any, after: Any) -> list[str]:
    """``["schedule A → B", "tags [...] → [...]", ...]``: what differs between two readings."""
    changes = []
    old, new = short_schedule(before), short_schedule(after)
    if old != new:
        changes.append(f"schedule {old} → {new}")
    old_parameters, new_parameters = before.parameters or {}, after.parameters or {}
    for key, label in (*_PARAMETERS, ("runner_options", "runner options")):
        a, b = old_parameters.get(key), new_parameters.get(key)
        if (a or None) != (b or None):
            changes.append(f"{label} {_compact(a)} → {_compact(b)}")
    for attribute, label in (
        ("tags", "tags"),
        ("description", "description"),
        ("version", "version"),
        ("paused", "paused"),
        ("work_pool_name", "work pool"),
    ):
        a, b = getattr(before, attribute, None), getattr(after, attribute, None)
        if a != b:
            changes.append(f"{label} {_compact(a)} → {_compact(b)}")
    limits = server.concurrency_limit(before), server.concurrency_limit(after)
    if limits[0] != limits[1]:
        changes.append(f"concurrency limit {_compact(limits[0])} → {_compact(limits[1])}")
    if before.parameter_openapi_schema != after.parameter_openapi_schema:
        changes.append("parameter form (the project's parameters or pipelines)")
    return changes


def replaced_schedule_note(before: Any, after: Any) -> str | None:
    """A deploy from prefect.yml replaced a different schedule on the server: say so."""
    old = short_schedule(before)
    if old == "none" or old == short_schedule(after):
        return None
    return (
        f"  The server's schedule {old} (set by flags, or by an earlier prefect.yml) was "
        "replaced by prefect.yml's; `kedro prefect deploy --keep-schedule` keeps the server's "
        "schedule instead."
    )
