"""Where each box of a :class:`~.graph.Graph` goes in its picture (no drawing: :mod:`.graph_svg`).

Prefect's UIs scale a picture down to their content column (~690 px on a laptop screen), so
the layout is the one scaled down least: left to right, or top to bottom for a pipeline with
more steps in a row than side by side, where a layer broader than the column wraps into rows
(:func:`choose_layout`). Node names are wrapped onto up to three lines, not cut. The layout is
layered, with the namespaces as nested bands:

* each item's layer is its longest path from the pipeline's inputs (datasets and nodes
  alternate), so every edge points the same way;
* each namespace box is a band across the layers holding its own items and, beside them, the
  bands of its child namespaces (side by side only where their layers meet), so boxes never
  overlap and a namespace reads as one block; top to bottom, side-by-side bands broader than
  the column wrap into rows, one below the other (:func:`_wrapped`; an edge that would cross
  a box runs down the gap beside the band instead);
* within a band, a layer's items are ordered by where their producers are, which keeps most
  edges short and uncrossed.

Text widths are estimated from Helvetica/Arial metrics (the SVG names only generic fonts, since
an image cannot load any), with room to spare; the full names are in each box's ``<title>``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from itertools import pairwise

from kedro_prefect.observe.graph import STATES, Graph, Item

#: Width of the content column of Prefect's UI on a laptop screen, where the picture is scaled
#: down to fit: the layout (left to right, or top to bottom) is the one scaled down least.
UI_WIDTH = 690
NAME_SIZE = 13  # bold node names; every other text is 11-12 px
LINE = 15  # distance between wrapped lines of a name
WRAP = 20  # characters per line of a wrapped name (at most MAX_LINES lines)
MAX_LINES = 3
MAIN_GAP = 40  # between layers along the edges' direction
CROSS_GAP = 12  # between items of one layer
GROUP_PAD = 10
GROUP_HEADER = 22
MARGIN = 16
LEGEND = 44

# Widths of ASCII characters in Helvetica, per 1000 units of font size.
_NARROW = dict.fromkeys("ijl.,:;'|!", 240) | dict.fromkeys("ftrI()[]-/ ", 320)
_WIDE = dict.fromkeys("mwMW", 860) | dict.fromkeys("ABCDEGHKNOQRUVXY&%", 700)

Box = tuple[float, float, float, float]


def text_width(text: str, size: float, bold: bool = False) -> float:
    units = sum(_NARROW.get(ch, _WIDE.get(ch, 610 if ch.isupper() else 556)) for ch in text)
    return units * size / 1000 * (1.08 if bold else 1.0)


def wrap(text: str, width: int = WRAP, max_lines: int = MAX_LINES) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken after ``_ . - /`` or a space
    where possible; past ``max_lines`` the last line ends with "..." (the full name is in the
    box's ``<title>``)."""
    import re

    lines: list[str] = []
    current = ""
    for piece in re.findall(r"[^_.\-/ ]*[_.\-/ ]?", text):
        while len(piece) > width:  # a word longer than a line: cut it
            room = width - len(current)
            lines.append(current + piece[:room])
            current, piece = "", piece[room:]
        if len(current) + len(piece) > width:
            lines.append(current)
            current = ""
        current += piece
    if current:
        lines.append(current)
    lines = [line.rstrip(" ") for line in lines if line.strip()] or [text]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 3] + "..."
    return lines


def _name_lines(item: Item) -> list[str]:
    lines = wrap(item.label)
    if item.kind == "namespace":
        lines[-1] += " ▸"
    return lines


def _size(item: Item) -> tuple[float, float]:
    """Width and height of an item's box: datasets show their name, nodes their state too."""
    lines = _name_lines(item)
    if item.kind == "dataset":
        width = max(text_width(line, 12) for line in lines) + 20
        return max(width, 60), 12 + 14 * len(lines)
    width = max(
        *(text_width(line, NAME_SIZE, bold=True) for line in lines), text_width(item.status, 11)
    )
    return max(width + 24, 90), 12 + LINE * len(lines) + 14


def _columns(graph: Graph, after: Iterable[tuple[str, str]] = ()) -> dict[str, int] | None:
    """Each item's longest path from an item with no inputs (Kahn's order; edges point right).

    ``after``: pairs ``(a, b)`` where ``b`` must be in a later layer than ``a`` (a wrapped row
    of namespace bands below the one before it). ``None`` when they would make a cycle.
    """
    succs: dict[str, list[tuple[str, int]]] = defaultdict(list)
    waiting = dict.fromkeys(graph.items, 0)
    for a, b, step in [*((a, b, 1) for a, b in graph.edges), *((a, b, 1) for a, b in after)]:
        succs[a].append((b, step))
        waiting[b] += 1
    column = dict.fromkeys(graph.items, 0)
    ready = [i for i, n in waiting.items() if n == 0]
    done = 0
    while ready:
        item_id = ready.pop()
        done += 1
        for nxt, step in succs[item_id]:
            column[nxt] = max(column[nxt], column[item_id] + step)
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)
    return column if done == len(column) else None


def choose_layout(graph: Graph) -> tuple[dict[str, Box], bool]:
    """The boxes of the layout that is scaled down least in :data:`UI_WIDTH` px, and whether
    it runs left to right (``True``) or top to bottom. A pipeline with more steps in a row
    than side by side (a "wide" one) reads top to bottom; ties go left to right."""
    across = layout(graph, horizontal=True)
    down = _wrapped(graph)
    if _fit(down) > _fit(across) + 0.01:
        return down, False
    return across, True


def _wrapped(graph: Graph) -> dict[str, Box]:
    """Top to bottom, with namespace bands that would stand side by side wider than
    :data:`UI_WIDTH` wrapped into rows, one below the other (the widest row of bands first,
    one more row at a time), so a namespaced, broad pipeline is not scaled down."""
    rows: dict[str, int] = {}
    boxes = layout(graph, horizontal=False)
    stuck: set[str] = set()
    for _ in range(4 * len(graph.groups)):
        if _fit(boxes) >= 1:
            break
        widest = _widest_row(graph, boxes, rows, stuck)
        if widest is None:
            break
        rows[widest] = rows.get(widest, 1) + 1
        if _columns(graph, _row_order(graph, rows)) is None:  # rows that make a cycle
            rows[widest] -= 1
            stuck.add(widest)
            continue
        wrapped = layout(graph, horizontal=False, rows=rows)
        if _width(wrapped) < _width(boxes):
            boxes = wrapped
    return boxes


def _widest_row(
    graph: Graph, boxes: dict[str, Box], rows: dict[str, int], stuck: set[str]
) -> str | None:
    """The namespace ("" for the top level) whose child bands stand side by side widest
    (and can take one more row), or ``None``."""
    column = _columns(graph) or {}
    best, widest = None, 0.0
    for group, clusters in _side_by_side(graph, column).items():
        if group in stuck or all(len(c) <= rows.get(group, 1) for c in clusters):
            continue
        for cluster in clusters:
            for row in _split(cluster, rows.get(group, 1)):
                width = sum(boxes[f"group:{child}"][2] for child in row)
                if width > widest:
                    best, widest = group, width
    return best


def _side_by_side(graph: Graph, column: dict[str, int]) -> dict[str, list[list[str]]]:
    """Namespace -> its child namespaces in clusters sharing layers (drawn side by side)."""
    span: dict[str, tuple[int, int]] = {}
    for item_id, item in graph.items.items():
        for group in graph.groups:
            if _within(item.group, group):
                a, b = span.get(group, (column[item_id], column[item_id]))
                span[group] = (min(a, column[item_id]), max(b, column[item_id]))
    children: dict[str, list[str]] = defaultdict(list)
    for group in graph.groups:
        if group in span:
            children[group.rpartition(".")[0]].append(group)
    out: dict[str, list[list[str]]] = {}
    for parent, kids in children.items():
        clusters: list[list[str]] = []
        last = -2
        for kid in sorted(kids, key=lambda g: (span[g][0], _natural(g))):
            if not clusters or span[kid][0] > last:  # top to bottom: bands sharing a layer
                clusters.append([])
            clusters[-1].append(kid)
            last = max(last, span[kid][1]) if len(clusters[-1]) > 1 else span[kid][1]
        out[parent] = [c for c in clusters if len(c) > 1]
    return out


def _split(cluster: list[str], rows: int) -> list[list[str]]:
    per_row = -(-len(cluster) // max(rows, 1))
    return [cluster[i : i + per_row] for i in range(0, len(cluster), per_row)]


def _row_order(graph: Graph, rows: dict[str, int]) -> list[tuple[str, str]]:
    """Pairs (a, b): item ``b`` of a wrapped row of bands goes below item ``a`` of the row
    before it (for :func:`_columns`)."""
    column = _columns(graph) or {}
    members: dict[str, list[str]] = defaultdict(list)
    for item_id, item in graph.items.items():
        for group in graph.groups:
            if _within(item.group, group):
                members[group].append(item_id)
    pairs = []
    for parent, clusters in _side_by_side(graph, column).items():
        for cluster in clusters:
            split = _split(cluster, rows.get(parent, 1))
            for above, below in pairwise(split):
                pairs += [
                    (a, b) for g in above for a in members[g] for h in below for b in members[h]
                ]
    return pairs


def _width(boxes: dict[str, Box]) -> float:
    return max((x + w for x, _, w, _ in boxes.values()), default=0) + MARGIN


def _fit(boxes: dict[str, Box]) -> float:
    """The scale the UI shows a picture of these boxes at (1 when it fits its width)."""
    width = _width(boxes)
    return min(1.0, UI_WIDTH / width) if width else 1.0


def layout(
    graph: Graph, horizontal: bool = True, rows: dict[str, int] | None = None
) -> dict[str, Box]:
    """Item id -> (x, y, width, height), and ``"group:<ns>"`` -> its box, in SVG units.

    Computed along two axes: *main* (the edges' direction: x left to right, or y top to bottom)
    and *cross*; namespaces are bands across it, side by side. ``rows``: namespace -> the rows
    its side-by-side child bands are wrapped into (top to bottom only; ignored if that would
    make a cycle).
    """
    column = (rows and _columns(graph, _row_order(graph, rows))) or _columns(graph) or {}
    sizes = {item_id: _size(item) for item_id, item in graph.items.items()}
    if not horizontal and not graph.groups:
        return _folded(graph, column, sizes)
    main_of = {i: (s[0] if horizontal else s[1]) for i, s in sizes.items()}  # extent along main
    cross_of = {i: (s[1] if horizontal else s[0]) for i, s in sizes.items()}
    n_columns = max(column.values(), default=0) + 1
    thickness = [0.0] * n_columns
    for item_id, c in column.items():
        thickness[c] = max(thickness[c], main_of[item_id])
    children: dict[str, list[str]] = defaultdict(list)
    for group in graph.groups:
        children[group.rpartition(".")[0]].append(group)
    depth_below: dict[str, int] = {}

    def below(group: str) -> int:
        if group not in depth_below:
            depth_below[group] = 1 + max((below(c) for c in children[group]), default=0)
        return depth_below[group]

    nesting = GROUP_PAD * below("") if graph.groups else 0
    # Top to bottom, a namespace's header sits above its first layer: gaps make room for it.
    legend = _legend_height(graph)
    header_room = (
        0 if horizontal or not graph.groups else (GROUP_HEADER + GROUP_PAD) * (below("") - 1)
    )
    gap = (MAIN_GAP if horizontal else 28) + header_room
    starts, at = [], (MARGIN + nesting if horizontal else MARGIN + legend + header_room)
    for extent in thickness:
        starts.append(at)
        at += extent + gap
    members: dict[str, list[str]] = defaultdict(list)
    for item_id, item in graph.items.items():
        members[item.group].append(item_id)
    preds: dict[str, list[str]] = defaultdict(list)
    for a, b in graph.edges:
        preds[b].append(a)
    spans: dict[str, tuple[float, float]] = {}  # item id -> (start, extent) across
    boxes: dict[str, Box] = {}

    def place(group: str, top: float) -> float:
        """Place ``group``'s items and child bands from ``top`` (across); return the band's end."""
        y = top + (0 if not group else GROUP_HEADER if horizontal else GROUP_PAD * below(group))
        by_column: dict[int, list[str]] = defaultdict(list)
        for item_id in members[group]:
            by_column[column[item_id]].append(item_id)

        def extent(ids: list[str]) -> float:
            return sum(cross_of[i] for i in ids) + CROSS_GAP * max(len(ids) - 1, 0)

        band = max((extent(v) for v in by_column.values()), default=0.0)
        for c in sorted(by_column):

            def centre(item_id: str) -> tuple[float, str]:
                ys = [spans[p][0] + spans[p][1] / 2 for p in preds[item_id] if p in spans]
                return (sum(ys) / len(ys) if ys else float("inf"), graph.items[item_id].name)

            ordered = sorted(by_column[c], key=centre)
            at = y + (band - extent(ordered)) / 2
            for item_id in ordered:
                main = starts[c] + (thickness[c] - main_of[item_id]) / 2
                spans[item_id] = (at, cross_of[item_id])
                w, h = sizes[item_id]
                boxes[item_id] = (main, at, w, h) if horizontal else (at, main, w, h)
                at += cross_of[item_id] + CROSS_GAP
        start, near = y, 1 if horizontal else 0
        taken = [(column[i], column[i], spans[i][0] + spans[i][1]) for i in members[group]]
        y += band + (CROSS_GAP if band else 0)
        for child in sorted(children[group], key=lambda g: (_first_column(g), _natural(g))):
            # A band goes beside (not after) what holds none of its layers (or, left to right,
            # their neighbours: a band's header is above it, its padding along the layers).
            first, last = _first_column(child), _last_column(child)
            ends = [end for a, b, end in taken if a <= last + near and first <= b + near]
            at = max(ends, default=start - 6) + (CROSS_GAP if ends else 0)
            end = place(child, at + 6) + 6
            taken.append((first, last, end))
            y = max(y, end)
        if group:
            own = [boxes[i] for i in _all_members(group)]
            pad = GROUP_PAD * below(group)
            if horizontal:
                left = min(b[0] for b in own) - pad
                right = max(b[0] + b[2] for b in own) + pad
                boxes[f"group:{group}"] = (left, top, right - left, y + GROUP_PAD - top)
            else:
                head = min(b[1] for b in own) - pad - GROUP_HEADER * below(group)
                foot = max(b[1] + b[3] for b in own) + pad
                boxes[f"group:{group}"] = (top, head, y + GROUP_PAD - top, foot - head)
            y += GROUP_PAD
        return y

    def _all_members(group: str) -> list[str]:
        return [i for i, item in graph.items.items() if _within(item.group, group)]

    def _first_column(group: str) -> int:
        return min((column[i] for i in _all_members(group)), default=0)

    def _last_column(group: str) -> int:
        return max((column[i] for i in _all_members(group)), default=0)

    place("", MARGIN + legend if horizontal else MARGIN + nesting)
    return boxes


def _folded(
    graph: Graph, column: dict[str, int], sizes: dict[str, tuple[float, float]]
) -> dict[str, Box]:
    """Top to bottom, without namespaces: a layer broader than the UI's column wraps into
    rows, so the picture fits :data:`UI_WIDTH` and is shown at full size."""
    limit = UI_WIDTH - 2 * MARGIN
    preds: dict[str, list[str]] = defaultdict(list)
    for a, b in graph.edges:
        preds[b].append(a)
    by_column: dict[int, list[str]] = defaultdict(list)
    for item_id, c in column.items():
        by_column[c].append(item_id)
    boxes: dict[str, Box] = {}
    y = MARGIN + _legend_height(graph)
    for c in sorted(by_column):

        def centre(item_id: str) -> tuple[float, str]:
            xs = [boxes[p][0] + boxes[p][2] / 2 for p in preds[item_id] if p in boxes]
            return (sum(xs) / len(xs) if xs else float("inf"), graph.items[item_id].name)

        layer: list[list[str]] = [[]]
        width = 0.0
        for item_id in sorted(by_column[c], key=centre):
            step = sizes[item_id][0] + (CROSS_GAP if layer[-1] else 0)
            if layer[-1] and width + step > limit:
                layer.append([])
                width, step = 0.0, sizes[item_id][0]
            layer[-1].append(item_id)
            width += step
        for row in layer:
            x = MARGIN + (limit - _row_width(row, sizes)) / 2
            height = max(sizes[i][1] for i in row)
            for item_id in row:
                w, h = sizes[item_id]
                boxes[item_id] = (x, y + (height - h) / 2, w, h)
                x += w + CROSS_GAP
            y += height + 16
        y += 14
    left = min((b[0] for b in boxes.values()), default=MARGIN) - MARGIN  # no empty margin
    return {i: (x - left, y, w, h) for i, (x, y, w, h) in boxes.items()}


def _row_width(row: list[str], sizes: dict[str, tuple[float, float]]) -> float:
    return sum(sizes[i][0] for i in row) + CROSS_GAP * (len(row) - 1)


def _natural(text: str) -> list[tuple[int, int | str]]:
    """Sort key putting ``model_2`` before ``model_10``."""
    import re

    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text) if p]


def _within(group: str, parent: str) -> bool:
    return group == parent or group.startswith(parent + ".")


def _legend_entries(graph: Graph) -> list[tuple[str, str]]:
    entries = [(key, STATES[key][0]) for key in graph.states_present()]
    return [*entries, ("persisted", "persisted dataset"), ("memory", "in-memory dataset")]


def _legend_places(graph: Graph) -> list[tuple[str, str, float, float]]:
    """(key, label, x, y) of each legend entry, in rows that fit :data:`UI_WIDTH`."""
    places = []
    x, y = float(MARGIN), float(MARGIN)
    for key, label in _legend_entries(graph):
        step = 30 + text_width(label, 11) + 18
        if x > MARGIN and x + step > UI_WIDTH - MARGIN:
            x, y = float(MARGIN), y + 24
        places.append((key, label, x, y))
        x += step
    return places


def _legend_height(graph: Graph) -> float:
    """Room above the drawing for the legend's rows."""
    return max(p[3] for p in _legend_places(graph)) - MARGIN + LEGEND


def _legend_width(graph: Graph) -> float:
    return max(x + 30 + text_width(label, 11) for _, label, x, _ in _legend_places(graph))
