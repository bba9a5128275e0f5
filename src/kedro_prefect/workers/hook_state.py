"""Hook state that must cross between the driver and the worker processes of a run.

A hook object lives once per process. Kedro calls ``before_pipeline_run`` and
``after_pipeline_run`` on the driver's object, and the node and dataset hooks on the object of
the process where the node runs (a worker, for ``process`` and ``dask``). A hook that decides
something in ``before_pipeline_run`` and uses it in ``before_node_run`` (kedro-mlflow: whether
tracking is on for this pipeline), or that gathers something in ``after_dataset_saved`` and
writes it in ``after_pipeline_run`` (kedro-viz: the datasets' statistics), would lose it between
the two. A hook carries its state across by implementing any of these methods (all optional):

* ``state_for_workers(self)`` (driver, once per run, after ``before_pipeline_run``): what the
  workers' copy of the hook needs, picklable (``None``: nothing);
* ``use_driver_state(self, state)`` (worker, before each node of that run): take it;
* ``state_for_driver(self, nodes)`` (worker, after the nodes of one task ran): what the hook
  gathered for those nodes, picklable (``None``: nothing); forget it there;
* ``merge_worker_state(self, state)`` (driver, as each task completes, so before
  ``after_pipeline_run``): merge it.

Datasets keep state too: a kedro-mlflow model dataset remembers the URI of the model it saved,
and a node loading that dataset later needs it. A node in another process gets its own copy of
the dataset, so what a worker's copy keeps after saving comes back with the task's result and
is set on the driver's dataset before any consumer of it is submitted (an adapter of
``kedro_prefect._upstream`` says what: ``saved_state_adapter``).

The state travels with the run's session (to the workers) and with the task's result (back):
nothing is sent when no hook has state to carry. A node skipped by ``skip_unchanged`` brings
nothing back (it fired no hook). Hooks of plugins that cannot implement these are carried by an
adapter of ``kedro_prefect._upstream`` (kedro-viz's ``DatasetStatsHook``, kedro-mlflow's
``MlflowHook``). A hook is matched between the processes by its class and its rank among the
hooks of that class: the driver and the workers build the hook manager from the same settings
and plugins.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline.node import Node
    from pluggy import PluginManager

#: The methods a hook implements to carry its state (see the module's docstring).
METHODS = ("state_for_workers", "use_driver_state", "state_for_driver", "merge_worker_state")


class HookStateCarrier(Protocol):
    """A hook's state between the driver and the workers (the hook itself, or an adapter)."""

    def state_for_workers(self) -> Any: ...

    def use_driver_state(self, state: Any) -> None: ...

    def state_for_driver(self, nodes: Sequence[Node]) -> Any: ...

    def merge_worker_state(self, state: Any) -> None: ...


class _OwnMethods:
    """A hook implementing some of :data:`METHODS` itself; the others do nothing."""

    def __init__(self, hook: Any):
        self._hook = hook

    def state_for_workers(self) -> Any:
        method = getattr(self._hook, "state_for_workers", None)
        return method() if method else None

    def use_driver_state(self, state: Any) -> None:
        method = getattr(self._hook, "use_driver_state", None)
        if method:
            method(state)

    def state_for_driver(self, nodes: Sequence[Node]) -> Any:
        method = getattr(self._hook, "state_for_driver", None)
        return method(nodes) if method else None

    def merge_worker_state(self, state: Any) -> None:
        method = getattr(self._hook, "merge_worker_state", None)
        if method:
            method(state)


def _carrier(hook: Any) -> HookStateCarrier | None:
    if any(callable(getattr(hook, name, None)) for name in METHODS):
        return _OwnMethods(hook)
    from kedro_prefect._upstream import kedro_viz, mlflow

    for adapter in (kedro_viz.hook_state_adapter, mlflow.hook_state_adapter):
        carrier = adapter(hook)
        if carrier is not None:
            return carrier
    return None


def carriers(hook_manager: PluginManager | None) -> Iterator[tuple[str, HookStateCarrier]]:
    """Each hook of ``hook_manager`` with state to carry, by a key that names the same hook in
    the driver and on the workers (its class, and its rank among the hooks of that class)."""
    if hook_manager is None or not hasattr(hook_manager, "list_name_plugin"):
        return
    seen: Counter[str] = Counter()
    for _, hook in hook_manager.list_name_plugin():
        if hook is None:  # blocked (DISABLE_HOOKS_FOR_PLUGINS)
            continue
        kind = type(hook)
        name = f"{kind.__module__}.{kind.__qualname__}"
        rank = seen[name]
        seen[name] += 1
        carrier = _carrier(hook)
        if carrier is not None:
            yield f"{name}#{rank}", carrier


# --- the driver --------------------------------------------------------------------------------


def for_workers(hook_manager: PluginManager | None) -> dict[str, Any]:
    """What the driver's hooks pass to the workers' copies for this run (after
    ``before_pipeline_run``)."""
    states = {}
    for key, carrier in carriers(hook_manager):
        state = carrier.state_for_workers()
        if state is not None:
            states[key] = state
    return states


def merge_from_worker(
    hook_manager: PluginManager | None, catalog: CatalogProtocol, returned: Any, run_id: str | None
) -> None:
    """Merge what one task's nodes gathered on a worker into the driver's hooks, and what its
    datasets kept after saving into the driver's datasets (``returned``: the task result's
    ``hook_state``, ``(run id, hook states by key, dataset states by name)``)."""
    if not returned:
        return
    returned_run, states, saved = returned
    if returned_run != run_id:  # a cached result of an earlier run (skip_unchanged)
        return
    for key, carrier in carriers(hook_manager):
        if key in states:
            carrier.merge_worker_state(states[key])
    if saved:
        from kedro_prefect._upstream.mlflow import saved_state_adapter

        for name, state in saved.items():
            adapter = saved_state_adapter(catalog.get(name, fallback_to_runtime_pattern=True))
            if adapter is not None:
                adapter.use(state)


# --- a worker ----------------------------------------------------------------------------------


def use_driver_states(hook_manager: PluginManager | None, states: dict[str, Any] | None) -> None:
    """Give the worker's hooks what the driver's passed for this run (before each node: a
    worker process may run nodes of several runs)."""
    if not states:
        return
    for key, carrier in carriers(hook_manager):
        if key in states:
            carrier.use_driver_state(states[key])


def for_driver(
    hook_manager: PluginManager | None,
    catalog: CatalogProtocol,
    nodes: Sequence[Node],
    run_id: str | None,
) -> tuple[str | None, dict[str, Any], dict[str, Any]] | None:
    """What the worker's hooks gathered for ``nodes`` and what the datasets they saved kept,
    for the task's result (``None``: nothing)."""
    from kedro_prefect._upstream.mlflow import saved_state_adapter

    states = {}
    for key, carrier in carriers(hook_manager):
        state = carrier.state_for_driver(nodes)
        if state is not None:
            states[key] = state
    saved = {}
    for name in dict.fromkeys(name for node in nodes for name in node.outputs):
        adapter = saved_state_adapter(catalog.get(name)) if name in catalog else None
        state = adapter.state() if adapter is not None else None
        if state is not None:
            saved[name] = state
    return (run_id, states, saved) if states or saved else None
