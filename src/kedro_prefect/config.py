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
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

#: Short names accepted by ``task_runner``; anything else must be an import path of a
#: ``prefect.task_runners.TaskRunner`` subclass.
TASK_RUNNER_ALIASES = ("thread", "dask")


class PrefectRunnerConfigError(ValueError):
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


class ProjectConfigError(ValueError):
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
    tasks: dict[str, Any] = Field(
        default_factory=dict, description="Prefect task options for nodes (retries, timeouts...)."
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
                allowed = ", ".join(ProjectConfig.model_fields)
                lines.append(f"unknown key {where!r}; allowed keys: {allowed}")
            else:
                lines.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
        raise ProjectConfigError("Invalid prefect.yml:\n  " + "\n  ".join(lines)) from None
