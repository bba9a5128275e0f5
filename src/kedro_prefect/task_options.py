"""Per-node Prefect task options: retries, retry delay, timeout, tags and concurrency limits.

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
union of those of every matching rule.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

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

from kedro_prefect.errors import KedroPrefectError

if TYPE_CHECKING:
    from kedro.pipeline import Pipeline
    from kedro.pipeline.node import Node

logger = logging.getLogger(__name__)

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


@dataclass
class NodeTaskOptions:
    """The resolved options of one node, and where each scalar option came from."""

    options: dict[str, Any] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    origins: dict[str, str] = field(default_factory=dict)

    def prefect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``prefect.task``."""
        kwargs = {name: value for name, value in self.options.items() if value is not None}
        if self.tags:
            kwargs["tags"] = set(self.tags)
        return kwargs

    def describe(self, option: str) -> str:
        """``timeout_seconds=5.0 (prefect.yml rule node: x)``."""
        return f"{option}={self.options.get(option)} ({self.origins.get(option, 'default')})"


def resolve_task_options(
    pipeline: Pipeline, defaults: dict[str, Any], config: TasksConfig
) -> dict[str, NodeTaskOptions]:
    """Resolve the task options of each node of ``pipeline``, keyed by node name.

    ``defaults`` are the runner-wide values (runner options). A rule that matches no node of
    the pipeline is logged as a warning: it is most likely a typo.
    """
    ordered = sorted(
        enumerate(config.rules), key=lambda item: (SELECTORS.index(item[1].kind), item[0])
    )
    matched: set[int] = set()
    resolved: dict[str, NodeTaskOptions] = {}
    for node in pipeline.nodes:
        result = NodeTaskOptions(
            options={name: defaults.get(name) for name in SCALAR_OPTIONS},
            origins={
                name: "runner option" for name in SCALAR_OPTIONS if defaults.get(name) is not None
            },
        )
        for index, rule in ordered:
            if not rule.matches(node):
                continue
            matched.add(index)
            for name in SCALAR_OPTIONS:
                value = getattr(rule, name)
                if value is not None:
                    result.options[name] = value
                    result.origins[name] = f"prefect.yml tasks.rules[{index}] {rule.label}"
            result.tags.update(rule.tags, rule.concurrency_tags)
        resolved[node.name] = result
    for index, rule in enumerate(config.rules):
        if index not in matched:
            logger.warning(
                "prefect.yml tasks.rules[%d] (%s) matches no node of this pipeline; "
                "check the node name, namespace or tag",
                index,
                rule.label,
            )
    return resolved


def apply_concurrency_limits(config: TasksConfig) -> frozenset[str]:
    """Create or update the tag concurrency limits of ``tasks.concurrency_limits``.

    Prefect enforces a tag's limit on every task run carrying the tag (slots are named
    ``tag:<tag>``). A ``concurrency_tags`` entry without a limit here or on the server is
    reported, because it would limit nothing.

    Returns:
        The names (``tag:<tag>``) of all tag concurrency limits on the server after that.
    """
    from prefect.client.orchestration import get_client

    wanted = {tag for rule in config.rules for tag in rule.concurrency_tags}
    with get_client(sync_client=True) as client:
        for tag, limit in config.concurrency_limits.items():
            client.upsert_global_concurrency_limit_by_name(f"tag:{tag}", limit)
        limited = _tag_limit_names(client)
    for tag in sorted(wanted - set(config.concurrency_limits)):
        if f"tag:{tag}" not in limited:
            logger.warning(
                "concurrency tag %r has no concurrency limit in Prefect: add it under "
                "tasks.concurrency_limits in prefect.yml or run "
                "`prefect concurrency-limit create %s <N>`",
                tag,
                tag,
            )
    return limited


def _tag_limit_names(client: Any, page: int = 200) -> frozenset[str]:
    names: set[str] = set()
    offset = 0
    while True:
        limits = client.read_global_concurrency_limits(limit=page, offset=offset)
        names.update(limit.name for limit in limits if limit.name.startswith("tag:"))
        if len(limits) < page:
            return frozenset(names)
        offset += page


class NodeTimeoutError(KedroPrefectError, TimeoutError):
    """A node ran longer than its ``timeout_seconds``."""


def timeout_error(node: Node, options: NodeTaskOptions | None) -> NodeTimeoutError:
    """The error raised when ``node``'s task run ended ``TimedOut``."""
    limit = options.describe("timeout_seconds") if options else "timeout_seconds"
    return NodeTimeoutError(
        f"Node {node.name!r} timed out: an attempt ran longer than {limit}. Raise the limit "
        "with a tasks rule in prefect.yml or the timeout_seconds runner option."
    )
