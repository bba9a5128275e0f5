"""The units of a run: ``group_by`` groups and groups on Prefect work pools (``infrastructure:``).

A key of ``infrastructure:`` names a group of nodes: the nodes of that top-level namespace, the
nodes tagged with it, and the nodes of the project's registered pipeline of that name. Each
mapped group becomes one unit of the run (``kind="pool"``), run as a child flow run on its
work pool (:mod:`kedro_prefect.workpools`); the other nodes are grouped by ``group_by`` as usual.

Data crosses the boundary of a mapped group only through persisted datasets: the child flow
run is another process, often on another machine. :func:`check_pool_crossings` refuses an
in-memory dataset going into or out of a mapped group, naming it, before anything runs.
Pipeline logic only (the project's pipeline registry is read for pipeline names): nothing here
runs a node or talks to Prefect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from kedro_prefect.errors import InfrastructureError
from kedro_prefect.execution.grouping import (
    Grouping,
    Unit,
    check_units,
    group_nodes,
    in_memory_datasets,
)

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline
    from kedro.pipeline.node import Node

    from kedro_prefect.config.infrastructure import InfrastructureConfig

#: ``Unit.kind`` of a group run on a work pool.
POOL = "pool"


def nodes_on_pools(
    pipeline: Pipeline,
    infrastructure: Mapping[str, InfrastructureConfig],
    registered: Mapping[str, set[str]] | None = None,
) -> dict[str, list[Node]]:
    """Group name -> its nodes (pipeline order), for the keys of ``infrastructure`` with nodes.

    A node belongs to key ``k`` if its top-level namespace is ``k``, it has the tag ``k``, or
    it is a node of the project's registered pipeline ``k`` (``registered``: pipeline name ->
    node names, :func:`registered_pipelines`).

    Raises:
        InfrastructureError: A node belongs to two mapped groups.
    """
    found: dict[str, list[Node]] = {}
    owner: dict[str, str] = {}
    for node in pipeline.nodes:  # topological order
        top = node.namespace.split(".")[0] if node.namespace else None
        keys = [
            key
            for key in infrastructure
            if key == top or key in node.tags or node.name in (registered or {}).get(key, ())
        ]
        if len(keys) > 1:
            raise InfrastructureError(
                f"infrastructure: node {node.name!r} belongs to two groups, {keys[0]!r} and "
                f"{keys[1]!r} (a namespace, a tag or a pipeline each); map only one of them, or "
                "untag the node. No node has run."
            )
        if keys:
            found.setdefault(keys[0], []).append(node)
            owner[node.name] = keys[0]
    return found


def registered_pipelines(names: Iterable[str]) -> dict[str, set[str]]:
    """Node names of the project's registered pipelines among ``names`` (none outside a
    project, or if the registry cannot be read)."""
    try:
        from kedro.framework.project import pipelines

        return {
            name: {n.name for n in pipelines[name].nodes} for name in names if name in pipelines
        }
    except Exception:  # no project configured, or a registry that fails to import
        return {}


def with_pools(
    pipeline: Pipeline,
    infrastructure: Mapping[str, InfrastructureConfig],
    group_rest: Callable[[Pipeline], Grouping],
) -> Grouping:
    """The run's units: one per mapped group (``kind="pool"``), the rest by ``group_rest``."""
    from kedro.pipeline import Pipeline as KedroPipeline

    if not infrastructure:
        return group_rest(pipeline)
    pooled = nodes_on_pools(pipeline, infrastructure, registered_pipelines(infrastructure))
    if not pooled:
        return group_rest(pipeline)
    taken = {node for nodes in pooled.values() for node in nodes}
    rest = [node for node in pipeline.nodes if node not in taken]
    units = [Unit(name, tuple(nodes), POOL) for name, nodes in pooled.items()]
    if rest:
        units.extend(group_rest(KedroPipeline(rest)).units)
    order = {node: index for index, node in enumerate(pipeline.nodes)}
    grouping = Grouping(sorted(units, key=lambda unit: order[unit.nodes[0]]))
    grouping.pools = {name: infrastructure[name] for name in pooled}
    return grouping


def is_parameter(name: str) -> bool:
    """Parameters are read from ``conf/`` by the child's own session: they never cross."""
    return name == "parameters" or name.startswith("params:")


def check_pool_crossings(
    pipeline: Pipeline, grouping: Grouping, in_memory: Callable[[str], bool]
) -> None:
    """Refuse in-memory data going into or out of a group run on a work pool.

    Raises:
        InfrastructureError: One line naming each such dataset, its producer and consumer, and
            the fix (a catalog entry), before any node runs.
    """
    if not grouping.pools:
        return
    producer = {out: node for node in pipeline.nodes for out in node.outputs}
    crossing: dict[str, dict[str, str]] = {}  # group -> dataset -> "producer -> consumer"
    for node in pipeline.nodes:
        for name in node.inputs:
            if is_parameter(name) or not in_memory(name):
                continue
            source = producer.get(name)
            target_unit = grouping.unit_of[node]
            source_unit = grouping.unit_of[source] if source else None
            if source_unit is target_unit:
                continue
            for unit in (source_unit, target_unit):
                if unit is not None and unit.kind == POOL:
                    origin = source.name if source else "the run's inputs"
                    crossing.setdefault(unit.name, {}).setdefault(name, f"{origin} -> {node.name}")
    if crossing:
        described = "; ".join(
            f"group {group!r} (work pool {grouping.pools[group].work_pool!r}): "
            + ", ".join(f"{name} ({path})" for name, path in datasets.items())
            for group, datasets in crossing.items()
        )
        names = sorted({name for datasets in crossing.values() for name in datasets})
        raise InfrastructureError(
            "infrastructure: in-memory datasets cannot cross into or out of a group run on a "
            f"work pool (another process, often another machine): {described}. Declare "
            f"{', '.join(names)} in conf/<env>/catalog.yml as persisted datasets (e.g. "
            "pickle.PickleDataset), or change the mapping. No node has run."
        )


def pool_groups(grouping: Grouping | None) -> dict[str, Any]:
    """Group name -> where it runs (its ``InfrastructureConfig``), for the run's mapped groups."""
    return dict(grouping.pools) if grouping else {}


def pool_places(grouping: Grouping | None) -> dict[str, str]:
    """Node name -> ``work pool '<name>'``, for the nodes of groups on work pools."""
    if grouping is None:
        return {}
    return {
        node.name: f"work pool {grouping.pools[unit.name].work_pool!r}"
        for unit in grouping.units
        if unit.name in grouping.pools
        for node in unit.nodes
    }


def plan_units(
    pipeline: Pipeline,
    group_by: str,
    in_memory: Callable[[str], bool],
    infrastructure: Mapping[str, InfrastructureConfig],
    resources: Callable[[Node], Any] | None = None,
) -> Grouping:
    """The checked units of a run (``kedro run`` and ``kedro prefect check`` alike).

    Raises:
        NodeGroupingError: A cycle between units, or a group mixing Dask resources.
        InfrastructureError: A node in two mapped groups, or in-memory data crossing into or
            out of a group on a work pool.
    """
    grouping = with_pools(
        pipeline, infrastructure, lambda rest: group_nodes(rest, group_by, in_memory)
    )
    check_units(pipeline, grouping, resources)
    check_pool_crossings(pipeline, grouping, in_memory)
    return grouping


def run_grouping(
    pipeline: Pipeline,
    catalog: CatalogProtocol,
    group_by: str,
    task_options: dict[str, Any],
    resources: Callable[[Node], Any] | None = None,
    infrastructure: Mapping[str, Any] | None = None,
) -> tuple[Grouping, dict[str, Any]]:
    """The checked grouping of a run, and the task options of each group (by group name).

    ``infrastructure`` (prefect.yml's ``infrastructure:``, merged with the runner option) maps
    groups of nodes to work pools: each becomes one unit of ``kind="pool"``
    ; the other nodes are grouped by ``group_by``.

    Raises:
        NodeGroupingError: The grouping cannot run (:func:`check_units`), or the task options of
            a group's nodes conflict (:func:`~.task_options.group_task_options`).
        InfrastructureError: In-memory data would cross into or out of a group on a work pool.
    """
    from kedro_prefect.execution.task_options import group_task_options

    grouping = plan_units(
        pipeline, group_by, in_memory_datasets(catalog), infrastructure or {}, resources
    )
    options = {
        unit.name: group_task_options(unit.name, list(unit.nodes), task_options)
        for unit in grouping.units
        if unit.is_group
    }
    return grouping, options
