"""The pipeline graph, artifact keys and observer isolation, without running a pipeline."""

from __future__ import annotations

import logging
import re
import sys

import pytest
from kedro.pipeline import Pipeline, node

from kedro_prefect.observe.artifacts import graph_key, graph_markdown, table_key
from kedro_prefect.observe.base import PipelineRun, RunObserver
from kedro_prefect.observe.graph import MAX_DRAWN_NODES, build_graph, mermaid_flowchart, state_key
from kedro_prefect.observe.graph_svg import render_svg
from kedro_prefect.observe.recorder import _Observers
from tests.helpers import EXAMPLE_PROJECT
from tests.pipelines import namespaced_broad_pipeline


@pytest.fixture
def example_pipeline():
    sys.path.insert(0, str(EXAMPLE_PROJECT / "src"))
    try:
        from sales_demo.pipeline_registry import register_pipelines

        yield register_pipelines()["__default__"]
    finally:
        sys.path.remove(str(EXAMPLE_PROJECT / "src"))


def _subgraphs(lines: list[str]) -> dict[str, int]:
    """Subgraph label -> nesting depth (indentation)."""
    found = {}
    for line in lines:
        match = re.match(r'^( *)subgraph \w+\["([^"]+)"\]$', line)
        if match:
            found[match.group(2)] = len(match.group(1)) // 4
    return found


def test_graph_names_every_node_and_nests_namespaces(example_pipeline):
    markdown = graph_markdown(PipelineRun(example_pipeline, None, "sales_demo", ["__default__"]))
    mermaid = markdown.split("```mermaid\n", 1)[1].split("```", 1)[0]
    for each in example_pipeline.nodes:
        assert f'("{each.name}")' in mermaid
    assert "params:" not in mermaid  # parameters are not drawn as datasets
    assert _subgraphs(mermaid.splitlines()) == {
        "ingest": 1,
        "regions": 1,
        "east": 2,
        "north": 2,
        "south": 2,
        "west": 2,
    }


def test_graph_edges_follow_the_datasets():
    pipeline = Pipeline(
        [
            node(lambda x: x, "a", "b", name="first"),
            node(lambda x, p: x, ["b", "params:p"], 'say "c"', name="second"),
        ]
    )
    lines = mermaid_flowchart(build_graph(pipeline, "t"))
    ids = {m.group(2): m.group(1) for m in re.finditer(r'(\w+)\[?\(+"([^"]+)"', "\n".join(lines))}
    assert f"    {ids['a']} --> {ids['first']}" in lines
    assert f"    {ids['first']} --> {ids['b']}" in lines
    assert f"    {ids['b']} --> {ids['second']}" in lines
    assert any("say #quot;c#quot;" in line for line in lines)  # quotes escaped for Mermaid


def test_artifact_keys_are_stable_and_valid(example_pipeline):
    run = PipelineRun(example_pipeline, None, "sales_demo", ["__default__"])
    again = PipelineRun(example_pipeline, None, "sales_demo", ["__default__"])
    assert (graph_key(run), table_key(run)) == (
        "sales-demo-default-graph",
        "sales-demo-default-nodes",
    )
    assert graph_key(run) == graph_key(again)
    odd = PipelineRun(example_pipeline, None, "My Flow!", ["data_processing", "Model.Train"])
    assert re.fullmatch(r"[a-z0-9-]+", graph_key(odd))
    assert graph_key(odd) == "my-flow-data-processing-model-train-graph"


def _svg_items(svg: str) -> dict[str, str]:
    """``data-name`` -> CSS class of every drawn node, dataset or collapsed namespace."""
    return {
        m.group(2): m.group(1) for m in re.finditer(r'<g class="([^"]+)" data-name="([^"]+)"', svg)
    }


def test_final_graph_shows_each_node_state_duration_and_a_legend(example_pipeline):
    states = {n.name: ("completed", 0.25) for n in example_pipeline.nodes}
    states["rank_products"] = ("failed", 1.5)
    states["combine_regions"] = ("not_run", None)
    states["regions.west.summarize"] = (state_key("Cached", "COMPLETED"), None)
    states["regions.east.summarize"] = (state_key("Cancelled", "CANCELLED"), 0.5)
    graph = build_graph(example_pipeline, "__default__", states, {"orders_raw", "region_report"})
    svg = render_svg(graph)
    drawn = _svg_items(svg)
    assert {n.name for n in example_pipeline.nodes} <= set(drawn)
    assert drawn["rank_products"] == "node state-failed"
    assert drawn["combine_regions"] == "node state-not_run"
    assert drawn["regions.west.summarize"] == "node state-skipped"
    assert drawn["regions.east.summarize"] == "node state-cancelled"
    assert drawn["ingest.clean_orders"] == "node state-completed"
    assert "<title>rank_products: failed · 1.50 s</title>" in svg
    # persisted datasets are drawn differently from in-memory ones
    assert drawn["orders_raw"] == "dataset persisted"
    assert drawn["ingest.orders"] == "dataset memory"
    legend = re.findall(r'<g class="legend-(\w+)">', svg)
    assert legend == [
        "completed",
        "failed",
        "cancelled",
        "not_run",
        "skipped",
        "persisted",
        "memory",
    ]
    mermaid = "\n".join(mermaid_flowchart(graph))
    assert "rank_products<br/>failed · 1.50 s" in mermaid
    assert re.search(r"class [\w,]+ failed", mermaid)


@pytest.mark.parametrize(
    ("name", "kind", "key"),
    [
        ("Completed", "COMPLETED", "completed"),
        ("Cached", "COMPLETED", "skipped"),
        ("Skipped", "COMPLETED", "skipped"),
        ("Failed", "FAILED", "failed"),
        ("Crashed", "CRASHED", "failed"),
        ("TimedOut", "FAILED", "failed"),
        ("Cancelled", "CANCELLED", "cancelled"),
        ("Not run", None, "not_run"),
    ],
)
def test_state_names_map_to_graph_colours(name, kind, key):
    assert state_key(name, kind) == key


def _big_pipeline(models: int = 12, steps: int = 4, length: int = 5) -> Pipeline:
    from kedro.pipeline import pipeline

    def chain() -> Pipeline:
        return Pipeline(
            [
                node(_identity, "raw" if k == 0 else f"d{k - 1}", f"d{k}", name=f"n{k}")
                for k in range(length)
            ]
        )

    parts = []
    for m in range(models):
        stages = [
            pipeline(
                chain(),
                namespace=f"step_{s}",
                inputs={"raw": "raw"},
                outputs={f"d{length - 1}": f"out_{s}"},
            )
            for s in range(steps)
        ]
        report = Pipeline(
            [node(_identity, [f"out_{s}" for s in range(steps)], "report", name="report")]
        )
        parts.append(
            pipeline(
                sum(stages, Pipeline([])) + report, namespace=f"model_{m}", inputs={"raw": "raw"}
            )
        )
    return sum(parts, Pipeline([]))


def _identity(*args):
    return args[0]


def test_a_large_pipeline_collapses_namespaces_and_says_so():
    big = _big_pipeline()
    assert len(big.nodes) == 252
    states = {n.name: ("completed", 0.1) for n in big.nodes}
    states["model_3.step_2.n1"] = ("failed", 0.1)
    graph = build_graph(big, "big", states)
    boxes = [i for i in graph.items.values() if i.kind != "dataset"]
    assert len(boxes) <= MAX_DRAWN_NODES
    assert "model_3.step_2" in graph.collapsed and "model_3" not in graph.collapsed
    svg = render_svg(graph)
    drawn = _svg_items(svg)
    assert drawn["model_3.step_2"] == "namespace state-failed"  # the worst state of its nodes
    assert drawn["model_3.step_1"] == "namespace state-completed"
    # outside the collapsed namespaces, nodes are drawn one by one
    assert '<g class="node state-completed" data-name="model_3.report">' in svg
    run = PipelineRun(big, None, "big", ["__default__"])
    assert "252 nodes are too many to draw one by one" in graph_markdown(run)


def test_a_flat_pipeline_too_large_to_draw_says_so_instead():
    flat = Pipeline([node(_identity, f"d{i}", f"d{i + 1}", name=f"n{i}") for i in range(200)])
    markdown = graph_markdown(PipelineRun(flat, None, "flat", ["__default__"]))
    assert "Not drawn: even with its namespaces collapsed, this pipeline would be 401 boxes" in (
        markdown
    )
    assert "data:image/svg+xml" not in markdown and "```mermaid" not in markdown


def test_a_small_pipeline_is_not_collapsed(example_pipeline):
    assert build_graph(example_pipeline, "t").collapsed == []


class _Boom(RunObserver):
    def __init__(self):
        self.calls = 0

    def on_node_submitted(self, node, future):
        self.calls += 1
        raise RuntimeError("observer bug")


class _Counter(RunObserver):
    def __init__(self):
        self.calls = 0

    def on_node_submitted(self, node, future):
        self.calls += 1


def test_a_failing_observer_is_switched_off_and_the_others_go_on(example_pipeline, caplog):
    boom, counter = _Boom(), _Counter()
    run = PipelineRun(example_pipeline, None, "sales_demo", ["__default__"])
    observers = _Observers(run, [boom, counter])
    with caplog.at_level(logging.WARNING, logger="kedro_prefect.observe.recorder"):
        for each in example_pipeline.nodes[:3]:
            observers.on_node_submitted(each, None)
    assert (boom.calls, counter.calls) == (1, 3)
    assert "_Boom.on_node_submitted failed (RuntimeError: observer bug)" in caplog.text


def _picture_width(svg: str) -> float:
    return float(re.search(r'<svg [^>]*width="(\d+)"', svg).group(1))


@pytest.mark.parametrize("width", [4, 6, 10])
def test_a_namespaced_broad_pipeline_is_drawn_narrow_enough_to_read(width):
    from kedro_prefect.observe.graph_layout import NAME_SIZE, UI_WIDTH

    pipeline = namespaced_broad_pipeline(width)
    svg = render_svg(
        build_graph(pipeline, "t", {n.name: ("completed", 0.1) for n in pipeline.nodes})
    )
    # names shown at >= 11 px once the UI scales the picture to its column
    assert NAME_SIZE * min(1, UI_WIDTH / _picture_width(svg)) >= 11
    nodes = [name for name, css in _svg_items(svg).items() if css.startswith("node ")]
    assert len(nodes) == len(pipeline.nodes)  # every node drawn, none collapsed


def test_the_example_projects_graph_fits_the_uis_column(example_pipeline):
    from kedro_prefect.observe.graph_layout import UI_WIDTH

    svg = render_svg(build_graph(example_pipeline, "t"))
    assert _picture_width(svg) <= UI_WIDTH  # was 958 px: names shown at 9.4 px
