"""Node tasks in the runner's process (the thread backend): the catalog is shared.

Each node runs through ``kedro.runner.Task``, exactly the way Kedro's own runners run it.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from kedro.runner import Task as KedroTask

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline.node import Node
    from pluggy import PluginManager

    from kedro_prefect.execution.protocol import SavedEvents


def run_node(
    node: Node,
    catalog: CatalogProtocol,
    hook_manager: PluginManager,
    is_async: bool,
    run_id: str | None,
    upstream: tuple[str, ...] = (),
    events: SavedEvents | None = None,
) -> None:
    """Execute ``node`` through ``kedro.runner.Task``.

    That is Kedro's own node execution: dataset and node hooks fire on the session's hook
    manager, inputs are loaded from and outputs saved to ``catalog`` (in threads when
    ``is_async``), generator nodes stream their chunks, and ``confirms`` are confirmed.

    ``upstream`` names the nodes producing this node's inputs; they have finished by the time
    it runs. Prefect records their task runs as this task run's ``upstream`` input (see
    :meth:`LocalNodeExecution.submit_arguments`).

    With ``events``, a ``kedro.dataset.saved`` Prefect event is emitted for each persisted
    output once the node has saved them (:mod:`kedro_prefect.observe.events`).
    """
    KedroTask(
        node=node, catalog=catalog, hook_manager=hook_manager, is_async=is_async, run_id=run_id
    ).execute()
    if events is not None:
        events.emit_saved(node, catalog)


def run_group(
    nodes: tuple[Node, ...],
    catalog: CatalogProtocol,
    hook_manager: PluginManager,
    is_async: bool,
    run_id: str | None,
    upstream: tuple[str, ...] = (),
    events: SavedEvents | None = None,
) -> None:
    """Execute a group's ``nodes`` one after the other (dependency order), each as :func:`run_node`.

    The data passed between them stays in ``catalog`` (this process): nothing is pickled or
    returned. The exception of a failing node propagates unchanged, marked with the node's name
    (:func:`failed_node`); the nodes after it do not run.
    """
    for node in nodes:
        try:
            run_node(node, catalog, hook_manager, is_async, run_id, events=events)
        except Exception as exc:
            mark_failed_node(exc, node.name)
            raise


#: The attribute naming, on the exception of a group's task run, the node that raised it.
FAILED_NODE_ATTRIBUTE = "kedro_prefect_node"


def mark_failed_node(exc: BaseException, name: str) -> None:
    """Note on ``exc`` which node of a group raised it (kept when the exception is pickled)."""
    with contextlib.suppress(AttributeError, TypeError):  # an exception class with __slots__
        setattr(exc, FAILED_NODE_ATTRIBUTE, name)


def failed_node(exc: Any) -> str | None:
    """The node of a group that raised ``exc`` (:func:`mark_failed_node`), if known."""
    return getattr(exc, FAILED_NODE_ATTRIBUTE, None)


class LocalNodeExecution:  # implements execution.protocol.NodeExecution
    """Node tasks in the runner's process (thread task runner): the catalog is shared."""

    task_fn = staticmethod(run_node)
    shares_catalog = True
    versions = None  # nodes load and save through the shared catalog's own datasets

    def __init__(
        self,
        catalog: CatalogProtocol,
        hook_manager: PluginManager,
        is_async: bool,
        run_id: str | None,
        events: SavedEvents | None = None,
    ):
        self._parameters = {
            "catalog": catalog,
            "hook_manager": hook_manager,
            "is_async": is_async,
            "run_id": run_id,
            "events": events,
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
        return self._arguments({"node": node}, producers, futures)

    group_fn = staticmethod(run_group)

    def submit_group_arguments(
        self, nodes: tuple[Node, ...], producers: set[Node], futures: dict[Node, Any]
    ) -> dict[str, Any]:
        """:meth:`submit_arguments` for a group of nodes run as one task (``group_by``)."""
        return self._arguments({"nodes": nodes}, producers, futures)

    def _arguments(
        self, what: dict[str, Any], producers: set[Node], futures: dict[Node, Any]
    ) -> dict[str, Any]:
        from prefect.client.schemas.objects import TaskRunResult

        return {
            "parameters": {
                **what,
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
