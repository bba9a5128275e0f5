"""The ``tasks:`` section of ``prefect.yml``: Prefect task options per node.

Runner-wide defaults are runner options (``retries``, ``retry_delay_seconds``,
``retry_jitter_factor``, ``timeout_seconds``: ``--runner-params`` or the ``runner:`` section of
``prefect.yml``). The ``tasks:`` section of ``prefect.yml`` refines them per node::

    tasks:
      rules:
        - tag: io                       # every node with the Kedro tag "io"
          retries: 3
          retry_delay_seconds: 10
          retry_jitter_factor: 0.5
        - namespace: regions            # nodes in namespace "regions" and "regions.<...>"
          timeout_seconds: 600
          concurrency_tags: [warehouse]
        - node: "ingest.*"              # node name, shell-style wildcards allowed
          retries: 0
      concurrency_limits:
        warehouse: 2                    # at most 2 task runs tagged "warehouse" at once

Precedence, lowest to highest: built-in defaults (no retries, no timeout) < runner options
< ``tag`` rules < ``namespace`` rules < ``node`` rules; among rules of the same kind the later
one in the file wins. ``tags`` and ``concurrency_tags`` are never overridden: a node gets the
union of those of every matching rule. How they are resolved for each node:
:mod:`kedro_prefect.execution.task_options`.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

if TYPE_CHECKING:
    from kedro.pipeline.node import Node

# The task options that are also runner options (runner-wide defaults): declared once here.
Retries = Annotated[
    NonNegativeInt | None,
    Field(description="How many times a failed node is run again. Default: 0."),
]
RetryDelaySeconds = Annotated[
    NonNegativeFloat | None,
    Field(description="Seconds to wait before retrying a failed node. Default: 0."),
]
RetryJitterFactor = Annotated[
    NonNegativeFloat | None,
    Field(description="Randomise the retry delay by up to this factor (Prefect's jitter)."),
]
TimeoutSeconds = Annotated[
    PositiveFloat | None,
    Field(description="Fail a node when one attempt runs longer than this. Default: no limit."),
]

#: The options that one value overrides (as opposed to tags, which accumulate).
SCALAR_OPTIONS = ("retries", "retry_delay_seconds", "retry_jitter_factor", "timeout_seconds")
SELECTORS = ("tag", "namespace", "node")  # in increasing precedence


class TaskOptions(BaseModel):
    """Prefect task options that a rule of ``tasks.rules`` sets for the nodes it matches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retries: Retries = None
    retry_delay_seconds: RetryDelaySeconds = None
    retry_jitter_factor: RetryJitterFactor = None
    timeout_seconds: TimeoutSeconds = None
    tags: list[str] = Field(
        default_factory=list, description="Extra Prefect tags of the node's task runs."
    )
    concurrency_tags: list[str] = Field(
        default_factory=list,
        description=(
            "Prefect tags that carry a concurrency limit (see `concurrency_limits`); added to "
            "the task's tags."
        ),
    )


class TaskRule(TaskOptions):
    """One rule: exactly one selector (``node``, ``namespace`` or ``tag``) plus options."""

    node: str | None = Field(
        default=None, description="Node name; shell-style wildcards (`*`, `?`) allowed."
    )
    namespace: str | None = Field(
        default=None, description="Namespace; also matches the namespaces nested in it."
    )
    tag: str | None = Field(default=None, description="Kedro node tag.")

    @model_validator(mode="after")
    def _one_selector(self) -> TaskRule:
        given = [name for name in SELECTORS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "a rule needs exactly one of node, namespace or tag "
                f"(got {', '.join(given) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        return next(name for name in SELECTORS if getattr(self, name) is not None)

    @property
    def label(self) -> str:
        return f"{self.kind}: {getattr(self, self.kind)}"

    def matches(self, node: Node) -> bool:
        if self.node is not None:
            return fnmatch.fnmatchcase(node.name, self.node)
        if self.namespace is not None:
            namespace = node.namespace or ""
            return namespace == self.namespace or namespace.startswith(self.namespace + ".")
        return self.tag in node.tags


class TasksConfig(BaseModel):
    """The ``tasks:`` section of ``prefect.yml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[TaskRule] = Field(
        default_factory=list,
        description="Task options per node, matched by node name, namespace or Kedro tag.",
    )
    concurrency_limits: dict[str, PositiveInt] = Field(
        default_factory=dict,
        description=(
            "Prefect tag concurrency limits created (or updated) before the run: tag -> most "
            "task runs with that tag running at once."
        ),
    )
