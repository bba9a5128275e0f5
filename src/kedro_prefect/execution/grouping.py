"""Grouping nodes into units of work (runner option ``group_by``), and checking a grouping.

A unit is what the scheduling loop submits as one Prefect task run: a single node, or a group
of nodes that run one after the other, in dependency order, in the same task run.

* ``none``: every node is a unit of one (the default);
* ``namespace``: Kedro's own ``Pipeline.group_nodes_by("namespace")`` (top-level namespace);
  nodes without a namespace stay single;
* ``memory``: maximal chains of nodes linked through in-memory datasets, where the producer's
  only consumer node is the next node and that node's only producer is the previous one.
  Such a chain runs in the same order whichever way it is split, so grouping it never creates
  a cycle between units and never delays a node that could have run in parallel. Fan-outs and
  fan-ins of in-memory data stay separate units (their branches keep running in parallel).

:func:`check_units` refuses a grouping that cannot run: a cycle between groups (possible with
``namespace``), or a group whose nodes ask for different Dask worker resources.
Pure pipeline logic: nothing here runs a node or talks to Prefect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import TYPE_CHECKING, Any

from kedro_prefect._upstream.kedro import is_in_memory
from kedro_prefect.errors import NodeGroupingError

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline
    from kedro.pipeline.node import Node

#: Values of the ``group_by`` runner option.
GROUP_BY = ("none", "namespace", "memory")


@dataclass(frozen=True)
class Unit:
    """Nodes submitted as one Prefect task run, in the order they run."""

    name: str
    nodes: tuple[Node, ...]
    #: ``namespace``, ``memory`` or ``node`` (a unit of one).
    kind: str = "node"

    @property
    def is_group(self) -> bool:
        return len(self.nodes) > 1 or self.kind != "node"


@dataclass
class Grouping:
    """The units of a pipeline, and which unit each node belongs to."""

    units: list[Unit]
    unit_of: dict[Node, Unit] = field(default_factory=dict)
    #: Groups run on a work pool (``infrastructure:``): group name -> ``InfrastructureConfig``.
    pools: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.unit_of = {node: unit for unit in self.units for node in unit.nodes}

    def group_of(self, node: Node) -> str | None:
        """The name of ``node``'s group; ``None`` for a node that is its own unit."""
        unit = self.unit_of[node]
        return unit.name if unit.is_group else None

    def dependencies(self, pipeline: Pipeline) -> dict[Unit, set[Unit]]:
        """The units each unit waits for."""
        parents = pipeline.node_dependencies
        return {
            unit: {self.unit_of[p] for n in unit.nodes for p in parents[n]} - {unit}
            for unit in self.units
        }

    def crossings(self, pipeline: Pipeline) -> dict[tuple[str, str], list[str]]:
        """Datasets passed from one unit to another: ``(producer unit, consumer unit) -> names``."""
        producer = {out: node for node in pipeline.nodes for out in node.outputs}
        crossing: dict[tuple[str, str], set[str]] = {}
        for node in pipeline.nodes:
            for name in node.inputs:
                if name not in producer:
                    continue
                source, target = self.unit_of[producer[name]], self.unit_of[node]
                if source is not target:
                    crossing.setdefault((source.name, target.name), set()).add(name)
        return {key: sorted(names) for key, names in sorted(crossing.items())}


def group_nodes(
    pipeline: Pipeline, group_by: str, in_memory: Callable[[str], bool] | None = None
) -> Grouping:
    """The units of ``pipeline`` for ``group_by``; ``in_memory(dataset)`` for ``memory``.

    Raises:
        NodeGroupingError: ``group_by`` is not one of :data:`GROUP_BY`.
    """
    if group_by == "none":
        return Grouping([Unit(node.name, (node,)) for node in pipeline.nodes])
    if group_by == "namespace":
        return _by_namespace(pipeline)
    if group_by == "memory":
        return _by_memory(pipeline, in_memory or (lambda name: True))
    raise NodeGroupingError(f"group_by={group_by!r}: use one of {', '.join(GROUP_BY)}")


def _by_namespace(pipeline: Pipeline) -> Grouping:
    by_name = {node.name: node for node in pipeline.nodes}
    order = {node: index for index, node in enumerate(pipeline.nodes)}  # topological
    units = []
    for group in pipeline.group_nodes_by("namespace"):
        nodes = sorted((by_name[name] for name in group.nodes), key=order.__getitem__)
        # A node without namespace named like a namespace lands in its group: keep it single.
        single = [node for node in nodes if not node.namespace]
        grouped = tuple(node for node in nodes if node.namespace)
        if grouped:
            units.append(Unit(group.name, grouped, "namespace"))
        units.extend(Unit(node.name, (node,)) for node in single)
    return Grouping(_in_pipeline_order(units, order))


def _by_memory(pipeline: Pipeline, in_memory: Callable[[str], bool]) -> Grouping:
    parents = pipeline.node_dependencies
    children: dict[Node, set[Node]] = {node: set() for node in pipeline.nodes}
    for node, node_parents in parents.items():
        for parent in node_parents:
            children[parent].add(node)

    def linked(parent: Node, child: Node) -> bool:
        """``child`` continues ``parent``'s chain: its only child, its only parent, in memory."""
        return (
            children[parent] == {child}
            and parents[child] == {parent}
            and any(in_memory(name) for name in set(parent.outputs) & set(child.inputs))
        )

    units = []
    for node in pipeline.nodes:  # topological: a chain is met at its first node
        if len(parents[node]) == 1 and linked(next(iter(parents[node])), node):
            continue  # inside a chain started earlier
        chain = [node]
        while len(children[chain[-1]]) == 1 and linked(chain[-1], next(iter(children[chain[-1]]))):
            chain.append(next(iter(children[chain[-1]])))
        if len(chain) == 1:
            units.append(Unit(node.name, (node,)))
        else:
            units.append(Unit(_chain_name(chain), tuple(chain), "memory"))
    order = {node: index for index, node in enumerate(pipeline.nodes)}
    return Grouping(_in_pipeline_order(units, order))


def _chain_name(chain: list[Node]) -> str:
    """``first..last``; ``ns.first..last`` when both are in namespace ``ns``."""
    first, last = chain[0].name, chain[-1].name
    if chain[0].namespace and chain[0].namespace == chain[-1].namespace:
        last = last.removeprefix(f"{chain[0].namespace}.")
    return f"{first}..{last}"


def _in_pipeline_order(units: list[Unit], order: dict[Node, int]) -> list[Unit]:
    return sorted(units, key=lambda unit: order[unit.nodes[0]])


def check_units(
    pipeline: Pipeline, grouping: Grouping, resources: Callable[[Node], Any] | None = None
) -> None:
    """Refuse a grouping that cannot run, with one line naming the group and the nodes.

    ``resources(node)`` gives what a node asks of the worker running it (the Dask resource
    tags); a group's nodes must all ask the same.

    Raises:
        NodeGroupingError: A cycle between groups, or a group with nodes asking for different
            worker resources.
    """
    for unit in grouping.units:
        if resources is None or not unit.is_group or unit.name in grouping.pools:
            continue  # a group on a work pool: its own run places its nodes
        asked = {node.name: resources(node) for node in unit.nodes}
        if len({repr(sorted(value)) for value in asked.values()}) > 1:
            described = ", ".join(
                f"{name} ({', '.join(sorted(value)) or 'none'})" for name, value in asked.items()
            )
            raise NodeGroupingError(
                f"group {unit.name!r} mixes nodes asking for different Dask worker resources: "
                f"{described}; give them the same dask-* tags or set group_by=none. "
                "No node has run."
            )
    dependencies = grouping.dependencies(pipeline)
    try:
        TopologicalSorter(
            {unit.name: {d.name for d in deps} for unit, deps in dependencies.items()}
        ).prepare()
    except CycleError as exc:
        names = exc.args[1]
        unit = next(u for u in grouping.units if u.name == names[0])
        path = _path_back(pipeline, grouping, unit)
        raise NodeGroupingError(
            f"group {unit.name!r} cannot run as one unit: its nodes depend on each other through "
            f"nodes of other groups ({' -> '.join(node.name for node in path)}), a cycle "
            f"between groups {' -> '.join(repr(n) for n in names)}; "
            + (
                "map these nodes to one work pool group in infrastructure:"
                if any(name in grouping.pools for name in names)
                else "move these nodes into one namespace or set group_by=none"
            )
            + ". No node has run."
        ) from None


def _path_back(pipeline: Pipeline, grouping: Grouping, unit: Unit) -> list[Node]:
    """A path of nodes leaving ``unit`` and coming back into it (it exists: there is a cycle)."""
    children: dict[Node, list[Node]] = {node: [] for node in pipeline.nodes}
    for node, node_parents in pipeline.node_dependencies.items():
        for parent in node_parents:
            children[parent].append(node)
    members = set(unit.nodes)
    for start in unit.nodes:
        seen: dict[Node, Node | None] = {}
        stack = [(child, start) for child in children[start] if child not in members]
        while stack:
            node, came_from = stack.pop()
            if node in seen:
                continue
            seen[node] = came_from
            for child in children[node]:
                if child in members:
                    path = [child, node]
                    while path[-1] is not start:
                        path.append(seen.get(path[-1]) or start)
                    return list(reversed(path))
                if child not in seen:
                    stack.append((child, node))
    return list(unit.nodes)


def group_of_nodes(grouping: Grouping | None) -> dict[str, str]:
    """Node name -> group name, for the nodes run as part of a group."""
    if grouping is None:
        return {}
    return {node.name: unit.name for unit in grouping.units if unit.is_group for node in unit.nodes}


def in_memory_datasets(catalog: CatalogProtocol) -> Callable[[str], bool]:
    """Whether a dataset of ``catalog`` is held in memory: the package's one answer
    (:func:`~kedro_prefect._upstream.kedro.is_in_memory`, as ``kedro prefect check`` asks it)."""

    def in_memory(name: str) -> bool:
        try:
            dataset = catalog.get(name, fallback_to_runtime_pattern=True)
        except Exception:  # not declared, no pattern: Kedro makes it a MemoryDataset
            return True
        return is_in_memory(dataset)

    return in_memory
