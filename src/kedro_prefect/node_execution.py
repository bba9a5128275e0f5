"""Running one Kedro node inside a Prefect task, exactly the way Kedro's own runners do."""

from __future__ import annotations

import copy
import functools
import inspect
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


def run_node(
    node: Node,
    catalog: CatalogProtocol,
    hook_manager: PluginManager,
    is_async: bool,
    run_id: str | None,
    upstream: tuple[str, ...] = (),
) -> None:
    """Execute ``node`` through ``kedro.runner.Task``.

    That is Kedro's own node execution: dataset and node hooks fire on the session's hook
    manager, inputs are loaded from and outputs saved to ``catalog`` (in threads when
    ``is_async``), generator nodes stream their chunks, and ``confirms`` are confirmed.

    ``upstream`` names the nodes producing this node's inputs; they have finished by the time
    it runs. Prefect records their task runs as this task run's ``upstream`` input (see
    :meth:`LocalNodeExecution.submit_arguments`).
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
        _NotingTaskRun(fn), cache_policy=NO_CACHE, persist_result=False, **dict(task_options)
    )


class _NotingTaskRun:
    """A task body calling ``fn``, first noting the engine's task run for the run's records.

    The engine keeps updating that ``TaskRun`` (attempts, end time) until the task run ends; the
    record is read from it afterwards (:func:`ended_task_run`). A completion hook could hand it
    over instead, but Prefect logs two lines for each hook call, in the terminal and in every
    node's task run logs. A module-level class, so that it pickles by reference (Dask) like the
    function it wraps; it exposes ``fn``'s signature, which Prefect binds the task parameters to.
    """

    def __init__(self, fn: Any):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "node")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__doc__ = fn.__doc__
        self.__signature__ = inspect.signature(fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        records = _TASK_RUN_RECORDS.get()
        if records is not None:
            from prefect.context import TaskRunContext

            context = TaskRunContext.get()
            if context is not None and context.task_run is not None:
                records[context.task_run.id] = context.task_run
        return self.fn(*args, **kwargs)


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


#: Node task runs by id, as the engine's ``TaskRun`` or a :class:`TaskRunRecord` (set per run).
_TASK_RUN_RECORDS: ContextVar[dict[Any, Any] | None] = ContextVar(
    "kedro_prefect_task_run_records", default=None
)


@contextmanager
def recording_task_runs(records: dict[Any, Any] | None = None) -> Iterator[dict[Any, Any]]:
    """Keep the engine's view of each node task run started in this context, by task run id.

    Filled where the task runs: for the thread task runner, in this process; a Dask worker
    records into a dict of its own, which the driver collects at the end of the run
    (:func:`add_task_run_records`). Read a task run's record with :func:`ended_task_run`.
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


def ended_task_run(records: dict[Any, Any], task_run_id: Any) -> TaskRunRecord | None:
    """The record of a node task run that has ended, from :func:`recording_task_runs`'s dict."""
    record = records.get(task_run_id)
    if record is None or isinstance(record, TaskRunRecord):
        return record
    return TaskRunRecord.of(record)


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

    def submit_arguments(
        self, node: Node, producers: set[Node], futures: dict[Node, Any]
    ) -> dict[str, Any]:
        """Task parameters, and the producers' task runs as the task run's recorded inputs.

        The producers have finished when a node is submitted. As ``wait_for``, their futures
        would make Prefect fetch each producer's result again before the node starts, a round
        trip to Prefect's event loop thread per producer (~0.5 ms a node on a chain). Recorded
        as the ``upstream`` input instead, they are what the Prefect UI draws as the DAG's edges.
        """
        from prefect.client.schemas.objects import TaskRunResult

        return {
            "parameters": {
                "node": node,
                **self._parameters,
                "upstream": tuple(sorted(p.name for p in producers)),
            },
            "dependencies": {
                "upstream": {TaskRunResult(id=futures[p].task_run_id) for p in producers}
            },
        }

    def node_completed(self, node: Node, futures: dict[Node, Any]) -> None:
        """Nothing to do: the node saved its outputs in the shared catalog."""

    def nodes_finished(self, futures: dict[Node, Any]) -> None:
        """Nothing to do: the task runs were recorded in this process."""
