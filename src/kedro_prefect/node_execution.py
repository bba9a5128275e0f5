"""Running one Kedro node inside a Prefect task, exactly the way Kedro's own runners do."""

from __future__ import annotations

import copy
import functools
from typing import TYPE_CHECKING, Any

from kedro.runner import Task as KedroTask

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline.node import Node
    from pluggy import PluginManager
    from prefect import Task


def run_node(
    node: Node,
    catalog: CatalogProtocol,
    hook_manager: PluginManager,
    is_async: bool,
    run_id: str | None,
) -> None:
    """Execute ``node`` through ``kedro.runner.Task``.

    That is Kedro's own node execution: dataset and node hooks fire on the session's hook
    manager, inputs are loaded from and outputs saved to ``catalog`` (in threads when
    ``is_async``), generator nodes stream their chunks, and ``confirms`` are confirmed.
    """
    KedroTask(
        node=node, catalog=catalog, hook_manager=hook_manager, is_async=is_async, run_id=run_id
    ).execute()


def node_tags(node: Node) -> set[str]:
    """Prefect tags of a node task: the node's Kedro tags plus its namespace."""
    tags = set(node.tags)
    if node.namespace:
        tags.add(node.namespace)
    return tags


def node_task(node: Node, fn: Any = run_node, **task_options: Any) -> Task:
    """The Prefect task that runs ``node``: named after it, tagged, never cached or persisted.

    Prefect would otherwise hash every input (catalog included) into a cache key and write
    results to its result storage: node data belongs to the Kedro catalog, not to Prefect.

    Building a ``prefect.Task`` reads and tokenizes the source of ``fn`` (1-3 ms), the same for
    every node: it is built once per ``fn`` and options, and each node gets a copy of it with its
    own name and tags.
    """
    extra_tags = task_options.pop("tags", ())
    try:
        template = _task_template(fn, tuple(sorted(task_options.items())))
    except TypeError:  # an unhashable option value: build this task from scratch
        template = _task_template.__wrapped__(fn, tuple(sorted(task_options.items())))
    task = copy.copy(template)
    task.name = node.name
    task.task_run_name = node.name
    task.tags = node_tags(node) | set(extra_tags)
    return task


@functools.lru_cache(maxsize=64)
def _task_template(fn: Any, task_options: tuple[tuple[str, Any], ...]) -> Task:
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    return task(fn, cache_policy=NO_CACHE, persist_result=False, **dict(task_options))


class LocalNodeExecution:
    """Node tasks in the runner's process (thread task runner): the catalog is shared."""

    task_fn = staticmethod(run_node)

    def __init__(
        self,
        catalog: CatalogProtocol,
        hook_manager: PluginManager,
        is_async: bool,
        run_id: str | None,
    ):
        self._parameters = {
            "catalog": catalog,
            "hook_manager": hook_manager,
            "is_async": is_async,
            "run_id": run_id,
        }

    def parameters(self, node: Node, futures: dict[Node, Any]) -> dict[str, Any]:
        return {"node": node, **self._parameters}

    def node_completed(self, node: Node, futures: dict[Node, Any]) -> None:
        """Nothing to do: the node saved its outputs in the shared catalog."""
