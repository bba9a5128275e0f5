"""Runner options: every option of ``PrefectRunner`` is declared once, on :class:`RunnerOptions`.

Kedro hands ``--runner-params`` to the runner's constructor as typed keyword arguments (an
OmegaConf dotlist), so validation happens when the runner object is built, which is before the
session loads the catalog or runs any node.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from kedro_prefect.config.infrastructure import InfrastructureConfig
from kedro_prefect.config.tasks import (
    Retries,
    RetryDelaySeconds,
    RetryJitterFactor,
    TimeoutSeconds,
)
from kedro_prefect.errors import PrefectRunnerConfigError

#: Short names accepted by ``task_runner``; anything else must be an import path of a
#: ``prefect.task_runners.TaskRunner`` subclass.
TASK_RUNNER_ALIASES = ("thread", "process", "dask")

#: Options that only apply to ``task_runner=dask``.
DASK_OPTIONS = (
    "n_workers",
    "threads_per_worker",
    "address",
    "cluster_class",
    "cluster_kwargs",
    "adapt_kwargs",
    "client_kwargs",
    "performance_report_path",
)


#: The cluster class of ``task_runner=dask`` when ``cluster_class`` is not given.
DEFAULT_CLUSTER_CLASS = "distributed.LocalCluster"


class RunnerOptions(BaseModel):
    """Options of :class:`kedro_prefect.PrefectRunner`.

    Set them on the command line with ``kedro run --runner=kedro_prefect.PrefectRunner
    --runner-params=task_runner=thread,max_workers=4`` or pass them to the constructor.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_runner: str = Field(
        default="thread",
        description=(
            "Where node tasks run: `thread` (a thread pool in the `kedro run` process), "
            "`process` (a pool of worker processes on this machine, for CPU-bound nodes: "
            "Prefect's `ProcessPoolTaskRunner`), `dask` (a Dask cluster, needs the "
            "`kedro-prefect[dask]` extra), or the import path of a subclass of Prefect's "
            "`ThreadPoolTaskRunner` or `ProcessPoolTaskRunner` (run as `thread` or `process`)."
        ),
    )
    max_workers: PositiveInt | None = Field(
        default=None,
        description=(
            "Most nodes running at once: threads of `thread` (default: `min(32, cpu_count + "
            "4)`), processes of `process` (default: `cpu_count`); never more than the nodes "
            "that can run side by side."
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
    dataset_events: bool = Field(
        default=True,
        description=(
            "Emit a Prefect event `kedro.dataset.saved` for each persisted dataset a node saves "
            "(names and versions only, never data): what `on_dataset_saved` deployment "
            "triggers react to. Set to false to emit none."
        ),
    )
    skip_unchanged: StrictBool = Field(
        default=False,
        description=(
            "Skip nodes whose code, parameters and input data did not change since their last "
            "successful run and whose outputs exist; in-memory outputs come back from Prefect's "
            "cache. See docs/skip-unchanged.md."
        ),
    )
    group_by: Literal["none", "namespace", "memory"] = Field(
        default="none",
        description=(
            "Run groups of nodes as one Prefect task run each: `none` (one task run per node), "
            "`namespace` (one per top-level namespace) or `memory` (one per chain of nodes "
            "linked by in-memory datasets). See docs/grouping.md."
        ),
    )
    infrastructure: dict[str, InfrastructureConfig] | Literal[False] | None = Field(
        default=None,
        description=(
            "Groups of nodes run on Prefect work pools, as child flow runs: a mapping like "
            "prefect.yml's `infrastructure:` section (merged over it), or `false` to run every "
            "node here. See docs/beyond-one-machine.md."
        ),
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
    cluster_class: str | None = Field(
        default=None,
        description=(
            "task_runner=dask: import path of the Dask cluster class started for the run, e.g. "
            "`distributed.LocalCluster`, `dask_jobqueue.SLURMCluster` or "
            "`dask_kubernetes.operator.KubeCluster`. Default: `distributed.LocalCluster`."
        ),
    )
    cluster_kwargs: dict[str, Any] | None = Field(
        default=None,
        description=(
            "task_runner=dask: keyword arguments of the cluster class (set them in prefect.yml "
            "`runner:`); `n_workers`/`threads_per_worker` are added to them when given."
        ),
    )
    adapt_kwargs: dict[str, Any] | None = Field(
        default=None,
        description=(
            "task_runner=dask: make the cluster adaptive, `cluster.adapt(**adapt_kwargs)`, "
            "e.g. `{minimum: 0, maximum: 4}` workers."
        ),
    )
    client_kwargs: dict[str, Any] | None = Field(
        default=None,
        description="task_runner=dask: keyword arguments of the `distributed.Client`.",
    )
    performance_report_path: str | None = Field(
        default=None,
        description=(
            "task_runner=dask: write Dask's HTML performance report of the run to this path "
            "(relative to the working directory) and link it from the flow run's artifacts."
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

    @field_validator("infrastructure", mode="before")
    @classmethod
    def _infrastructure(cls, value: Any) -> Any:
        if value is None or value is False:
            return value
        from kedro_prefect.config.infrastructure import parse_infrastructure

        try:
            mapping = parse_infrastructure(value)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise ValueError(f"{where}: {error['msg'].removeprefix('Value error, ')}") from None
        check_child_runner_options(mapping)
        return mapping

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
        dask_only = [name for name in DASK_OPTIONS if getattr(self, name) is not None]
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
        cluster = [
            name
            for name in ("cluster_class", "cluster_kwargs", "adapt_kwargs")
            if getattr(self, name) is not None
        ]
        if self.address and cluster:
            raise ValueError(
                f"{', '.join(cluster)} describe a cluster started for the run; they cannot be "
                "combined with address= (an existing cluster, which its owner sizes and "
                "adapts)"
            )
        for name in ("cluster_kwargs", "client_kwargs"):
            if "asynchronous" in (getattr(self, name) or {}):
                raise ValueError(f"{name} cannot set 'asynchronous' (Prefect manages it)")
        if self.task_runner == "dask" and self.max_workers is not None:
            raise ValueError(
                "max_workers applies to task_runner=thread and process; with task_runner=dask use "
                "n_workers and threads_per_worker"
            )
        return self

    @field_validator("cluster_class")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is None:
            return value
        value = value.strip()
        module, _, name = value.replace(":", ".").rpartition(".")
        if not (module and name):
            raise ValueError(
                "must be the import path of a Dask cluster class, e.g. distributed.LocalCluster"
            )
        return value

    @field_validator("flow_name")
    @classmethod
    def _non_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value


def check_child_runner_options(infrastructure: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming ``<group>.runner`` if a group's runner options are invalid."""
    for group, where in infrastructure.items():
        try:
            RunnerOptions(**where.runner)
        except ValidationError as exc:
            problems = _describe(exc, where.runner).splitlines()[1:]
            raise ValueError(f"{group}.runner: " + "; ".join(p.strip() for p in problems)) from None


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
    text = "Invalid PrefectRunner options:\n  " + "\n  ".join(lines)
    if any(e["loc"] == ("max_workers",) and e["type"] == "greater_than" for e in exc.errors()):
        # Kedro's ThreadRunner's message for the same mistake, first (a ValueError there too)
        text = f"{KEDRO_MAX_WORKERS_MESSAGE}\n{text}"
    return text


#: ``ThreadRunner(max_workers=0)``'s ``ValueError`` message in Kedro.
KEDRO_MAX_WORKERS_MESSAGE = "max_workers should be positive"
