"""The ``deployments:`` section of ``prefect.yml``: schedules and deployment settings."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from kedro_prefect.config.infrastructure import Infrastructure
from kedro_prefect.config.options import check_child_runner_options, parse_runner_options

#: Characters Prefect does not allow in deployment names.
_BANNED_NAME_CHARACTERS = "/%&><"


def _reject_unknown_keys(model: type[BaseModel], value: Any, what: str) -> Any:
    """Name an unknown key together with the keys that are allowed (pydantic only says "extra")."""
    if isinstance(value, dict):
        unknown = [key for key in value if key not in model.model_fields]
        if unknown:
            import difflib

            allowed = ", ".join(model.model_fields)
            close = difflib.get_close_matches(str(unknown[0]), list(model.model_fields), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"unknown {what} key {unknown[0]!r} (value {value[unknown[0]]!r}); "
                f"{hint}allowed keys: {allowed}"
            )
    return value


class ScheduleConfig(BaseModel):
    """When a deployment runs: exactly one of ``cron``, ``interval`` or ``rrule``."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(
        default=None, description='A cron expression, e.g. `"0 2 * * *"` (02:00 every day).'
    )
    interval: timedelta | None = Field(
        default=None,
        description='Seconds between runs (`3600`), or an ISO 8601 duration (`"PT1H"`).',
    )
    rrule: str | None = Field(
        default=None,
        description='An iCalendar RRULE, e.g. `"FREQ=WEEKLY;BYDAY=MO,WE,FR;BYHOUR=6"`.',
    )
    timezone: str | None = Field(
        default=None,
        description="IANA time zone the schedule is read in, e.g. `Europe/Amsterdam`. "
        "Default: UTC.",
    )
    anchor_date: datetime | None = Field(
        default=None, description="`interval` only: the moment intervals are counted from."
    )
    day_or: bool | None = Field(
        default=None,
        description="`cron` only: run when day-of-month OR day-of-week match (default true).",
    )
    active: bool = Field(default=True, description="Set to false to keep the schedule paused.")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, value: Any) -> Any:
        return _reject_unknown_keys(cls, value, "schedule")

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value not in _time_zones():
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as UTC, "
                "Europe/Amsterdam or America/New_York"
            )
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleConfig:
        given = [kind for kind in ("cron", "interval", "rrule") if getattr(self, kind) is not None]
        if len(given) != 1:
            found = f"got {', '.join(given)}" if given else "got none"
            raise ValueError(f"give exactly one of cron, interval or rrule ({found})")
        if self.anchor_date is not None and self.interval is None:
            raise ValueError("anchor_date is only allowed with interval")
        if self.day_or is not None and self.cron is None:
            raise ValueError("day_or is only allowed with cron")
        self.to_prefect()  # a bad cron or rrule fails here, with Prefect's own check
        return self

    def to_prefect(self) -> Any:
        """The Prefect schedule: ``CronSchedule``, ``IntervalSchedule`` or ``RRuleSchedule``."""
        from prefect.client.schemas.schedules import (
            CronSchedule,
            IntervalSchedule,
            RRuleSchedule,
        )

        tz: dict[str, Any] = {"timezone": self.timezone} if self.timezone else {}
        try:
            if self.cron is not None:
                day_or: dict[str, Any] = {} if self.day_or is None else {"day_or": self.day_or}
                return CronSchedule(cron=self.cron, **tz, **day_or)
            if self.interval is not None:
                anchor: dict[str, Any] = (
                    {} if self.anchor_date is None else {"anchor_date": self.anchor_date}
                )
                return IntervalSchedule(interval=self.interval, **tz, **anchor)
            return RRuleSchedule(rrule=self.rrule or "", **tz)  # the one of the three given
        except ValidationError as exc:
            kind = next(k for k in ("cron", "interval", "rrule") if getattr(self, k) is not None)
            reason = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            value = getattr(self, kind)
            shown = f"{value.total_seconds():g} seconds" if kind == "interval" else repr(value)
            raise ValueError(f"bad {kind} {shown}: {reason}") from None


class DeploymentConfig(BaseModel):
    """One entry of ``deployments:``: a Prefect deployment running one Kedro pipeline."""

    model_config = ConfigDict(extra="forbid")

    pipeline: str = Field(default="__default__", description="The Kedro pipeline to run.")
    env: str | None = Field(
        default=None,
        description="Kedro environment of the runs. Default: the one `kedro prefect deploy` used.",
    )
    schedule: ScheduleConfig | None = Field(
        default=None, description="When to run; without it the deployment runs only on demand."
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Kedro runtime parameters (like `kedro run --params`), plain values only.",
    )
    runner: dict[str, Any] = Field(
        default_factory=dict,
        description="PrefectRunner options for this deployment, over the `runner:` section.",
    )
    infrastructure: Infrastructure = Field(
        default_factory=dict,
        description="Groups of nodes run on work pools in this deployment's runs, over the "
        "`infrastructure:` section (docs/beyond-one-machine.md).",
    )
    tags: list[str] = Field(default_factory=list, description="Tags of the deployment.")
    description: str | None = Field(default=None, description="Shown in the Prefect UI.")
    version: str | None = Field(default=None, description="Version label of the deployment.")
    work_pool: str | None = Field(
        default=None,
        description="Deploy to this work pool (a worker runs it); without, `kedro prefect serve`.",
    )
    work_queue: str | None = Field(default=None, description="Work queue in the work pool.")
    job_variables: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the work pool's job template."
    )
    paused: bool | None = Field(default=None, description="Create the deployment paused.")
    concurrency_limit: PositiveInt | None = Field(
        default=None, description="Most runs of this deployment at once."
    )
    on_dataset_saved: list[str] = Field(
        default_factory=list,
        description="Run when one of these datasets is saved by any kedro-prefect run: a "
        "dataset of this project, or `<package>.<dataset>` of another project. See "
        "data-driven.md.",
    )
    on_dataset_saved_all_within: timedelta | None = Field(
        default=None,
        description="Instead, run once all `on_dataset_saved` datasets were saved within this "
        'window (seconds, or an ISO 8601 duration `"PT6H"`).',
    )

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, value: Any) -> Any:
        return _reject_unknown_keys(cls, value, "deployment")

    @field_validator("runner")
    @classmethod
    def _valid_runner_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        parse_runner_options(value)
        return value

    @field_validator("infrastructure")
    @classmethod
    def _valid_child_runner_options(cls, value: Infrastructure) -> Infrastructure:
        check_child_runner_options(value)
        return value

    @field_validator("tags")
    @classmethod
    def _non_empty_tags(cls, value: list[str]) -> list[str]:
        if any(not tag.strip() for tag in value):
            raise ValueError(f"tags must not be empty strings, got {value!r}")
        return value

    @field_validator("on_dataset_saved")
    @classmethod
    def _dataset_names(cls, value: list[str]) -> list[str]:
        if any(not name.strip() for name in value):
            raise ValueError(f"dataset names must not be empty, got {value!r}")
        return list(dict.fromkeys(name.strip() for name in value))

    @model_validator(mode="after")
    def _window_needs_datasets(self) -> DeploymentConfig:
        window = self.on_dataset_saved_all_within
        if window is not None:
            if window <= timedelta(0):
                raise ValueError("on_dataset_saved_all_within must be positive")
            if len(self.on_dataset_saved) < 2:
                raise ValueError(
                    "on_dataset_saved_all_within needs two or more on_dataset_saved datasets "
                    f"(got {self.on_dataset_saved!r})"
                )
        return self

    @model_validator(mode="after")
    def _pool_options_need_pool(self) -> DeploymentConfig:
        if self.work_pool is None:
            for key in ("work_queue", "job_variables"):
                if getattr(self, key):
                    raise ValueError(f"{key} needs work_pool (got {getattr(self, key)!r})")
        return self


@functools.cache
def _time_zones() -> frozenset[str]:
    """IANA time zone names (the standard library's, as Prefect's schedules accept)."""
    import zoneinfo

    return frozenset(zoneinfo.available_timezones())


def check_deployment_name(name: str) -> str:
    """Raise ``ValueError`` if Prefect would refuse ``name`` as a deployment name."""
    bad = [char for char in _BANNED_NAME_CHARACTERS if char in name]
    if not name.strip() or bad:
        raise ValueError(
            f"bad deployment name {name!r}: it must be non-empty and must not contain any "
            f"of {' '.join(_BANNED_NAME_CHARACTERS)}"
        )
    return name


DeploymentName = Annotated[str, AfterValidator(check_deployment_name)]
