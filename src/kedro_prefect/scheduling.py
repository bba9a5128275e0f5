"""The scheduling loop: submit each node as soon as the producers of its inputs are done.

No layer barriers: a node waits for the nodes producing its inputs and nothing else, so a fast
branch never waits for a slow sibling. The loop knows nothing of threads or Dask: it submits
through a Prefect ``TaskRunner`` and asks a :class:`~kedro_prefect.execution.protocol.NodeExecution`
for each node's task parameters. It stops submitting at the first failure or on cancellation and
waits for the nodes already running.
"""

from __future__ import annotations

import logging
import queue
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any

from kedro_prefect.cache.hits import is_skipped

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline
    from kedro.pipeline.node import Node
    from prefect import Task
    from prefect.futures import PrefectFuture
    from prefect.task_runners import TaskRunner

    from kedro_prefect.execution.cancellation import Cancellation
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
) -> Outcome:
    """Run every node of ``pipeline``; return how they ended (nothing raised for a node)."""
    parents = pipeline.node_dependencies
    children: dict[Node, list[Node]] = {node: [] for node in pipeline.nodes}
    for node, node_parents in parents.items():
        for parent in node_parents:
            children[parent].append(node)
    waiting_on = {node: len(node_parents) for node, node_parents in parents.items()}
    load_counts = Counter(chain.from_iterable(n.inputs for n in pipeline.nodes))
    # Kedro's AbstractRunner._release_datasets recomputes these for every node (O(nodes)).
    free_inputs, free_outputs = frozenset(pipeline.inputs()), frozenset(pipeline.outputs())

    futures: dict[Node, PrefectFuture[Any]] = {}
    finished: queue.SimpleQueue[Node | None] = queue.SimpleQueue()
    outcome = Outcome()

    def submit(node: Node) -> None:
        future = task_runner.submit(
            task_of(node), **execution.submit_arguments(node, parents[node], futures)
        )
        futures[node] = future
        observer.on_node_submitted(node, future)
        future.add_done_callback(lambda _, node=node: finished.put(node))

    cancellation.on_request(lambda: finished.put(None))  # wake the loop up
    in_flight = 0
    for node in pipeline.nodes:
        if not waiting_on[node]:
            submit(node)
            in_flight += 1

    total = len(pipeline.nodes)
    while in_flight:
        node = finished.get()
        if node is None:  # cancellation requested: submit nothing more
            continue
        in_flight -= 1
        future = futures[node]
        future.wait()  # already done: this only records the final state on the future
        state = future.state
        outcome.final_states[future.task_run_id] = state.type
        observer.on_node_finished(node, future)
        if not state.is_completed():
            outcome.failed = outcome.failed or (node, state)
            continue
        outcome.done.add(node)
        execution.node_completed(node, futures)
        if is_skipped(state):  # skip_unchanged: a cache hit
            logger.info("Skipped node: %s (unchanged since its last successful run)", node.name)
        else:
            logger.info("Completed node: %s", node.name)
        logger.info("Completed %d out of %d tasks", len(outcome.done), total)
        release_datasets(node, catalog, load_counts, free_inputs, free_outputs)
        if outcome.failed or cancellation.requested:
            continue
        for child in children[node]:
            waiting_on[child] -= 1
            if not waiting_on[child]:
                submit(child)
                in_flight += 1

    execution.nodes_finished(futures)
    return outcome


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
