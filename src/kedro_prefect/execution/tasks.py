"""The Prefect task of a node: named after it, tagged, never cached or persisted."""

from __future__ import annotations

import copy
import functools
import inspect
from typing import TYPE_CHECKING, Any

from kedro_prefect.execution.local import run_node
from kedro_prefect.execution.records import note_task_run

if TYPE_CHECKING:
    from collections.abc import Callable

    from kedro.pipeline.node import Node
    from prefect import Task


def node_tags(node: Node) -> set[str]:
    """Prefect tags of a node task: the node's Kedro tags plus its namespace."""
    tags = set(node.tags)
    if node.namespace:
        tags.add(node.namespace)
    return tags


def node_task(node: Node, fn: Callable[..., Any] = run_node, **task_options: Any) -> Task:
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


def group_task(
    name: str, nodes: tuple[Node, ...], fn: Callable[..., Any], **task_options: Any
) -> Task:
    """The Prefect task that runs a group of nodes (``group_by``): named after the group, with
    the tags of all its nodes."""
    extra_tags = task_options.pop("tags", ())
    key = tuple(sorted(task_options.items()))
    try:
        task = copy.copy(_task_template(fn, key))
    except TypeError:  # an unhashable option value: build this task from scratch
        task = _task_template.__wrapped__(fn, key)
    task.name = name
    task.task_run_name = name
    task.tags = set().union(*(node_tags(node) for node in nodes)) | set(extra_tags)
    return task


@functools.lru_cache(maxsize=64)
def _task_template(fn: Any, task_options: tuple[tuple[str, Any], ...]) -> Task:
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    options: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}
    return task(_NotingTaskRun(fn), **options, **dict(task_options))


class _NotingTaskRun:
    """A task body calling ``fn``, first noting the engine's task run for the run's records.

    The engine keeps updating that ``TaskRun`` (attempts, end time) until the task run ends; the
    record is read from it afterwards (:mod:`kedro_prefect.execution.records`). A completion
    hook could hand it over instead, but Prefect logs two lines for each hook call, in the
    terminal and in every node's task run logs. A module-level class, so that it pickles by
    reference (Dask) like the function it wraps; it exposes ``fn``'s signature, which Prefect
    binds the task parameters to.
    """

    def __init__(self, fn: Any):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "node")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__doc__ = fn.__doc__
        self.__signature__ = inspect.signature(fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        note_task_run()
        return self.fn(*args, **kwargs)
