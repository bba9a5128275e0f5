"""The pipeline as a graph a person looks at: nodes, datasets, namespaces and each node's outcome.

:func:`build_graph` turns a Kedro pipeline (and, once the run is over, each node's final state
and duration) into a :class:`Graph`; :func:`mermaid_flowchart` writes it as Mermaid (drawn by
Prefect's V2 UI, and copied into docs), :mod:`.graph_svg` draws it as an SVG picture (shown by
every Prefect UI, which all render markdown images).

Large pipelines stay legible: when more than :data:`MAX_DRAWN_NODES` nodes would be drawn,
namespaces are collapsed into one box each, deepest level first, until at most that many boxes
remain (or only top-level namespaces are left to collapse). The graph says which it collapsed.
Past :data:`MAX_PICTURE_ITEMS` boxes even so, the artifact says so instead of drawing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kedro.pipeline import Pipeline

#: Node boxes drawn before namespaces are collapsed (a collapsed namespace is one box).
MAX_DRAWN_NODES = 60
#: Boxes (nodes, datasets, collapsed namespaces) beyond which no picture is drawn: a pipeline
#: of hundreds of nodes without namespaces to collapse is not legible as one picture (and its
#: Mermaid is past what Mermaid draws by default, 500 edges).
MAX_PICTURE_ITEMS = 300

#: state key -> (legend label, fill, stroke). Order: the legend's, and "worst first" for the
#: colour of a collapsed namespace (failed before cancelled before not run...).
STATES: dict[str, tuple[str, str, str]] = {
    "failed": ("failed", "#ffc9c9", "#c92a2a"),
    "cancelled": ("cancelled", "#ffe8cc", "#d9480f"),
    "running": ("running", "#e5dbff", "#6741d9"),
    "not_run": ("not run", "#f1f3f5", "#868e96"),
    "pending": ("not started", "#ffffff", "#495057"),
    "skipped": ("skipped (unchanged)", "#d0ebff", "#1971c2"),
    "completed": ("completed", "#d3f9d8", "#2b8a3e"),
}

LEGEND_ORDER = ("completed", "failed", "cancelled", "not_run", "skipped", "running", "pending")


def state_key(name: str | None, state_type: str | None = None) -> str:
    """A key of :data:`STATES` for a Prefect state's name (and type), or a node never run.

    ``Cached`` and ``Skipped`` (nodes whose outputs were reused) are "skipped"; ``Crashed`` and
    ``TimedOut`` are failures; ``Cancelling`` is cancelled.
    """
    text = (name or "").strip().lower().replace(" ", "_")
    kind = (state_type or "").lower()
    if text in ("cached", "skipped") or text.startswith("skipped_"):  # skipped_(unchanged)
        return "skipped"
    if text == "not_run":
        return "not_run"
    if text in STATES:
        return text
    if kind in ("failed", "crashed") or text in ("crashed", "timedout", "timed_out"):
        return "failed"
    if kind in ("cancelled", "cancelling") or text == "cancelling":
        return "cancelled"
    if kind == "completed":
        return "completed"
    if kind in ("running", "pending", "scheduled", "paused"):
        return "running"
    return "pending"


@dataclass
class Item:
    """One box of the drawing: a node, a dataset, or a collapsed namespace."""

    id: str
    name: str
    kind: str  # "node", "dataset" or "namespace" (collapsed)
    group: str  # the namespace box it is drawn in ("" for none)
    state: str = "pending"
    seconds: float | None = None
    persisted: bool = False
    counts: dict[str, int] = field(default_factory=dict)  # collapsed: nodes per state

    @property
    def label(self) -> str:
        """The name, without the namespace of the box it is drawn in."""
        if self.group and self.name.startswith(self.group + "."):
            return self.name[len(self.group) + 1 :]
        return self.name

    @property
    def status(self) -> str:
        """``failed · 0.72 s``, ``not run``, ``12 nodes: 11 completed, 1 failed``..."""
        if self.kind == "namespace":
            parts = [f"{n} {STATES[s][0]}" for s, n in _by_state_order(self.counts)]
            total = sum(self.counts.values())
            return f"{total} nodes: " + ", ".join(parts)
        if self.kind == "dataset":
            return "persisted" if self.persisted else "in memory"
        text = STATES[self.state][0]
        if self.seconds is not None:
            text += f" · {_duration(self.seconds)}"
        return text


@dataclass
class Graph:
    """What is drawn: items, edges between item ids, namespace boxes, what was collapsed."""

    title: str
    items: dict[str, Item]
    edges: list[tuple[str, str]]
    groups: list[str]  # namespace boxes drawn (not collapsed), parents before children
    collapsed: list[str]  # namespaces drawn as one box
    node_count: int
    dataset_count: int
    final: bool  # the run is over: states are final
    #: ``group_by``: group name -> ids of the drawn node items run in that group's task run.
    units: dict[str, list[str]] = field(default_factory=dict)

    def states_present(self) -> list[str]:
        """State keys of the drawn nodes, in the legend's order."""
        present = {i.state for i in self.items.values() if i.kind == "node"}
        for item in self.items.values():
            present.update(s for s, n in item.counts.items() if n)
        return [s for s in LEGEND_ORDER if s in present]


def build_graph(
    pipeline: Pipeline,
    title: str,
    states: dict[str, tuple[str, float | None]] | None = None,
    persisted: set[str] | None = None,
    max_nodes: int = MAX_DRAWN_NODES,
    groups: dict[str, str] | None = None,
) -> Graph:
    """The graph of ``pipeline``; ``states`` maps node names to (state key, seconds);
    ``groups`` maps the nodes run as part of a group (``group_by``) to its name."""
    states = states or {}
    persisted = persisted or set()
    node_groups = groups or {}
    datasets = pipeline_datasets(pipeline)
    node_ns = {n.name: n.namespace or "" for n in pipeline.nodes}
    namespaces = sorted({p for ns in node_ns.values() for p in _prefixes(ns)})
    collapsed = _collapse(list(node_ns.values()), namespaces, max_nodes)

    def owner(namespace: str) -> tuple[str, str | None]:
        """(group drawn in, collapsed namespace containing it or None)."""
        for prefix in _prefixes(namespace):
            if prefix in collapsed:
                return prefix.rpartition(".")[0], prefix
        return namespace, None

    items: dict[str, Item] = {}
    where: dict[str, str] = {}  # node name -> item id
    drawn_as: dict[str, str] = {}  # dataset name -> item id (a node may share its name)
    for i, ns in enumerate(collapsed):
        items[f"c{i}"] = Item(f"c{i}", ns, "namespace", ns.rpartition(".")[0])
    collapsed_ids = {item.name: item.id for item in items.values()}
    for i, each in enumerate(pipeline.nodes):
        state, seconds = states.get(each.name, ("pending", None))
        group, box = owner(node_ns[each.name])
        if box is not None:
            item = items[collapsed_ids[box]]
            item.counts[state] = item.counts.get(state, 0) + 1
            where[each.name] = item.id
            continue
        items[f"n{i}"] = Item(f"n{i}", each.name, "node", group, state, seconds)
        where[each.name] = f"n{i}"
    for item in items.values():
        if item.kind == "namespace":
            item.state = next((s for s, _ in _by_state_order(item.counts)), "pending")
    touching: dict[str, set[str]] = defaultdict(set)  # dataset -> item ids using it
    for each in pipeline.nodes:
        for name in (*each.inputs, *each.outputs):
            touching[name].add(where[each.name])
    for i, name in enumerate(datasets):
        namespace = max((ns for ns in _prefixes(name) if ns in namespaces), key=len, default="")
        group, box = owner(namespace)
        inside = touching[name] if len(touching[name]) == 1 else set()
        if box is not None or inside & set(collapsed_ids.values()):
            drawn_as[name] = collapsed_ids[box] if box is not None else inside.pop()
            continue
        items[f"d{i}"] = Item(f"d{i}", name, "dataset", group, persisted=name in persisted)
        drawn_as[name] = f"d{i}"

    edges: dict[tuple[str, str], None] = {}  # ordered set
    for each in pipeline.nodes:
        node_id = where[each.name]
        for name in each.inputs:
            if name in drawn_as and drawn_as[name] != node_id:
                edges[(drawn_as[name], node_id)] = None
        for name in each.outputs:
            if drawn_as[name] != node_id:
                edges[(node_id, drawn_as[name])] = None
    drawn = {item.group for item in items.values()}
    boxes = sorted({p for g in drawn for p in _prefixes(g)})
    return Graph(
        title=title,
        items=items,
        edges=list(edges),
        groups=boxes,
        collapsed=collapsed,
        node_count=len(pipeline.nodes),
        dataset_count=len(datasets),
        final=bool(states),
        units=_unit_items(pipeline, node_groups, where),
    )


def _unit_items(
    pipeline: Pipeline, groups: dict[str, str], where: dict[str, str]
) -> dict[str, list[str]]:
    """Group name -> the node items drawn for it (nodes in a collapsed namespace are not)."""
    units: dict[str, list[str]] = defaultdict(list)
    for each in pipeline.nodes:
        group = groups.get(each.name)
        if group and where[each.name].startswith("n"):
            units[group].append(where[each.name])
    return dict(units)


def _collapse(node_namespaces: list[str], namespaces: list[str], max_nodes: int) -> list[str]:
    """Namespaces to draw as one box: deepest level first, until few enough boxes remain."""
    collapsed: set[str] = set()

    def boxes() -> int:
        seen: set[str] = set()
        count = 0
        for ns in node_namespaces:
            box = next((p for p in _prefixes(ns) if p in collapsed), None)
            if box is None:
                count += 1
            elif box not in seen:
                seen.add(box)
                count += 1
        return count

    size = {ns: sum(1 for n in node_namespaces if ns in _prefixes(n)) for ns in namespaces}
    depth = max((ns.count(".") + 1 for ns in namespaces), default=0)
    while boxes() > max_nodes and depth > 0:
        level = [ns for ns in namespaces if ns.count(".") + 1 == depth and size[ns] > 1]
        collapsed = {c for c in collapsed if c.count(".") + 1 < depth} | set(level)
        depth -= 1
    return sorted(collapsed)


def mermaid_flowchart(graph: Graph) -> list[str]:
    """The lines of a Mermaid ``flowchart LR`` of ``graph``, nodes coloured by state."""
    members: dict[str, list[str]] = defaultdict(list)
    for item in graph.items.values():
        members[item.group].append(_mermaid_item(item, graph.final))
    tree: dict[str, list[str]] = defaultdict(list)
    for group in graph.groups:
        tree[group.rpartition(".")[0]].append(group)
    subgraph_ids: dict[str, str] = {}

    def emit(group: str, depth: int) -> list[str]:
        pad = "    " * depth
        out = [pad + line for line in members.get(group, [])]
        for child in tree.get(group, []):
            subgraph_ids[child] = f"ns{len(subgraph_ids)}"
            label = _label(child.rpartition(".")[2])
            out.append(f'{pad}subgraph {subgraph_ids[child]}["{label}"]')
            out.extend(emit(child, depth + 1))
            out.append(f"{pad}end")
        return out

    lines = ["flowchart LR", *emit("", 1)]
    lines += [f"    {a} --> {b}" for a, b in graph.edges]
    lines.append("    classDef dataset fill:#e7f5ff,stroke:#1971c2")
    lines.append("    classDef memory fill:#ffffff,stroke:#74c0fc,stroke-dasharray:4 3")
    for key, (_, fill, stroke) in STATES.items():
        lines.append(f"    classDef {key} fill:{fill},stroke:{stroke},color:#212529")
    classes: dict[str, list[str]] = defaultdict(list)
    for item in graph.items.values():
        if item.kind == "dataset":
            classes["dataset" if item.persisted else "memory"].append(item.id)
        else:
            classes[item.state].append(item.id)
    lines += [f"    class {','.join(ids)} {name}" for name, ids in classes.items()]
    return lines


def _mermaid_item(item: Item, final: bool) -> str:
    if item.kind == "dataset":
        return f'{item.id}[("{_label(item.name)}")]'
    if item.kind == "namespace":
        return f'{item.id}[["{_label(item.name)}<br/>{_label(item.status)}"]]'
    if final:
        return f'{item.id}("{_label(item.name)}<br/>{_label(item.status)}")'
    return f'{item.id}("{_label(item.name)}")'


def pipeline_datasets(pipeline: Pipeline) -> list[str]:
    """Datasets of the pipeline in a stable order, without parameters."""
    return sorted(
        name
        for name in pipeline.datasets()
        if name != "parameters" and not name.startswith("params:")
    )


def _by_state_order(counts: dict[str, int]) -> list[tuple[str, int]]:
    return [(s, counts[s]) for s in STATES if counts.get(s)]


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 600:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def _prefixes(name: str | None) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b", "a.b.c"]``."""
    if not name:
        return []
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _label(text: str) -> str:
    """Text safe inside a quoted Mermaid label."""
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def describe(graph: Graph) -> str:
    """One sentence on what was collapsed, or ``""``."""
    if not graph.collapsed:
        return ""
    names = ", ".join(f"`{ns}`" for ns in graph.collapsed[:8])
    more = f" and {len(graph.collapsed) - 8} more" if len(graph.collapsed) > 8 else ""
    return (
        f"{graph.node_count} nodes are too many to draw one by one: namespaces {names}{more} "
        "are drawn as one box each (their nodes are counted by state); the node table "
        "artifact lists every node."
    )
