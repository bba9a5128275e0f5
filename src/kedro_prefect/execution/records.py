"""The engine's record of each node task run: attempts, start, duration, worker.

Kept where the task runs (this process, or a Dask worker that the driver collects from at the
end of the run), so the driver does not have to read every task run back from the API.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.client.schemas.objects import TaskRun


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


def note_task_run() -> None:
    """Record the engine's task run of the node task running now (called by its body)."""
    records = _TASK_RUN_RECORDS.get()
    if records is None:
        return
    from prefect.context import TaskRunContext

    context = TaskRunContext.get()
    if context is not None and context.task_run is not None:
        records[context.task_run.id] = context.task_run


def add_task_run_records(records: dict[Any, TaskRunRecord]) -> None:
    """Add records made elsewhere (on Dask workers) to the run being recorded here."""
    current = _TASK_RUN_RECORDS.get()
    if current is not None:
        current.update(records)


def ended_task_run(records: dict[Any, Any], task_run_id: UUID | None) -> TaskRunRecord | None:
    """The record of a node task run that has ended, from :func:`recording_task_runs`'s dict."""
    record = records.get(task_run_id)
    if record is None or isinstance(record, TaskRunRecord):
        return record
    return TaskRunRecord.of(record)
