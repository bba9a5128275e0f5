"""Running one Kedro node inside a Prefect task, exactly the way Kedro's own runners do."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from kedro.runner import Task as KedroTask

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline.node import Node
    from pluggy import PluginManager
    from prefect import Task
    from prefect.client.schemas.objects import TaskRun
    from prefect.states import State


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

    return task(
        fn,
        cache_policy=NO_CACHE,
        persist_result=False,
        on_completion=[_record_task_run],
        on_failure=[_record_task_run],
        **dict(task_options),
    )


@dataclass(frozen=True)
class TaskRunRecord:
    """A node's task run as Prefect's task engine ended it (what it also sends to the API)."""

    attempts: int
    start: datetime | None
    duration: timedelta | None
    worker: str | None = None  #: the Dask worker that ran it (``None``: this process, or unknown)

    @classmethod
    def of(cls, task_run: TaskRun) -> TaskRunRecord:
        """The record of a task run, from the engine or read back from the API."""
        duration = None
        if task_run.start_time and task_run.end_time:
            duration = task_run.end_time - task_run.start_time
        elif task_run.total_run_time:
            duration = task_run.total_run_time
        return cls(task_run.run_count, task_run.start_time, duration)


#: Where the engine's final view of each task run goes, by task run id (set for a run).
_TASK_RUN_RECORDS: ContextVar[dict[Any, TaskRunRecord] | None] = ContextVar(
    "kedro_prefect_task_run_records", default=None
)


@contextmanager
def recording_task_runs(
    records: dict[Any, TaskRunRecord] | None = None,
) -> Iterator[dict[Any, TaskRunRecord]]:
    """Collect a :class:`TaskRunRecord` for each node task run that ends in this context.

    Filled by a completion/failure hook that runs where the task ran: for the thread task
    runner, in this process; a Dask worker records into a dict of its own, which the driver
    collects at the end of the run (:func:`add_task_run_records`).
    """
    records = {} if records is None else records
    token = _TASK_RUN_RECORDS.set(records)
    try:
        yield records
    finally:
        _TASK_RUN_RECORDS.reset(token)


def add_task_run_records(records: dict[Any, TaskRunRecord]) -> None:
    """Add records made elsewhere (on Dask workers) to the run being recorded here."""
    current = _TASK_RUN_RECORDS.get()
    if current is not None:
        current.update(records)


def _record_task_run(task: Task, task_run: TaskRun, state: State) -> None:
    records = _TASK_RUN_RECORDS.get()
    if records is not None:
        records[task_run.id] = TaskRunRecord.of(task_run)


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

    def nodes_finished(self, futures: dict[Node, Any]) -> None:
        """Nothing to do: the task runs were recorded in this process."""
