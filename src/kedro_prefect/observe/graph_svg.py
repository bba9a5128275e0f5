"""Draw a :class:`~.graph.Graph` as a standalone SVG picture (no dependency, no fonts to load).

Every Prefect UI renders a markdown image, while only the V2 UI draws Mermaid; an SVG in a
``data:`` URI is the picture both show. The layout is layered, left to right, with the
namespaces as nested bands:

* each item's column is its longest path from the pipeline's inputs (datasets and nodes
  alternate), so every edge points right;
* each namespace box is a horizontal band holding its own items and, below them, the bands of
  its child namespaces, so boxes never overlap and a namespace reads as one block;
* within a band, a column's items are ordered by where their producers are, which keeps most
  edges short and uncrossed.

Text widths are estimated from Helvetica/Arial metrics (the SVG names only generic fonts, since
an image cannot load any), with room to spare; the full names are in each box's ``<title>``.
"""

from __future__ import annotations

from collections import defaultdict
from xml.sax.saxutils import escape

from kedro_prefect.observe.graph import STATES, Graph, Item

FONT = "Helvetica, Arial, 'Liberation Sans', 'DejaVu Sans', sans-serif"
ROW = 50  # vertical room per item
COLUMN_GAP = 40
GROUP_PAD = 10
GROUP_HEADER = 22
MAX_LABEL = 34  # characters of a label drawn before it is shortened with "..."
MARGIN = 16
LEGEND = 44

# Widths of ASCII characters in Helvetica, per 1000 units of font size.
_NARROW = dict.fromkeys("ijl.,:;'|!", 240) | dict.fromkeys("ftrI()[]-/ ", 320)
_WIDE = dict.fromkeys("mwMW", 860) | dict.fromkeys("ABCDEGHKNOQRUVXY&%", 700)


def text_width(text: str, size: float, bold: bool = False) -> float:
    units = sum(_NARROW.get(ch, _WIDE.get(ch, 610 if ch.isupper() else 556)) for ch in text)
    return units * size / 1000 * (1.08 if bold else 1.0)


def _short(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 3] + "..."


def _size(item: Item) -> tuple[float, float]:
    """Width and height of an item's box: datasets show their name, nodes their state too."""
    name = _short(item.label) + (" ▸" if item.kind == "namespace" else "")
    if item.kind == "dataset":
        return max(text_width(name, 12) + 20, 60), 26
    width = max(text_width(name, 12.5, bold=True), text_width(item.status, 11)) + 24
    return max(width, 90), 38


def _columns(graph: Graph) -> dict[str, int]:
    """Each item's longest path from an item with no inputs (Kahn's order; edges point right)."""
    succs: dict[str, list[str]] = defaultdict(list)
    waiting = dict.fromkeys(graph.items, 0)
    for a, b in graph.edges:
        succs[a].append(b)
        waiting[b] += 1
    column = dict.fromkeys(graph.items, 0)
    ready = [i for i, n in waiting.items() if n == 0]
    while ready:
        item_id = ready.pop()
        for nxt in succs[item_id]:
            column[nxt] = max(column[nxt], column[item_id] + 1)
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)
    return column


def layout(graph: Graph) -> dict[str, tuple[float, float, float, float]]:
    """Item id -> (x, y, width, height), and ``"group:<ns>"`` -> its box, in SVG units."""
    column = _columns(graph)
    sizes = {item_id: _size(item) for item_id, item in graph.items.items()}
    n_columns = max(column.values(), default=0) + 1
    widths = [0.0] * n_columns
    for item_id, c in column.items():
        widths[c] = max(widths[c], sizes[item_id][0])
    children: dict[str, list[str]] = defaultdict(list)
    for group in graph.groups:
        children[group.rpartition(".")[0]].append(group)
    depth_below: dict[str, int] = {}

    def below(group: str) -> int:
        if group not in depth_below:
            depth_below[group] = 1 + max((below(c) for c in children[group]), default=0)
        return depth_below[group]

    pad_left = GROUP_PAD * below("") if graph.groups else 0
    xs, x = [], MARGIN + pad_left
    for width in widths:
        xs.append(x)
        x += width + COLUMN_GAP
    members: dict[str, list[str]] = defaultdict(list)
    for item_id, item in graph.items.items():
        members[item.group].append(item_id)
    preds: dict[str, list[str]] = defaultdict(list)
    for a, b in graph.edges:
        preds[b].append(a)

    boxes: dict[str, tuple[float, float, float, float]] = {}

    def place(group: str, top: float) -> float:
        """Place ``group``'s items and child bands from ``top``; return the band's bottom."""
        y = top + (GROUP_HEADER if group else 0)
        by_column: dict[int, list[str]] = defaultdict(list)
        for item_id in members[group]:
            by_column[column[item_id]].append(item_id)
        rows = max((len(v) for v in by_column.values()), default=0)
        for c in sorted(by_column):

            def centre(item_id: str) -> tuple[float, str]:
                ys = [boxes[p][1] for p in preds[item_id] if p in boxes]
                return (sum(ys) / len(ys) if ys else float("inf"), graph.items[item_id].name)

            ordered = sorted(by_column[c], key=centre)
            offset = (rows - len(ordered)) * ROW / 2
            for row, item_id in enumerate(ordered):
                w, h = sizes[item_id]
                boxes[item_id] = (xs[c], y + offset + row * ROW + (ROW - h) / 2, w, h)
        y += rows * ROW
        for child in sorted(children[group], key=lambda g: (_first_column(g), _natural(g))):
            y = place(child, y + 6) + 6
        if group:
            own = [boxes[i] for i in _all_members(group)]
            pad = GROUP_PAD * below(group)
            left = min(b[0] for b in own) - pad
            right = max(b[0] + b[2] for b in own) + pad
            boxes[f"group:{group}"] = (left, top, right - left, y + GROUP_PAD - top)
            y += GROUP_PAD
        return y

    def _all_members(group: str) -> list[str]:
        return [i for i, item in graph.items.items() if _within(item.group, group)]

    def _first_column(group: str) -> int:
        return min((column[i] for i in _all_members(group)), default=0)

    place("", MARGIN + LEGEND)
    return boxes


def _natural(text: str) -> list[tuple[int, int | str]]:
    """Sort key putting ``model_2`` before ``model_10``."""
    import re

    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text) if p]


def _within(group: str, parent: str) -> bool:
    return group == parent or group.startswith(parent + ".")


def render_svg(graph: Graph) -> str:
    """The graph as an SVG document (a white background: it is shown on dark themes too)."""
    boxes = layout(graph)
    width = max((x + w for x, _, w, _ in boxes.values()), default=200) + MARGIN
    height = max((y + h for _, y, _, h in boxes.values()), default=100) + MARGIN
    width = max(width, _legend_width(graph) + 2 * MARGIN)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="{FONT}">',
        f"<title>{escape(graph.title)}</title>",
        "<style>text{fill:#212529;font-size:11px}.dataset text{font-size:12px}"
        ".name{font-size:12.5px;font-weight:bold}"
        ".edge{fill:none;stroke:#868e96;stroke-width:1.3}.ns{font-size:12px;fill:#495057;"
        "font-weight:bold}</style>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#868e96"/>'
        "</marker></defs>",
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
    ]
    out += _legend(graph)
    for group in graph.groups:  # parents first: children are drawn on top
        x, y, w, h = boxes[f"group:{group}"]
        depth = group.count(".")
        fill = ("#f8f9fa", "#f1f3f5", "#e9ecef")[min(depth, 2)]
        out.append(
            f'<g class="namespace"><title>namespace {escape(group)}</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="8" '
            f'fill="{fill}" stroke="#adb5bd"/>'
            f'<text class="ns" x="{x + 8:.1f}" y="{y + 15:.1f}">'
            f"{escape(group.rpartition('.')[2])}</text></g>"
        )
    out += group_outlines(graph, boxes)
    for a, b in graph.edges:
        ax, ay, aw, ah = boxes[a]
        bx, by, _, bh = boxes[b]
        x1, y1, x2, y2 = ax + aw, ay + ah / 2, bx - 1, by + bh / 2
        bend = max(24.0, (x2 - x1) / 2)
        out.append(
            f'<path class="edge" marker-end="url(#arrow)" d="M{x1:.1f},{y1:.1f} '
            f'C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"/>'
        )
    for item in graph.items.values():
        out.append(_item(item, boxes[item.id]))
    out.append("</svg>")
    return "\n".join(out)


def _item(item: Item, box: tuple[float, float, float, float]) -> str:
    x, y, w, h = box
    title = f"{item.name}: {item.status}"
    if item.kind == "dataset":
        if item.persisted:
            shape = _cylinder(x, y, w, h, "#e7f5ff", "#1971c2", "")
        else:
            shape = (
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="4" '
                'fill="#ffffff" stroke="#74c0fc" stroke-dasharray="5 3"/>'
            )
        css = "dataset persisted" if item.persisted else "dataset memory"
    else:
        _, fill, stroke = STATES[item.state]
        heavy = item.state == "failed" or item.kind == "namespace"
        dash = ' stroke-dasharray="4 3"' if item.state in ("not_run", "pending") else ""
        shape = (
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="10" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="{2.5 if heavy else 1.5}"{dash}/>'
        )
        if item.kind == "namespace":  # a stack: the box holds several nodes
            shape = (
                f'<rect x="{x + 4:.1f}" y="{y - 4:.1f}" width="{w:.1f}" height="{h:.1f}" '
                f'rx="10" fill="{fill}" stroke="{stroke}"/>' + shape
            )
        css = f"{item.kind} state-{item.state}"
    name = _short(item.label) + (" ▸" if item.kind == "namespace" else "")
    if item.kind == "dataset":
        text = f'<text x="{x + 10:.1f}" y="{y + h / 2 + 5:.1f}">{escape(name)}</text>'
    else:
        text = (
            f'<text class="name" x="{x + 12:.1f}" y="{y + 16:.1f}">{escape(name)}</text>'
            f'<text x="{x + 12:.1f}" y="{y + 30:.1f}">{escape(item.status)}</text>'
        )
    return (
        f'<g class="{css}" data-name="{escape(item.name, {chr(34): "&quot;"})}">'
        f"<title>{escape(title)}</title>{shape}{text}</g>"
    )


def _cylinder(x: float, y: float, w: float, h: float, fill: str, stroke: str, extra: str) -> str:
    r = 4.0
    return (
        f'<path d="M{x:.1f},{y + r:.1f} v{h - 2 * r:.1f} a{w / 2:.1f},{r} 0 0 0 {w:.1f},0 '
        f"v{-(h - 2 * r):.1f} a{w / 2:.1f},{r} 0 0 0 {-w:.1f},0 a{w / 2:.1f},{r} 0 0 0 "
        f'{w:.1f},0" fill="{fill}" stroke="{stroke}"{extra}/>'
    )


def _legend_entries(graph: Graph) -> list[tuple[str, str]]:
    entries = [(key, STATES[key][0]) for key in graph.states_present()]
    return [*entries, ("persisted", "persisted dataset"), ("memory", "in-memory dataset")]


def _legend_width(graph: Graph) -> float:
    return sum(30 + text_width(label, 11) + 18 for _, label in _legend_entries(graph))


def _legend(graph: Graph) -> list[str]:
    out = ['<g class="legend">']
    x, y = float(MARGIN), float(MARGIN)
    for key, label in _legend_entries(graph):
        if key == "persisted":
            swatch = _cylinder(x, y, 24, 16, "#e7f5ff", "#1971c2", "")
        elif key == "memory":
            swatch = (
                f'<rect x="{x}" y="{y}" width="24" height="16" rx="3" fill="#ffffff" '
                'stroke="#74c0fc" stroke-dasharray="5 3"/>'
            )
        else:
            _, fill, stroke = STATES[key]
            swatch = (
                f'<rect x="{x}" y="{y}" width="24" height="16" rx="6" fill="{fill}" '
                f'stroke="{stroke}" stroke-width="{2.5 if key == "failed" else 1.5}"/>'
            )
        out.append(
            f'<g class="legend-{key}">{swatch}<text x="{x + 30:.1f}" y="{y + 12:.1f}">'
            f"{escape(label)}</text></g>"
        )
        x += 30 + text_width(label, 11) + 18
    out.append("</g>")
    return out


def group_outlines(graph: Graph, boxes: dict[str, tuple[float, float, float, float]]) -> list[str]:
    """A dashed outline around the nodes of each group (``group_by``): one Prefect task run."""
    out = []
    for name, ids in graph.units.items():
        if not ids:
            continue
        left = min(boxes[i][0] for i in ids) - 5
        top = min(boxes[i][1] for i in ids) - 5
        right = max(boxes[i][0] + boxes[i][2] for i in ids) + 5
        bottom = max(boxes[i][1] + boxes[i][3] for i in ids) + 5
        out.append(
            f'<g class="group"><title>group {escape(name)}: one task run</title>'
            f'<rect x="{left:.1f}" y="{top:.1f}" width="{right - left:.1f}" '
            f'height="{bottom - top:.1f}" rx="10" fill="none" stroke="#5c7cfa" '
            'stroke-width="1.5" stroke-dasharray="6 4"/></g>'
        )
    return out
