"""The pipeline graph, artifact keys and observer isolation, without running a pipeline."""

from __future__ import annotations

import logging
import re
import sys

import pytest
from kedro.pipeline import Pipeline, node

from kedro_prefect.observe.artifacts import graph_key, graph_markdown, mermaid_flowchart, table_key
from kedro_prefect.observe.base import PipelineRun, RunObserver
from kedro_prefect.observe.recorder import _Observers
from tests.helpers import EXAMPLE_PROJECT


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
    markdown = graph_markdown(example_pipeline, ["__default__"])
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
    lines = mermaid_flowchart(pipeline)
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
