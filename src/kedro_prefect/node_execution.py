"""Running one Kedro node inside a Prefect task, exactly the way Kedro's own runners do."""

from __future__ import annotations

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
    """
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    extra_tags = task_options.pop("tags", ())
    return task(
        fn,
        name=node.name,
        task_run_name=node.name,
        tags=node_tags(node) | set(extra_tags),
        cache_policy=NO_CACHE,
        persist_result=False,
        **task_options,
    )
