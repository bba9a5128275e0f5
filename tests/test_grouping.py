"""Grouping nodes (``group_by``): which units a pipeline gets, and the groupings that are refused.

Pure pipeline logic: no Prefect, no run.
"""

from __future__ import annotations

import random
from graphlib import CycleError, TopologicalSorter

import pytest
from kedro.pipeline import Pipeline, node

from kedro_prefect.config.tasks import TasksConfig
from kedro_prefect.errors import NodeGroupingError
from kedro_prefect.execution.grouping import check_units, group_nodes
from kedro_prefect.execution.task_options import group_task_options, resolve_task_options
from tests import pipelines as p


def _units(pipeline, group_by, in_memory=None):
    grouping = group_nodes(pipeline, group_by, in_memory)
    return {unit.name: [n.name for n in unit.nodes] for unit in grouping.units}


def test_namespace_groups_by_top_level_namespace_and_leaves_other_nodes_single():
    pipeline = Pipeline(
        [
            p.namespaced(),
            Pipeline(
                [node(p.add_one, "z", "deep", name="leaf")],
                namespace="alpha.inner",
                inputs={"z": "alpha.z"},
            ),
        ]
    )
    assert _units(pipeline, "namespace") == {
        "alpha": ["alpha.inc", "alpha.dbl", "alpha.inner.leaf"],
        "beta": ["beta.inc", "beta.dbl"],
        "join": ["join"],
    }


def test_namespace_groups_are_kedros_own_group_nodes_by():
    pipeline = p.namespaced()
    kedro_groups = {g.name: sorted(g.nodes) for g in pipeline.group_nodes_by("namespace")}
    ours = {name: sorted(nodes) for name, nodes in _units(pipeline, "namespace").items()}
    assert ours == kedro_groups


def test_none_is_one_unit_per_node():
    assert _units(p.namespaced(), "none") == {n.name: [n.name] for n in p.namespaced().nodes}


def test_memory_groups_a_chain_in_memory_and_keeps_fan_out_branches_apart():
    assert _units(p.branchless(), "memory") == {"n1..n4": ["n1", "n2", "n3", "n4"]}
    # prepare feeds three nodes: grouping it with one would delay the other two.
    assert all(len(nodes) == 1 for nodes in _units(p.fan_out_fan_in(), "memory").values())
    assert _units(p.namespaced(), "memory") == {
        "alpha.inc..dbl": ["alpha.inc", "alpha.dbl"],
        "beta.inc..dbl": ["beta.inc", "beta.dbl"],
        "join": ["join"],
    }


def test_memory_does_not_group_through_a_persisted_dataset():
    persisted = {"c"}
    units = _units(p.branchless(), "memory", lambda name: name not in persisted)
    assert units == {"n1..n2": ["n1", "n2"], "n3..n4": ["n3", "n4"]}


def test_a_namespace_grouping_with_a_cycle_is_refused_naming_the_group_and_the_nodes():
    pipeline = Pipeline(
        [
            node(p.add_one, "source", "a1", name="first", namespace="a"),
            node(p.add_one, "a1", "b1", name="middle", namespace="b"),
            node(p.add_one, "b1", "a2", name="last", namespace="a"),
        ]
    )
    grouping = group_nodes(pipeline, "namespace")
    with pytest.raises(NodeGroupingError) as excinfo:
        check_units(pipeline, grouping)
    message = str(excinfo.value)
    assert "\n" not in message
    assert "a.first -> b.middle -> a.last" in message
    assert "'a'" in message and "'b'" in message


def test_a_group_mixing_dask_resources_is_refused():
    pipeline = Pipeline(
        [
            node(p.add_one, "source", "a1", name="cpu", namespace="ns"),
            node(p.add_one, "a1", "a2", name="gpu", namespace="ns", tags=["dask-GPU-1"]),
        ]
    )

    def resources(n):
        return {t for t in n.tags if t.startswith("dask-")}

    with pytest.raises(
        NodeGroupingError, match=r"group 'ns' .*ns.cpu \(none\), ns.gpu \(dask-GPU-1\)"
    ):
        check_units(pipeline, group_nodes(pipeline, "namespace"), resources)


# --- random pipelines: a grouping never has a cycle it does not refuse -------------------------


def _random_pipeline(rng: random.Random, size: int) -> Pipeline:
    """A random DAG: node i reads outputs of random earlier nodes, in random namespaces."""
    nodes = []
    for i in range(size):
        parents = rng.sample(range(i), k=min(i, rng.choice([0, 1, 1, 1, 2, 3])))
        inputs = [f"d{j}" for j in parents] or ["source"]
        namespace = rng.choice([None, "a", "b", "c", "a.x"])
        nodes.append(node(p.total, inputs, f"d{i}", name=f"n{i}", namespace=namespace))
    return Pipeline(nodes)


def _quotient_has_cycle(pipeline, grouping) -> bool:
    graph = {u.name: {d.name for d in deps} for u, deps in grouping.dependencies(pipeline).items()}
    try:
        TopologicalSorter(graph).prepare()
    except CycleError:
        return True
    return False


@pytest.mark.parametrize("seed", range(60))
def test_random_pipelines_memory_grouping_never_creates_a_cycle_nor_delays_a_branch(seed):
    rng = random.Random(seed)
    pipeline = _random_pipeline(rng, rng.randint(2, 40))
    persisted = {f"d{i}" for i in range(40) if rng.random() < 0.2}
    grouping = group_nodes(pipeline, "memory", lambda name: name not in persisted)
    assert sorted(n.name for u in grouping.units for n in u.nodes) == sorted(
        n.name for n in pipeline.nodes
    )
    assert not _quotient_has_cycle(pipeline, grouping)
    check_units(pipeline, grouping)  # refuses nothing
    parents = pipeline.node_dependencies
    for unit in grouping.units:
        for before, after in zip(unit.nodes, unit.nodes[1:], strict=False):
            # each node of a group waits for the one before it and nothing else, and that one
            # feeds nothing else: running them together delays no other node
            assert parents[after] == {before}
            assert [n for n in pipeline.nodes if before in parents[n]] == [after]


@pytest.mark.parametrize("seed", range(60))
def test_random_pipelines_namespace_grouping_with_a_cycle_is_always_refused(seed):
    rng = random.Random(1000 + seed)
    pipeline = _random_pipeline(rng, rng.randint(2, 40))
    grouping = group_nodes(pipeline, "namespace")
    order = {n: i for i, n in enumerate(pipeline.nodes)}
    for unit in grouping.units:  # a group's nodes run in dependency order
        assert [order[n] for n in unit.nodes] == sorted(order[n] for n in unit.nodes)
    if _quotient_has_cycle(pipeline, grouping):
        with pytest.raises(NodeGroupingError, match="cycle between groups"):
            check_units(pipeline, grouping)
    else:
        check_units(pipeline, grouping)


# --- task options of a group --------------------------------------------------------------------


def _options(rules, pipeline=None, **defaults):
    pipeline = pipeline or p.namespaced()
    config = TasksConfig.model_validate({"rules": rules})
    return pipeline, resolve_task_options(pipeline, defaults, config)


def test_group_takes_the_most_retries_the_sum_of_timeouts_and_all_tags():
    pipeline, resolved = _options(
        [
            {"node": "alpha.inc", "retries": 3, "timeout_seconds": 2},
            {"node": "alpha.dbl", "retries": 1, "timeout_seconds": 5, "tags": ["heavy"]},
        ]
    )
    nodes = [n for n in pipeline.nodes if n.namespace == "alpha"]
    options = group_task_options("alpha", nodes, resolved)
    assert options.options["retries"] == 3
    assert options.options["timeout_seconds"] == 7.0
    assert "heavy" in options.tags


def test_group_refuses_a_timeout_on_some_nodes_only():
    pipeline, resolved = _options([{"node": "alpha.inc", "timeout_seconds": 2}])
    nodes = [n for n in pipeline.nodes if n.namespace == "alpha"]
    with pytest.raises(
        NodeGroupingError, match=r"group 'alpha' .* timeout_seconds .*alpha\.dbl: None"
    ):
        group_task_options("alpha", nodes, resolved)


# --- what a person sees of groups: node table, graph picture --------------------------------------


def test_node_table_lists_every_node_with_its_group_and_the_picture_outlines_each_group():
    from kedro_prefect.execution.grouping import group_of_nodes
    from kedro_prefect.observe.artifacts import node_table
    from kedro_prefect.observe.base import PipelineRun
    from kedro_prefect.observe.graph import build_graph
    from kedro_prefect.observe.graph_svg import render_svg

    pipeline = p.branchless()
    groups = group_of_nodes(group_nodes(pipeline, "memory"))
    run = PipelineRun(pipeline, None, "demo", ["__default__"])
    run.groups = groups
    rows = node_table(run)
    assert [(r["node"], r["group"]) for r in rows] == [(f"n{i}", "n1..n4") for i in range(1, 5)]
    svg = render_svg(build_graph(pipeline, "demo", groups=groups))
    assert svg.count('<g class="group">') == 1
    assert "<title>group n1..n4: one task run</title>" in svg
    ungrouped = PipelineRun(pipeline, None, "demo", ["__default__"])
    assert "group" not in node_table(ungrouped)[0]
    assert '<g class="group">' not in render_svg(build_graph(pipeline, "demo"))
