"""The scheduling loop: submit each node as soon as the producers of its inputs are done.

No layer barriers: a node waits for the nodes producing its inputs and nothing else, so a fast
branch never waits for a slow sibling. The loop knows nothing of threads or Dask: it submits
through a Prefect ``TaskRunner`` and asks a :class:`~kedro_prefect.execution.protocol.NodeExecution`
for each node's task parameters. It stops submitting at the first failure or on cancellation and
waits for the nodes already running.
"""

from __future__ import annotations

import functools
import logging
import queue
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any, cast

from kedro_prefect.cache.hits import is_skipped
from kedro_prefect.execution.grouping import Unit

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline
    from kedro.pipeline.node import Node
    from prefect import Task
    from prefect.client.schemas.objects import State
    from prefect.futures import PrefectFuture
    from prefect.task_runners import TaskRunner

    from kedro_prefect.execution.cancellation import Cancellation
    from kedro_prefect.execution.grouping import Grouping
    from kedro_prefect.execution.protocol import NodeExecution
    from kedro_prefect.observe.base import RunObserver


@dataclass
class Outcome:
    """How the nodes of a run ended."""

    done: set[Node] = field(default_factory=set)
    #: The first node that did not complete, and its final Prefect state.
    failed: tuple[Node, Any] | None = None
    #: Final state type of every task run, by task run id.
    final_states: dict[Any, Any] = field(default_factory=dict)


def run_nodes(
    pipeline: Pipeline,
    catalog: CatalogProtocol,
    task_runner: TaskRunner,
    execution: NodeExecution,
    task_of: Callable[[Node], Task],
    observer: RunObserver,
    cancellation: Cancellation,
    logger: logging.Logger,
    grouping: Grouping | None = None,
    group_task_of: Callable[[Unit], Task] | None = None,
    submit_pool: Callable[[Unit, list[PrefectFuture[Any]]], PrefectFuture[Any]] | None = None,
) -> Outcome:
    """Run every node of ``pipeline``; return how they ended (nothing raised for a node).

    With ``grouping`` (``group_by``), each group is submitted as one task
    (``group_task_of(unit)``, parameters from ``execution.submit_group_arguments``), once every
    node outside the group that produces its inputs is done; a single node as before.
    A group on a work pool (``infrastructure:``, ``kind="pool"``) is submitted by
    ``submit_pool(unit, producer futures)`` (its child flow run); only persisted data crosses its
    boundary, so its nodes are never data producers of other units' tasks.
    """
    parents = pipeline.node_dependencies
    units = grouping.units if grouping else [Unit(node.name, (node,)) for node in pipeline.nodes]
    unit_of = {node: unit for unit in units for node in unit.nodes}
    producers = {
        unit: {p for n in unit.nodes for p in parents[n] if unit_of[p] is not unit}
        for unit in units
    }
    children: dict[Unit, set[Unit]] = {unit: set() for unit in units}
    for unit, unit_producers in producers.items():
        for producer in unit_producers:
            children[unit_of[producer]].add(unit)
    waiting_on = {unit: len({unit_of[p] for p in producers[unit]}) for unit in units}
    on_pool = {node for unit in units if unit.kind == "pool" for node in unit.nodes}
    load_counts = Counter(chain.from_iterable(n.inputs for n in pipeline.nodes))
    # Kedro's AbstractRunner._release_datasets recomputes these for every node (O(nodes)).
    free_inputs, free_outputs = frozenset(pipeline.inputs()), frozenset(pipeline.outputs())

    futures: dict[Node, PrefectFuture[Any]] = {}
    finished: queue.SimpleQueue[Unit | None] = queue.SimpleQueue()
    outcome = Outcome()

    def submit(unit: Unit) -> None:
        if unit.kind == "pool":
            producer_futures = {id(futures[p]): futures[p] for p in producers[unit]}
            future = submit_pool(unit, list(producer_futures.values()))  # type: ignore[misc]
        elif unit.is_group:
            task = group_task_of(unit)  # type: ignore[misc]
            arguments = execution.submit_group_arguments(  # type: ignore[attr-defined]
                unit.nodes, producers[unit] - on_pool, futures
            )
            future = task_runner.submit(task, **arguments)
        else:
            node = unit.nodes[0]
            task, arguments = (
                task_of(node),
                execution.submit_arguments(node, parents[node] - on_pool, futures),
            )
            future = task_runner.submit(task, **arguments)
        for node in unit.nodes:
            futures[node] = future
            observer.on_node_submitted(node, future)
        future.add_done_callback(functools.partial(_put_unit, finished, unit))

    cancellation.on_request(lambda: finished.put(None))  # wake the loop up
    in_flight = 0
    for unit in units:
        if not waiting_on[unit]:
            submit(unit)
            in_flight += 1

    total = len(pipeline.nodes)
    while in_flight:
        done = cancellation.wait_for(finished)
        if done is None:  # cancellation requested: submit nothing more
            continue
        unit = done
        in_flight -= 1
        future = futures[unit.nodes[0]]
        future.wait()  # already done: this only records the final state on the future
        state = future.state
        outcome.final_states[future.task_run_id] = state.type
        completed = list(unit.nodes)
        if not state.is_completed():
            failed = _failed_node(unit, state)
            completed = completed[: unit.nodes.index(failed)]
            outcome.failed = outcome.failed or (failed, state)
        for node in completed:
            seen = future if state.is_completed() else cast("PrefectFuture[Any]", _Done(future))
            observer.on_node_finished(node, seen)
            outcome.done.add(node)
            if node not in on_pool:  # a child flow run's nodes left nothing in this process
                execution.node_completed(node, futures)
            if is_skipped(state):  # skip_unchanged: a cache hit
                logger.info("Skipped node: %s (unchanged since its last successful run)", node.name)
            else:
                logger.info("Completed node: %s", node.name)
            logger.info("Completed %d out of %d tasks", len(outcome.done), total)
            release_datasets(node, catalog, load_counts, free_inputs, free_outputs)
        if not state.is_completed():
            rest = unit.nodes[len(completed) :]
            observer.on_node_finished(rest[0], future)
            for node in rest[1:]:
                observer.on_node_not_run(node)
            continue
        if outcome.failed or cancellation.requested:
            continue
        for child in children[unit]:
            waiting_on[child] -= 1
            if not waiting_on[child]:
                submit(child)
                in_flight += 1

    execution.nodes_finished(futures)
    return outcome


def _failed_node(unit: Unit, state: State[Any]) -> Node:
    """The node of ``unit`` that failed: the one its exception names, else its first node."""
    if len(unit.nodes) == 1:
        return unit.nodes[0]
    from kedro_prefect.execution.local import failed_node

    try:
        name = failed_node(state.result(raise_on_failure=False))
    except Exception:  # a crashed or timed-out state without the node's exception
        name = None
    return next((node for node in unit.nodes if node.name == name), unit.nodes[0])


class _Done:
    """A group's future seen by a node that completed before another node of the group failed."""

    def __init__(self, future: PrefectFuture[Any]):
        from prefect.states import Completed

        self._future = future
        self.state: Any = Completed()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._future, name)


def _put_unit(finished: queue.SimpleQueue[Unit | None], unit: Unit, _future: Any) -> None:
    """A unit's future is done: hand the unit to the scheduling loop."""
    finished.put(unit)


def release_datasets(
    node: Node,
    catalog: CatalogProtocol,
    load_counts: Counter[str],
    free_inputs: frozenset[str],
    free_outputs: frozenset[str],
) -> None:
    """Kedro's ``AbstractRunner._release_datasets``, given the pipeline's free inputs/outputs."""
    for dataset in node.inputs:
        load_counts[dataset] -= 1
        if load_counts[dataset] < 1 and dataset not in free_inputs:
            catalog.release(dataset)
    for dataset in node.outputs:
        if load_counts[dataset] < 1 and dataset not in free_outputs:
            catalog.release(dataset)
