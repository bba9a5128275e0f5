"""Configuration: runner options and the project's ``conf/<env>/prefect.yml``, validated up front.

Every runner option is declared once, on :class:`RunnerOptions`. Kedro hands ``--runner-params`` to
the runner's constructor as typed keyword arguments (an OmegaConf dotlist), so validation happens
when the runner object is built, which is before the session loads the catalog or runs any node.

``prefect.yml`` is read through the project's config loader (so environments and ``${...}``
resolvers work) and validated by :class:`ProjectConfig`; its ``runner:`` section gives defaults
that ``--runner-params`` override.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from kedro.config import MissingConfigException
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

from kedro_prefect.errors import KedroPrefectError
from kedro_prefect.task_options import (
    Retries,
    RetryDelaySeconds,
    RetryJitterFactor,
    TasksConfig,
    TimeoutSeconds,
)

#: Short names accepted by ``task_runner``; anything else must be an import path of a
#: ``prefect.task_runners.TaskRunner`` subclass.
TASK_RUNNER_ALIASES = ("thread", "dask")


class PrefectRunnerConfigError(KedroPrefectError, ValueError):
    """A runner option is unknown or has a bad value.

    Raised by ``PrefectRunner(...)`` before anything runs; the message names the option, the
    value and what is allowed.
    """


class RunnerOptions(BaseModel):
    """Options of :class:`kedro_prefect.PrefectRunner`.

    Set them on the command line with ``kedro run --runner=kedro_prefect.PrefectRunner
    --runner-params=task_runner=thread,max_workers=4`` or pass them to the constructor.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_runner: str = Field(
        default="thread",
        description=(
            "Where node tasks run: `thread` (a thread pool in the `kedro run` process), `dask` "
            "(a Dask cluster, needs the `kedro-prefect[dask]` extra), or the import path of any "
            "Prefect `TaskRunner` class, e.g. `prefect.task_runners.ThreadPoolTaskRunner`."
        ),
    )
    max_workers: PositiveInt | None = Field(
        default=None,
        description=(
            "Most nodes running at once on the thread task runner. Default: "
            "`min(32, cpu_count + 4)`, capped by how many nodes can ever run side by side."
        ),
    )
    flow_name: str | None = Field(
        default=None,
        description="Name of the Prefect flow. Default: the Kedro project's package name.",
    )
    is_async: bool = Field(
        default=False,
        description="Load node inputs and save node outputs in threads (Kedro's `is_async`).",
    )
    n_workers: PositiveInt | None = Field(
        default=None,
        description=(
            "task_runner=dask: worker processes of the local Dask cluster started for the run. "
            "Default: machine-sized (Dask's `LocalCluster` default)."
        ),
    )
    threads_per_worker: PositiveInt | None = Field(
        default=None,
        description=(
            "task_runner=dask: threads in each worker process of the local Dask cluster. "
            "Default: machine-sized (Dask's `LocalCluster` default)."
        ),
    )
    address: str | None = Field(
        default=None,
        description=(
            "task_runner=dask: address of an existing Dask scheduler, e.g. "
            "`tcp://10.0.0.5:8786`; the cluster is used and left running."
        ),
    )
    # Runner-wide Prefect task options; `tasks:` rules in prefect.yml override them per node.
    retries: Retries = None
    retry_delay_seconds: RetryDelaySeconds = None
    retry_jitter_factor: RetryJitterFactor = None
    timeout_seconds: TimeoutSeconds = None

    @field_validator("task_runner")
    @classmethod
    def _known_task_runner(cls, value: str) -> str:
        if value in TASK_RUNNER_ALIASES or "." in value:
            return value
        raise ValueError(
            f"unknown task runner {value!r}; use one of {', '.join(TASK_RUNNER_ALIASES)} "
            "or the import path of a prefect TaskRunner class"
        )

    @field_validator("address")
    @classmethod
    def _scheduler_address(cls, value: str | None) -> str | None:
        if value is None:
            return value
        value = value.strip()
        rest = value.split("://", 1)[-1]
        host, _, port = rest.rpartition(":")
        if not (host and port.isdigit()):
            raise ValueError("must be a Dask scheduler address like tcp://HOST:PORT")
        return value

    @model_validator(mode="after")
    def _dask_only_options(self) -> RunnerOptions:
        dask_only = [
            name
            for name in ("n_workers", "threads_per_worker", "address")
            if getattr(self, name) is not None
        ]
        if dask_only and self.task_runner != "dask":
            raise ValueError(
                f"option(s) {', '.join(dask_only)} only apply to task_runner=dask "
                f"(task_runner is {self.task_runner!r})"
            )
        if self.address and (self.n_workers or self.threads_per_worker):
            raise ValueError(
                "n_workers and threads_per_worker size the local cluster started for the run; "
                "they cannot be combined with address= (an existing cluster)"
            )
        if self.task_runner == "dask" and self.max_workers is not None:
            raise ValueError(
                "max_workers applies to the thread task runner; with task_runner=dask use "
                "n_workers and threads_per_worker"
            )
        return self

    @field_validator("flow_name")
    @classmethod
    def _non_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value


def parse_runner_options(raw: dict[str, Any]) -> RunnerOptions:
    """Validate raw keyword arguments, raising :class:`PrefectRunnerConfigError` on any problem."""
    try:
        return RunnerOptions(**raw)
    except ValidationError as exc:
        raise PrefectRunnerConfigError(_describe(exc, raw)) from None


def _describe(exc: ValidationError, raw: dict[str, Any]) -> str:
    valid = ", ".join(sorted(RunnerOptions.model_fields))
    lines = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "?"
        if error["type"] == "extra_forbidden":
            lines.append(f"unknown PrefectRunner option {name!r}; valid options are: {valid}")
            continue
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:
            lines.append(f"PrefectRunner options: {message}")
            continue
        lines.append(f"PrefectRunner option {name}={raw.get(name)!r}: {message}")
    return "Invalid PrefectRunner options:\n  " + "\n  ".join(lines)


class ProjectConfigError(KedroPrefectError, ValueError):
    """``prefect.yml`` has an unknown key or a bad value; the message names both."""


#: Where the config loader looks for ``prefect.yml`` in each environment (like kedro-airflow's).
PREFECT_CONFIG_PATTERNS = ["prefect*", "prefect*/**"]


class ProjectConfig(BaseModel):
    """The content of ``conf/<env>/prefect.yml``."""

    model_config = ConfigDict(extra="forbid")

    runner: dict[str, Any] = Field(
        default_factory=dict,
        description="Default PrefectRunner options; `--runner-params` override them.",
    )
    deployments: dict[DeploymentName, DeploymentConfig] = Field(
        default_factory=dict, description="Deployments created by `kedro prefect deploy`."
    )
    tasks: TasksConfig = Field(
        default_factory=TasksConfig,
        description="Prefect task options per node (retries, timeouts, tags, concurrency).",
    )

    @field_validator("runner")
    @classmethod
    def _valid_runner_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        parse_runner_options(value)
        return value


def load_project_config(config_loader: Any) -> ProjectConfig:
    """Read and validate ``prefect.yml`` from the project's config loader (empty if absent)."""
    if config_loader is None:
        return ProjectConfig()
    config_loader.config_patterns.setdefault("prefect", PREFECT_CONFIG_PATTERNS)
    try:
        raw = config_loader["prefect"]
    except MissingConfigException:
        return ProjectConfig()
    return validate_project_config(raw or {})


def validate_project_config(raw: dict[str, Any]) -> ProjectConfig:
    try:
        return ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            if error["type"] == "extra_forbidden":
                allowed = ", ".join(_model_at(error["loc"][:-1]).model_fields)
                lines.append(f"unknown key {where!r}; allowed keys: {allowed}")
            else:
                message = error["msg"].removeprefix("Value error, ")
                got = "" if error["type"] == "value_error" else f" (got {error['input']!r})"
                lines.append(f"{where}: {message}{got}")
        raise ProjectConfigError("Invalid prefect.yml:\n  " + "\n  ".join(lines)) from None


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel]:
    """The pydantic model validating the mapping at ``loc`` of ``prefect.yml``."""
    import typing

    model: type[BaseModel] = ProjectConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:  # a list index or a mapping key (a deployment name)
            continue
        for candidate in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
    return model


# --- Deployments: the ``deployments:`` section of prefect.yml (owned by the deploy helper) ------

#: Characters Prefect does not allow in deployment names.
_BANNED_NAME_CHARACTERS = "/%&><"


def _reject_unknown_keys(model: type[BaseModel], value: Any, what: str) -> Any:
    """Name an unknown key together with the keys that are allowed (pydantic only says "extra")."""
    if isinstance(value, dict):
        unknown = [key for key in value if key not in model.model_fields]
        if unknown:
            allowed = ", ".join(model.model_fields)
            raise ValueError(
                f"unknown {what} key {unknown[0]!r} (value {value[unknown[0]]!r}); "
                f"allowed keys: {allowed}"
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
        from prefect._internal.schemas.validators import get_timezones

        if value not in get_timezones():
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

        tz = {"timezone": self.timezone} if self.timezone else {}
        try:
            if self.cron is not None:
                day_or = {} if self.day_or is None else {"day_or": self.day_or}
                return CronSchedule(cron=self.cron, **tz, **day_or)
            if self.interval is not None:
                anchor = {} if self.anchor_date is None else {"anchor_date": self.anchor_date}
                return IntervalSchedule(interval=self.interval, **tz, **anchor)
            return RRuleSchedule(rrule=self.rrule, **tz)
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

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, value: Any) -> Any:
        return _reject_unknown_keys(cls, value, "deployment")

    @field_validator("runner")
    @classmethod
    def _valid_runner_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        parse_runner_options(value)
        return value

    @field_validator("tags")
    @classmethod
    def _non_empty_tags(cls, value: list[str]) -> list[str]:
        if any(not tag.strip() for tag in value):
            raise ValueError(f"tags must not be empty strings, got {value!r}")
        return value

    @model_validator(mode="after")
    def _pool_options_need_pool(self) -> DeploymentConfig:
        if self.work_pool is None:
            for key in ("work_queue", "job_variables"):
                if getattr(self, key):
                    raise ValueError(f"{key} needs work_pool (got {getattr(self, key)!r})")
        return self


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


ProjectConfig.model_rebuild()
