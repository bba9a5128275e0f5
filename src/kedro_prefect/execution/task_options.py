"""Resolving each node's Prefect task options (retries, timeout, tags) from the runner options
and the ``tasks:`` rules of ``prefect.yml`` (:mod:`kedro_prefect.config.tasks`), and creating the
tag concurrency limits that the rules name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kedro_prefect.config.tasks import SCALAR_OPTIONS, SELECTORS, TasksConfig
from kedro_prefect.errors import NodeTimeoutError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from kedro.pipeline import Pipeline
    from kedro.pipeline.node import Node
    from prefect.client.orchestration import SyncPrefectClient

logger = logging.getLogger(__name__)


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


def group_task_options(
    group: str, nodes: list[Node], resolved: dict[str, NodeTaskOptions]
) -> NodeTaskOptions:
    """The task options of a group of nodes run as one task run (``group_by``).

    ``retries``: the most any node of the group has (a retry runs the group again from its first
    node); ``timeout_seconds``: the sum of its nodes' timeouts, when every node has one;
    ``retry_delay_seconds`` and ``retry_jitter_factor``: the value its nodes share; tags: all of
    its nodes' tags (concurrency limits apply to the group).

    Raises:
        NodeGroupingError: Nodes of the group have different delays or jitter, or some have a
            timeout and others none.
    """
    from kedro_prefect.errors import NodeGroupingError

    options = [resolved[node.name] for node in nodes]
    result = NodeTaskOptions(tags=set().union(*(o.tags for o in options)))
    retries = [r for o in options if (r := o.options.get("retries")) is not None]
    result.options["retries"] = max(retries) if retries else None
    for name in ("retry_delay_seconds", "retry_jitter_factor"):
        values = {repr(o.options.get(name)): o.options.get(name) for o in options}
        if len(values) > 1:
            raise NodeGroupingError(_conflict(group, name, nodes, options))
        result.options[name] = next(iter(values.values()))
    timeouts = [o.options.get("timeout_seconds") for o in options]
    if any(t is None for t in timeouts) and any(t is not None for t in timeouts):
        raise NodeGroupingError(_conflict(group, "timeout_seconds", nodes, options))
    given = [t for t in timeouts if t is not None]
    result.options["timeout_seconds"] = float(sum(given)) if len(given) == len(timeouts) else None
    for name in SCALAR_OPTIONS:
        origins = {o.origins[name] for o in options if name in o.origins}
        if origins:
            result.origins[name] = f"group {group!r}: " + "; ".join(sorted(origins))
    return result


def _conflict(group: str, name: str, nodes: list[Node], options: list[NodeTaskOptions]) -> str:
    described = ", ".join(
        f"{n.name}: {o.options.get(name)}" for n, o in zip(nodes, options, strict=True)
    )
    return (
        f"group {group!r} runs as one task run but its nodes have different {name} "
        f"({described}); give them the same value (prefect.yml tasks: rules) or set "
        "group_by=none. No node has run."
    )


def apply_concurrency_limits(config: TasksConfig) -> frozenset[str]:
    """Create or update the tag concurrency limits of ``tasks.concurrency_limits``.

    Prefect enforces a tag's limit on every task run carrying the tag (slots are named
    ``tag:<tag>``). A ``concurrency_tags`` entry without a limit here or on the server is
    reported, because it would limit nothing.

    Returns:
        The names (``tag:<tag>``) of all tag concurrency limits on the server after that.
    """
    from prefect.client.orchestration import get_client

    from kedro_prefect._upstream.prefect import upsert_global_concurrency_limit

    wanted = {tag for rule in config.rules for tag in rule.concurrency_tags}
    with get_client(sync_client=True) as client:
        for tag, limit in config.concurrency_limits.items():
            upsert_global_concurrency_limit(client, f"tag:{tag}", limit)
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


class LimitedTags:
    """The names (``tag:<tag>``) of the tag concurrency limits on the server, as
    :func:`apply_concurrency_limits` returns them, read in a background thread.

    A run starts its nodes while the limits are written and read (a round trip or two to a
    server busy with the run's start: ~0.3 s); the first node task asking whether a tag has a
    limit waits for them, so no tagged node runs before its limit exists. An error (the API
    does not answer) is raised there, in that task.
    """

    def __init__(self, config: TasksConfig) -> None:
        import contextvars
        import threading
        from concurrent.futures import Future

        self._names: Future[frozenset[str]] = Future()
        context = contextvars.copy_context()

        def read() -> None:
            try:
                self._names.set_result(context.run(apply_concurrency_limits, config))
            except BaseException as exc:
                self._names.set_exception(exc)

        threading.Thread(target=read, name="kedro-prefect-tag-limits", daemon=True).start()

    def __contains__(self, name: object) -> bool:
        return name in self._names.result()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names.result())

    def __len__(self) -> int:
        return len(self._names.result())

    def __enter__(self) -> LimitedTags:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Wait for the limits at the end of the run (their warnings are the run's)."""
        try:
            self._names.result()
        except Exception as exc:  # no tagged node asked: the run did not need them
            logger.warning("Could not write or read the tag concurrency limits: %s", exc)


def _tag_limit_names(client: SyncPrefectClient, page: int = 200) -> frozenset[str]:
    names: set[str] = set()
    offset = 0
    while True:
        limits = client.read_global_concurrency_limits(limit=page, offset=offset)
        names.update(limit.name for limit in limits if limit.name.startswith("tag:"))
        if len(limits) < page:
            return frozenset(names)
        offset += page


def timeout_error(node: Node, options: NodeTaskOptions | None) -> NodeTimeoutError:
    """The error raised when ``node``'s task run ended ``TimedOut``."""
    limit = options.describe("timeout_seconds") if options else "timeout_seconds"
    return NodeTimeoutError(
        f"Node {node.name!r} timed out: an attempt ran longer than {limit}. Raise the limit "
        "with a tasks rule in prefect.yml or the timeout_seconds runner option."
    )
