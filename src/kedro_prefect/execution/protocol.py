"""The interface between the scheduling loop and where node tasks run.

The loop (:mod:`kedro_prefect.scheduling`) knows nothing of threads or Dask: it asks a
:class:`NodeExecution` for the task body, for each node's task parameters, and tells it when a
node has completed and when the run is over. Two implementations:
:class:`kedro_prefect.execution.local.LocalNodeExecution` (threads, shared catalog) and
:class:`kedro_prefect.dask.driver.DaskNodeExecution` (data travels between workers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from kedro.pipeline.node import Node
    from prefect.futures import PrefectFuture


class NodeExecution(Protocol):
    """How the runner runs node tasks: task body, task parameters, completion handling."""

    #: The body of every node task; called by Prefect with :meth:`submit_arguments`' parameters.
    task_fn: Callable[..., Any]

    def submit_arguments(
        self, node: Node, producers: set[Node], futures: dict[Node, PrefectFuture[Any]]
    ) -> dict[str, Any]:
        """Keyword arguments of ``TaskRunner.submit`` for ``node`` (its producers are done)."""
        ...

    def node_completed(self, node: Node, futures: dict[Node, PrefectFuture[Any]]) -> None:
        """``node`` completed: move its free outputs to the catalog, release what is not needed."""
        ...

    def nodes_finished(self, futures: dict[Node, PrefectFuture[Any]]) -> None:
        """No node is running any more: collect what the run still needs (task run records)."""
        ...
