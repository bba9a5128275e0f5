"""The seam between the run and where node tasks run: :class:`Backend` and :class:`NodeExecution`.

A run chooses one :class:`Backend` from its options, once (:func:`kedro_prefect.backends.
choose_backend`): ``thread``, ``process`` or ``dask``. The backend builds the Prefect task runner
and the run's :class:`NodeExecution`; nothing else asks which backend a run uses.

The scheduling loop (:mod:`kedro_prefect.scheduling`) knows nothing of threads, processes or
Dask: it asks the :class:`NodeExecution` for the task body and each node's task parameters, and
tells it when a node has completed and when the run is over.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline
    from kedro.pipeline.node import Node
    from pluggy import PluginManager
    from prefect.futures import PrefectFuture
    from prefect.task_runners import TaskRunner

    from kedro_prefect.execution.versions import RunVersions


class SavedEvents(Protocol):
    """Emits a ``kedro.dataset.saved`` event per persisted output a node saved
    (:class:`kedro_prefect.observe.events.DatasetEvents`); picklable, it goes with node tasks."""

    def emit_saved(self, node: Node, catalog: CatalogProtocol) -> int:
        """Emit the events of ``node``'s persisted outputs in ``catalog``; never raises."""
        ...


class NodeExecution(Protocol):
    """How the runner runs node tasks: task body, task parameters, completion handling."""

    #: The body of every node task; called by Prefect with :meth:`submit_arguments`' parameters.
    task_fn: Callable[..., Any]

    #: Whether node tasks load and save through the driver's own catalog (in-memory outputs are
    #: in it when a node completes); ``False``: they run in other processes and a node's
    #: in-memory outputs are its task's result.
    shares_catalog: bool

    @property
    def versions(self) -> RunVersions | None:
        """The versions of versioned datasets node tasks load and save, pinned for the run
        (:class:`~kedro_prefect.execution.versions.RunVersions`); ``None``: they use the
        catalog's own datasets (a shared catalog)."""
        ...

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


class Backend(Protocol):
    """Where one run's node tasks run, chosen once from the options (``task_runner``).

    The run's path through it: :meth:`task_runner` (entered by the flow, closed at its end:
    a local Dask cluster stops there), then :meth:`node_execution` before any node runs (the
    cluster starts there, with its one clear error; datasets that cannot cross processes are
    refused there; worker processes are told how to set up the project), then the scheduling
    loop with that :class:`NodeExecution`, whose ``nodes_finished`` collects what the workers
    kept.
    """

    #: The ``task_runner`` value this backend stands for: ``thread``, ``process`` or ``dask``.
    name: str

    #: Whether the run starts Dask processes whose lifecycle lines the terminal hides at INFO
    #: (:func:`kedro_prefect.observe.logs.quiet_terminal`).
    quiet_dask_logs: bool

    def starting(
        self, pipeline: Pipeline, catalog: CatalogProtocol
    ) -> AbstractContextManager[None]:
        """Entered as the run begins, before Prefect's flow run is set up, and left when the run
        ends: what the backend starts ahead, in the background (a local Dask cluster;
        nothing for threads and processes)."""
        ...

    def task_runner(self, pipeline: Pipeline) -> AbstractContextManager[TaskRunner[Any]]:
        """A new Prefect task runner for one run of ``pipeline``, started by entering it."""
        ...

    def node_execution(
        self,
        task_runner: TaskRunner[Any],
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        hook_manager: PluginManager,
        is_async: bool,
        run_id: str | None,
        events: SavedEvents | None = None,
    ) -> NodeExecution:
        """The run's :class:`NodeExecution`, once ``task_runner`` has started; before any node.

        Raises:
            KedroPrefectError: What the backend cannot run (a cluster that does not start, a
                dataset that cannot cross processes), one line, before any node has run.
        """
        ...

    def worker_label(self, task_runner: TaskRunner[Any]) -> str | None:
        """Where a node ran, for the node table, when the task run's record does not say
        (``None``: the worker always says, as Dask workers do)."""
        ...
