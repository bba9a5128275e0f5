"""Pipelines used by the benchmarks (module-level functions, so ParallelRunner can pickle them)."""

from __future__ import annotations

import time

from kedro.pipeline import Pipeline, node

#: Skewed DAG: three branches of very different lengths, each summing to ``unit`` seconds
#: (1 node of ``unit``, 4 of ``unit / 4``, 8 of ``unit / 8``), joined by one last node. The
#: critical path is ``unit`` (plus the join, which takes no time). Measured with two units: with
#: 1 s the fixed cost of a flow run (creating it, its states, ~0.1 s) weighs on the ratio; with
#: 4 s the ratio shows mostly how well nodes are scheduled.
SKEW_UNITS = (1.0, 4.0)
SKEW_BRANCHES = {"long": 1, "mid": 4, "short": 8}  # branch: nodes, each of unit / nodes


def noop(*_args):
    return 1


class Sleep:
    """Picklable sleeping node function."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.__name__ = f"sleep_{seconds}"

    def __call__(self, *_args):
        time.sleep(self.seconds)
        return 1


def chain(n: int) -> Pipeline:
    """``n`` no-op nodes, each consuming the previous one's output."""
    nodes = [node(noop, None, "c0", name="n0")]
    nodes += [node(noop, f"c{i - 1}", f"c{i}", name=f"n{i}") for i in range(1, n)]
    return Pipeline(nodes)


def independent(n: int) -> Pipeline:
    """``n`` no-op nodes with no dependencies between them."""
    return Pipeline([node(noop, None, f"i{i}", name=f"i{i}") for i in range(n)])


def layered(n: int, width: int) -> Pipeline:
    """``n`` no-op nodes in layers of ``width``; each node reads two nodes of the layer before."""
    nodes = []
    for i in range(n):
        layer, pos = divmod(i, width)
        if layer == 0:
            inputs = None
        else:
            prev = (layer - 1) * width
            inputs = [f"d{prev + pos}", f"d{prev + (pos + 1) % width}"]
        nodes.append(node(noop, inputs, f"d{i}", name=f"d{i}"))
    return Pipeline(nodes)


def skewed(unit: float) -> Pipeline:
    """Branches of very different lengths, then a join: see ``SKEW_BRANCHES``."""
    nodes = []
    ends = []
    for branch, count in SKEW_BRANCHES.items():
        prev = None
        for i in range(count):
            seconds = unit / count
            out = f"{branch}_{i}"
            nodes.append(node(Sleep(seconds), prev, out, name=out))
            prev = out
        ends.append(prev)
    nodes.append(node(noop, ends, "joined", name="join"))
    return Pipeline(nodes)


def critical_path(pipeline: Pipeline) -> float:
    """Longest sum of node sleep times along any path of ``pipeline``."""
    longest: dict = {}
    for group in pipeline.grouped_nodes:
        for n in group:
            own = getattr(n.func, "seconds", 0.0)
            parents = pipeline.node_dependencies[n]
            longest[n] = own + max((longest[p] for p in parents), default=0.0)
    return max(longest.values())
