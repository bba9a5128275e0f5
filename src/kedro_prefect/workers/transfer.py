"""The driver side of node tasks in worker processes (``process`` and ``dask`` backends).

In-memory datasets travel as task results: a consumer's task receives its producers' futures as
the ``upstream`` parameter, and the task runner resolves them to the producers' in-memory
outputs (:class:`~kedro_prefect.execution.outputs.NodeData`): Dask worker to worker, a process
pool through the driver (as Kedro's ``ParallelRunner``). Persisted datasets are pickled to the
worker that loads or saves them. Only the pipeline's free in-memory outputs are put in the
driver's catalog, because ``run()`` returns them. What the hooks gathered on the worker comes
back with each task's result, for the driver's hooks (:mod:`.hook_state`). Each task's body is
:func:`kedro_prefect.workers.bootstrap.run_node_on_worker`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kedro_prefect._upstream.kedro import (
    is_in_memory,
    memory_copy_mode,
    pipeline_dataset,
    single_process,
)
from kedro_prefect.cache.hits import is_skipped
from kedro_prefect.errors import KedroPrefectError, WorkerDatasetError
from kedro_prefect.execution.versions import RunVersions
from kedro_prefect.workers.hook_state import merge_from_worker
from kedro_prefect.workers.session import run_session

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline
    from kedro.pipeline.node import Node
    from pluggy import PluginManager
    from prefect.futures import PrefectFuture

    from kedro_prefect.execution.protocol import SavedEvents


def validate_datasets(
    pipeline: Pipeline,
    catalog: CatalogProtocol,
    backend: str,
    error: type[KedroPrefectError] = WorkerDatasetError,
) -> None:
    """Refuse datasets that cannot be used across processes, naming each one and why.

    In-memory datasets are fine: their data travels as task results. Every other dataset is
    pickled to the workers that load or save it.

    Raises:
        WorkerDatasetError: Some dataset has ``_SINGLE_PROCESS = True`` or cannot be pickled
            (``error``: the backend's own subclass of it).
    """
    import cloudpickle

    problems = []
    for name in sorted(pipeline.datasets()):
        dataset = catalog.get(name, fallback_to_runtime_pattern=True)
        if is_in_memory(dataset):
            continue
        kind = type(dataset).__name__
        if single_process(dataset):
            problems.append(f"{name} ({kind}): _SINGLE_PROCESS = True (one process only)")
            continue
        try:
            cloudpickle.dumps(dataset)
        except Exception as exc:
            problems.append(f"{name} ({kind}): cannot be pickled to the workers: {exc}")
    if problems:
        raise error(
            f"These datasets cannot be used with task_runner={backend} (nodes run in other "
            "processes); no node has run:\n  " + "\n  ".join(problems)
        )


class TransferNodeExecution:  # implements execution.protocol.NodeExecution
    """Node tasks in other processes: in-memory outputs are task results, passed to consumers.

    ``task_fn`` is the task body (:func:`~kedro_prefect.workers.bootstrap.run_node_on_worker` or a
    backend's wrapper of it, taking ``extra_parameters`` too). ``release(future)`` lets the task
    runner forget a node's outputs once its last consumer has
    finished (the counterpart of Kedro releasing a ``MemoryDataset``).
    """

    shares_catalog = False

    def __init__(
        self,
        task_fn: Callable[..., Any],
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        is_async: bool,
        run_id: str | None,
        events: SavedEvents | None,
        project: tuple[str | None, str | None],
        release: Callable[[PrefectFuture[Any]], None] | None = None,
        extra_parameters: dict[str, Any] | None = None,
        group_fn: Callable[..., Any] | None = None,
        hook_manager: PluginManager | None = None,
    ):
        self.task_fn = task_fn
        #: The body of a group's task (``group_by``), taking :meth:`submit_group_arguments`.
        self.group_fn = group_fn
        self._catalog = catalog
        self._is_async = is_async
        self._run_id = run_id
        self._events = events
        self._project = project
        self._release = release
        self._extra_parameters = extra_parameters or {}
        # Versioned datasets go to the workers as copies with this run's versions pinned,
        # never with a load version the driver's object cached earlier (skip_unchanged
        # fingerprints these same versions).
        self.versions = RunVersions(catalog)
        # The run's session, for the project's hooks on the workers (workers.session), and the
        # driver's hooks, which get what their copies on the workers gathered (hook_state).
        self._hook_manager = hook_manager
        self._session = run_session(run_id, project[0], hook_manager)
        self._merged: set[int] = set()  # the tasks whose hook state was merged (a group's once)
        self._memory: dict[str, Any] = {}
        self._datasets: dict[str, Any] = {}
        for name in pipeline.datasets():
            dataset = catalog.get(name, fallback_to_runtime_pattern=True)
            if is_in_memory(dataset):
                self._memory[name] = memory_copy_mode(dataset)
            else:
                self._datasets[name] = dataset
        self._producer = {out: node for node in pipeline.nodes for out in node.outputs}
        self._readers: dict[str, list[Node]] = defaultdict(list)
        for node in pipeline.nodes:
            for name in node.inputs:
                self._readers[name].append(node)
        self._group_of: dict[Node, tuple[Node, ...]] = {}  # group_by: each grouped node's group
        self._free_outputs = pipeline.outputs() & set(self._memory)
        # How many consumers of a node's in-memory outputs have not finished yet.
        self._pending_consumers: dict[Node, int] = defaultdict(int)
        self._upstream: dict[Node, set[Node]] = {}
        for node in pipeline.nodes:
            producers = {
                self._producer[name]
                for name in node.inputs
                if name in self._memory and name in self._producer
            }
            self._upstream[node] = producers
            for producer in producers:
                self._pending_consumers[producer] += 1

    def submit_arguments(
        self, node: Node, producers: set[Node], futures: dict[Node, PrefectFuture[Any]]
    ) -> dict[str, Any]:
        """Task parameters (the producers' in-memory outputs as futures) and ``wait_for``."""
        return {
            "parameters": self._parameters(node, futures),
            "wait_for": [futures[producer] for producer in producers],
        }

    def submit_group_arguments(
        self, nodes: tuple[Node, ...], producers: set[Node], futures: dict[Node, PrefectFuture[Any]]
    ) -> dict[str, Any]:
        """:meth:`submit_arguments` for a group (``group_by``): one task for its nodes
        (:func:`~kedro_prefect.workers.groups.run_group_on_worker`), whose result holds only the
        in-memory outputs read outside the group or returned by the run."""
        import cloudpickle

        inside = set(nodes)
        for node in nodes:
            self._group_of[node] = nodes
        used = list(dict.fromkeys(name for n in nodes for name in (*n.inputs, *n.outputs)))
        given = {
            name: pipeline_dataset(self._catalog, name).load()
            for name in used
            if name in self._memory and name not in self._producer
        }
        leaving = sorted(
            name
            for n in nodes
            for name in n.outputs
            if name in self._memory
            and (name in self._free_outputs or any(c not in inside for c in self._readers[name]))
        )
        produced = {name for n in nodes for name in n.outputs}
        loaded = {name for n in nodes for name in n.inputs if name not in produced}
        datasets = {
            name: self.versions.for_node(name, loads=name in loaded)
            for name in used
            if name in self._datasets
        }
        outside = {p for n in nodes for p in self._upstream[n] if p not in inside}
        wait_for = {id(futures[p]): futures[p] for p in producers}
        return {
            "parameters": {
                "payload": cloudpickle.dumps((tuple(nodes), datasets, given, leaving)),
                "upstream": {p.name: futures[p] for p in outside},
                "memory": {name: self._memory[name] for name in used if name in self._memory},
                "is_async": self._is_async,
                "run_id": self._run_id,
                "events": self._events,
                "project": self._project,
                "session": self._session,
                **self._extra_parameters,
            },
            "wait_for": list(wait_for.values()),
        }

    def _parameters(self, node: Node, futures: dict[Node, PrefectFuture[Any]]) -> dict[str, Any]:
        import cloudpickle

        # Loaded here without Kedro's "Loading data from ..." line: the node's Task on the
        # worker loads it again from a MemoryDataset, and logs it, as SequentialRunner would.
        given = {
            name: pipeline_dataset(self._catalog, name).load()
            for name in node.inputs
            if name in self._memory and name not in self._producer
        }
        datasets = {
            name: self.versions.for_node(name, loads=name in node.inputs)
            for name in (*node.inputs, *node.outputs)
            if name in self._datasets
        }
        return {
            "payload": cloudpickle.dumps((node, datasets, given)),
            "upstream": {p.name: futures[p] for p in self._upstream[node]},
            "memory": {
                name: self._memory[name]
                for name in (*node.inputs, *node.outputs)
                if name in self._memory
            },
            "is_async": self._is_async,
            "run_id": self._run_id,
            "events": self._events,
            "project": self._project,
            "session": self._session,
            **self._extra_parameters,
        }

    def node_completed(self, node: Node, futures: dict[Node, Any]) -> None:
        """Save free in-memory outputs in the driver catalog; release data no one needs.

        A node's in-memory outputs are kept until its last consumer has finished.
        """
        self._merge_hook_state(futures[node])
        free = [name for name in node.outputs if name in self._free_outputs]
        if free:
            outputs = futures[node].result().data
            for name in free:
                self._catalog.save(name, outputs[name])
        if self._release is None:
            return
        if not self._pending_consumers.get(node):
            self._release_outputs(node, futures)
        for producer in self._upstream[node]:
            self._pending_consumers[producer] -= 1
            if not self._pending_consumers[producer]:
                self._release_outputs(producer, futures)

    def _merge_hook_state(self, future: PrefectFuture[Any]) -> None:
        """Give the driver's hooks what their copies gathered on the worker for this task's
        nodes (once per task; nothing for a node skipped by ``skip_unchanged``)."""
        if id(future) in self._merged:
            return
        self._merged.add(id(future))
        state = future.state
        # A group that failed part-way: its task has no result (the run fails anyway).
        if state is None or not state.is_completed() or is_skipped(state):
            return
        returned = getattr(self._returned(future), "hook_state", None)
        merge_from_worker(self._hook_manager, self._catalog, returned, self._run_id)

    def _returned(self, future: PrefectFuture[Any]) -> Any:
        """The task's result as the driver may read it (a process pool already sent it here;
        the Dask backend reads the data-less state instead)."""
        return future.result()

    def _release_outputs(self, node: Node, futures: dict[Node, Any]) -> None:
        """Release ``node``'s task result, unless it is a group's and another node of the group
        still has a consumer waiting."""
        group = self._group_of.get(node, ())
        if self._release is not None and not any(self._pending_consumers.get(n) for n in group):
            self._release(futures[node])

    def nodes_finished(self, futures: dict[Node, Any]) -> None:
        """Nothing to collect (a backend whose workers keep records overrides this)."""
