"""Draw a :class:`~.graph.Graph` as a standalone SVG picture (no dependency, no fonts to load).

Every Prefect UI renders a markdown image, while only the V2 UI draws Mermaid; an SVG in a
``data:`` URI is the picture both show. Where each box goes is :mod:`.graph_layout`'s.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from kedro_prefect.observe.graph import STATES, Graph, Item
from kedro_prefect.observe.graph_layout import (
    LINE,
    MARGIN,
    NAME_SIZE,
    Box,
    _legend_places,
    _legend_width,
    _name_lines,
    choose_layout,
    layout,
    text_width,
    wrap,
)

FONT = "Helvetica, Arial, 'Liberation Sans', 'DejaVu Sans', sans-serif"

__all__ = ["choose_layout", "layout", "render_svg", "text_width", "wrap"]


def render_svg(graph: Graph) -> str:
    """The graph as an SVG document (a white background: it is shown on dark themes too)."""
    boxes, horizontal = choose_layout(graph)
    width = max((x + w for x, _, w, _ in boxes.values()), default=200) + MARGIN
    height = max((y + h for _, y, _, h in boxes.values()), default=100) + MARGIN
    width = max(width, _legend_width(graph) + MARGIN)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="{FONT}">',
        f"<title>{escape(graph.title)}</title>",
        "<style>text{fill:#212529;font-size:11px}.dataset text{font-size:12px}"
        f".name{{font-size:{NAME_SIZE}px;font-weight:bold}}"
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
        lane = None if horizontal else _lane(graph, boxes, a, b)
        out.append(_edge(boxes[a], boxes[b], horizontal) if lane is None else lane)
    for item in graph.items.values():
        out.append(_item(item, boxes[item.id]))
    out.append("</svg>")
    return "\n".join(out)


def _edge(a: Box, b: Box, horizontal: bool) -> str:
    """A curve from the side of box ``a`` facing ``b`` to the facing side of ``b``."""
    ax, ay, aw, ah = a
    bx, by, bw, _ = b
    if horizontal:
        x1, y1, x2, y2 = ax + aw, ay + ah / 2, bx - 1, b[1] + b[3] / 2
        bend = max(24.0, (x2 - x1) / 2)
        c1, c2 = f"{x1 + bend:.1f},{y1:.1f}", f"{x2 - bend:.1f},{y2:.1f}"
    else:
        x1, y1, x2, y2 = ax + aw / 2, ay + ah, bx + bw / 2, by - 1
        bend = max(16.0, (y2 - y1) / 2)
        c1, c2 = f"{x1:.1f},{y1 + bend:.1f}", f"{x2:.1f},{y2 - bend:.1f}"
    return (
        f'<path class="edge" marker-end="url(#arrow)" d="M{x1:.1f},{y1:.1f} '
        f'C{c1} {c2} {x2:.1f},{y2:.1f}"/>'
    )


def _lane(graph: Graph, boxes: dict[str, Box], a: str, b: str) -> str | None:
    """Top to bottom, an edge whose direct curve would cross another box (a row of namespace
    bands wrapped below another) runs down the gap beside the outermost namespace band it
    enters or leaves; ``None`` for a direct curve."""
    ax, ay, aw, ah = boxes[a]
    bx, by, bw, _ = boxes[b]
    x1, y1, x2, y2 = ax + aw / 2, ay + ah, bx + bw / 2, by - 1
    if not any(
        _crosses((x1, y1, x2, y2), box)
        for key, box in boxes.items()
        if key not in (a, b) and not key.startswith("group:")
    ):
        return None
    ga, gb = graph.items[a].group, graph.items[b].group
    outer = [g for g in graph.groups if _inside(gb, g) != _inside(ga, g)]
    if not outer:
        return None
    left = boxes[f"group:{min(outer, key=len)}"][0] - 7
    top, bottom = y1 + 14, y2 - 22
    return (
        f'<path class="edge" marker-end="url(#arrow)" d="M{x1:.1f},{y1:.1f} '
        f"C{x1:.1f},{top:.1f} {left:.1f},{y1:.1f} {left:.1f},{top + 10:.1f} "
        f"L{left:.1f},{bottom - 10:.1f} C{left:.1f},{y2:.1f} {x2:.1f},{bottom:.1f} "
        f'{x2:.1f},{y2:.1f}"/>'
    )


def _inside(group: str, parent: str) -> bool:
    return group == parent or group.startswith(parent + ".")


def _crosses(line: tuple[float, float, float, float], box: Box) -> bool:
    """Whether the segment ``line`` passes through ``box`` (sampled: boxes are large)."""
    x1, y1, x2, y2 = line
    x, y, w, h = box
    if x > max(x1, x2) or x + w < min(x1, x2) or y > max(y1, y2) or y + h < min(y1, y2):
        return False
    return any(
        x < x1 + (x2 - x1) * t < x + w and y < y1 + (y2 - y1) * t < y + h
        for t in (k / 40 for k in range(1, 40))
    )


def _item(item: Item, box: Box) -> str:
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
    lines = _name_lines(item)
    if item.kind == "dataset":
        text = "".join(
            f'<text x="{x + 10:.1f}" y="{y + 17 + 14 * i:.1f}">{escape(line)}</text>'
            for i, line in enumerate(lines)
        )
    else:
        text = "".join(
            f'<text class="name" x="{x + 12:.1f}" y="{y + 19 + LINE * i:.1f}">{escape(line)}</text>'
            for i, line in enumerate(lines)
        )
        status_y = y + 19 + LINE * (len(lines) - 1) + 15
        text += f'<text x="{x + 12:.1f}" y="{status_y:.1f}">{escape(item.status)}</text>'
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


def _legend(graph: Graph) -> list[str]:
    out = ['<g class="legend">']
    for key, label, x, y in _legend_places(graph):
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
