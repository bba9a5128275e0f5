"""The ``infrastructure:`` section of ``prefect.yml``: groups of nodes run on Prefect work pools.

Each key names a group of the run's nodes, a top-level namespace, a node tag or a registered
pipeline; its value says
which work pool runs that group, as a child flow run (see docs/beyond-one-machine.md)::

    infrastructure:
      data_science:                  # namespace, tag or pipeline data_science
        work_pool: gpu-pool
        job_variables: {image: my-registry/project:1.4, env: {CUDA_VISIBLE_DEVICES: "0"}}
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

#: Runner options a child flow run cannot be given (they are the parent's to decide).
CHILD_RUNNER_OPTIONS_REFUSED = ("infrastructure", "flow_name")

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class InfrastructureConfig(BaseModel):
    """Where one group of nodes runs: a Prefect work pool, as a child flow run of the run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    work_pool: NonEmpty = Field(
        description="The Prefect work pool whose workers run this group (`prefect work-pool ls`)."
    )
    work_queue: NonEmpty | None = Field(
        default=None, description="A work queue of that pool (default: the pool's default queue)."
    )
    job_variables: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Overrides of the pool's job template for this group's runs, e.g. `image`, `cpu`, "
            "`memory`, `env`, or a Kubernetes `job_manifest` patch (the keys the pool's type has)."
        ),
    )
    project_path: NonEmpty | None = Field(
        default=None,
        description=(
            "Where the Kedro project is on the machines of that pool (an absolute path, e.g. "
            "the project's directory in the pool's image). Default: the project's path here."
        ),
    )
    runner: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "PrefectRunner options of the child flow run (e.g. `task_runner: dask`), over the "
            "run's own options."
        ),
    )

    @field_validator("project_path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(
                f"must be an absolute path on the pool's machines (got {value!r}), "
                "e.g. /opt/project"
            )
        return value

    @field_validator("runner")
    @classmethod
    def _child_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        refused = [name for name in CHILD_RUNNER_OPTIONS_REFUSED if name in value]
        if refused:
            raise ValueError(
                f"{', '.join(refused)} cannot be set for a child flow run (the run decides it)"
            )
        return value  # the options themselves: checked by RunnerOptions (config.options)


#: ``infrastructure:``: group name (a namespace, a node tag or a pipeline) -> where it runs.
Infrastructure = dict[NonEmpty, InfrastructureConfig]


def parse_infrastructure(raw: Any) -> dict[str, InfrastructureConfig]:
    """``raw`` (a mapping as in prefect.yml) as validated :class:`InfrastructureConfig` values.

    Raises:
        pydantic.ValidationError: A key or a value is invalid.
    """
    from pydantic import TypeAdapter

    return TypeAdapter(Infrastructure).validate_python(raw)
