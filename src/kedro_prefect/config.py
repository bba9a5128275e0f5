"""Configuration: runner options and the project's ``conf/<env>/prefect.yml``, validated up front.

Every runner option is declared once, on :class:`RunnerOptions`. Kedro hands ``--runner-params`` to
the runner's constructor as typed keyword arguments (an OmegaConf dotlist), so validation happens
when the runner object is built, which is before the session loads the catalog or runs any node.

``prefect.yml`` is read through the project's config loader (so environments and ``${...}``
resolvers work) and validated by :class:`ProjectConfig`; its ``runner:`` section gives defaults
that ``--runner-params`` override.
"""

from __future__ import annotations

from typing import Any

from kedro.config import MissingConfigException
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
)

from kedro_prefect.errors import KedroPrefectError
from kedro_prefect.task_options import TasksConfig

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
    # Runner-wide Prefect task options; `tasks:` rules in prefect.yml override them per node.
    retries: NonNegativeInt | None = Field(
        default=None, description="How many times a failed node is run again. Default: 0."
    )
    retry_delay_seconds: NonNegativeFloat | None = Field(
        default=None, description="Seconds to wait before retrying a failed node. Default: 0."
    )
    retry_jitter_factor: NonNegativeFloat | None = Field(
        default=None, description="Randomise the retry delay by up to this factor."
    )
    timeout_seconds: PositiveFloat | None = Field(
        default=None,
        description="Fail a node when one attempt runs longer than this. Default: no limit.",
    )

    @field_validator("task_runner")
    @classmethod
    def _known_task_runner(cls, value: str) -> str:
        if value in TASK_RUNNER_ALIASES or "." in value:
            return value
        raise ValueError(
            f"unknown task runner {value!r}; use one of {', '.join(TASK_RUNNER_ALIASES)} "
            "or the import path of a prefect TaskRunner class"
        )

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
    deployments: dict[str, Any] = Field(
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
        if isinstance(part, int):
            continue
        annotation = model.model_fields[str(part)].annotation
        for candidate in (annotation, *typing.get_args(annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
    return model
