"""What the runner tells observers about a pipeline run, and the record of each node run.

``PrefectRunner`` calls four methods of a :class:`RunObserver` from its scheduling loop:
``on_run_start`` (inside the flow run, before any node is submitted), ``on_node_submitted``,
``on_node_finished`` (with the node's Prefect future, already done) and ``on_run_end``.
This module imports no other module of ``observe/`` (only :mod:`kedro_prefect.cache.hits`):
observers depend on it, never the reverse.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from kedro_prefect.cache.hits import is_skipped

if TYPE_CHECKING:
    from kedro.pipeline import Pipeline
    from kedro.pipeline.node import Node
    from prefect.futures import PrefectFuture
    from prefect.states import State


#: How the node table and the terminal summary name a node skipped by ``skip_unchanged``.
SKIPPED = "skipped (unchanged)"


@dataclass
class NodeRun:
    """What is known about one node of a run; filled in as the run goes on."""

    node: Node
    future: PrefectFuture[Any] | None = None
    submitted_at: float | None = None  # time.monotonic()
    finished_at: float | None = None  # time.monotonic()
    state: State | None = None
    attempts: int | None = None
    start: datetime | None = None
    duration: timedelta | None = None
    worker: str | None = None

    def take(self, task_run: Any) -> None:
        """Attempts, start, duration (and worker, if named) from a ``TaskRunRecord``."""
        self.attempts, self.start, self.duration = (
            task_run.attempts,
            task_run.start,
            task_run.duration,
        )
        if task_run.worker:
            self.worker = task_run.worker

    @property
    def state_name(self) -> str:
        """``Completed``, ``Failed``... or ``Not run`` for a node that was never submitted."""
        if self.state is not None:
            if self.skipped:
                return SKIPPED
            return self.state.name or self.state.type.value.title()
        return "Running" if self.future is not None else "Not run"

    @property
    def skipped(self) -> bool:
        """Skipped by ``skip_unchanged``: the task run's result came from Prefect's cache."""
        return is_skipped(self.state)

    @property
    def failed(self) -> bool:
        return self.state is not None and not self.state.is_completed()

    @property
    def seconds(self) -> float | None:
        """Run time from the Prefect API; else the time between submission and completion."""
        if self.duration is not None:
            return self.duration.total_seconds()
        if self.submitted_at is not None and self.finished_at is not None:
            return self.finished_at - self.submitted_at
        return None


@dataclass
class PipelineRun:
    """One pipeline run as observers see it."""

    pipeline: Pipeline
    #: Where a node ran when its task run's record does not say (``Backend.worker_label``).
    worker_label: str | None
    flow_name: str
    pipeline_names: list[str]
    flow_run_id: Any = None
    flow_run_name: str | None = None
    api_url: str | None = None
    ui_root: str | None = None  # the UI serving the run's pages (``.../v2`` where offered)
    ui_url: str | None = None  # the flow run's page
    graph_url: str | None = None  # the graph artifact's page (known at the end)
    persisted_datasets: set[str] = field(default_factory=set)  # not in memory (is_in_memory)
    started_at: float = field(default_factory=time.monotonic)
    ended_at: float | None = None
    error: BaseException | None = None
    nodes: dict[str, NodeRun] = field(default_factory=dict)
    #: The group (``group_by``) of each node run as part of one; nodes run alone are absent.
    groups: dict[str, str] = field(default_factory=dict)
    #: Node name -> where it ran, for nodes the run placed itself (a group on a work pool).
    places: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.nodes = {node.name: NodeRun(node) for node in self.pipeline.nodes}

    @property
    def key_stem(self) -> str:
        """Artifact key prefix, stable for a flow and pipeline(s): ``sales-demo-default``."""
        return _slug(f"{self.flow_name}-{'-'.join(self.pipeline_names)}")

    def unfinished_task_runs(self) -> list[Any]:
        """Ids of the task runs submitted whose node has not finished (yet)."""
        return [
            record.future.task_run_id
            for record in list(self.nodes.values())
            if record.future is not None and record.state is None
        ]

    @property
    def elapsed(self) -> float:
        return (self.ended_at or time.monotonic()) - self.started_at


class RunObserver(Protocol):
    """Receives the events of a pipeline run. Every method is a no-op by default.

    An observer subclasses it and overrides the methods it needs."""

    def on_run_start(self, run: PipelineRun) -> None:
        """The flow run has started; no node has been submitted yet."""
        return None

    def on_node_submitted(self, node: Node, future: PrefectFuture[Any]) -> None:
        """``node`` was handed to the task runner."""
        return None

    def on_node_finished(self, node: Node, future: PrefectFuture[Any]) -> None:
        """``node``'s task run reached a final state (``future.state``)."""
        return None

    def on_node_not_run(self, node: Node) -> None:
        """``node`` was submitted within a group (``group_by``) and did not run: a node of the
        group before it failed."""
        return None

    def on_run_end(self, run: PipelineRun) -> None:
        """The run is over (``run.error`` is the exception if it failed)."""
        return None


class _NullObserver(RunObserver):
    """Observes nothing (the runner's observer outside a run)."""


NULL_OBSERVER: RunObserver = _NullObserver()


def _slug(text: str) -> str:
    out = "".join(ch if ch.isalnum() else "-" for ch in text.lower())
    return "-".join(part for part in out.split("-") if part) or "kedro"
