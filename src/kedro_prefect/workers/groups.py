"""A group of nodes (``group_by``) in a worker process: one task, its in-memory data kept inside.

The group's nodes run one after the other in one worker process (a Dask worker, or a process of
the ``process`` backend), through the same node execution as a single node
(:func:`kedro_prefect.execution.local.run_node`). The in-memory datasets produced and consumed
inside the group live in that process's catalog only: they are never pickled, never a task
result, never moved between processes. The task's result holds only the in-memory outputs that
leave the group (read by a node outside it, or returned by the run).
"""

from __future__ import annotations

from typing import Any

from kedro_prefect.execution.outputs import NodeData
from kedro_prefect.workers.bootstrap import (
    _add_source_dir,
    _check_project_source,
    _ensure_worker_logging,
    worker_hook_manager,
)
from kedro_prefect.workers.hook_state import for_driver
from kedro_prefect.workers.session import RunSession, enter_run, node_in_run


def run_group_on_worker(
    payload: bytes,
    upstream: dict[str, NodeData],
    memory: dict[str, Any],
    is_async: bool,
    run_id: str | None,
    events: Any = None,
    project: tuple[str | None, str | None] = (None, None),
    session: RunSession | None = None,
) -> NodeData:
    """The body of a group's task in a worker process; returns the in-memory outputs leaving it.

    Args:
        payload: ``cloudpickle`` of ``(nodes, datasets, given, leaving)``: the group's nodes in
            dependency order, the persisted datasets they use, their in-memory inputs no node
            produces, and the names of the in-memory outputs that leave the group.
        upstream: Producer node name (outside the group) -> its task's in-memory outputs.
        memory: Copy mode (or ``None``) of each in-memory dataset the group's nodes use.
        is_async, run_id, events, project, session: as for
            :func:`~kedro_prefect.workers.bootstrap.run_node_on_worker`.
    """
    import cloudpickle
    from kedro.io import DataCatalog, MemoryDataset

    from kedro_prefect.execution.local import mark_failed_node, run_node

    package_name, source_dir = project
    _add_source_dir(source_dir)
    _ensure_worker_logging(package_name)
    nodes, datasets, given, leaving = cloudpickle.loads(payload)
    _check_project_source(package_name, source_dir)
    catalog = DataCatalog(dict(datasets))
    available = dict(given)
    for outputs in upstream.values():
        available.update(outputs.data)
    produced = {name for node in nodes for name in node.outputs}
    for name, copy_mode in memory.items():
        if name in produced:
            catalog[name] = MemoryDataset(copy_mode=copy_mode)
        else:
            catalog[name] = MemoryDataset(data=available[name], copy_mode=copy_mode)
    hook_manager = worker_hook_manager(package_name)
    enter_run(session, hook_manager)
    for node in nodes:
        try:
            with node_in_run(session, hook_manager):
                run_node(node, catalog, hook_manager, is_async, run_id, events=events)
        except Exception as exc:
            mark_failed_node(exc, node.name)
            raise
    return NodeData(
        {name: catalog[name].load() for name in leaving},
        for_driver(hook_manager, catalog, nodes, run_id),
    )
