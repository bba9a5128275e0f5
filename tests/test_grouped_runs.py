"""Runs with ``group_by``: a group is one Prefect task run; its nodes run as under SequentialRunner.

In-process runs on Prefect's ephemeral API (thread task runner).
"""

from __future__ import annotations

import logging
import time

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner

from kedro_prefect import PrefectRunner, PrefectRunnerConfigError
from kedro_prefect.errors import NodeGroupingError
from tests import pipelines as p
from tests.test_runner import _latest_flow_run_and_tasks, _run


@pytest.mark.parametrize("group_by", ["namespace", "memory"])
@pytest.mark.parametrize("make_pipeline", [p.namespaced, p.branchless, p.fan_out_fan_in])
def test_grouped_outputs_and_hooks_match_sequential_runner(group_by, make_pipeline):
    seq_out, seq_log, _, _ = _run(SequentialRunner(), make_pipeline())
    out, log, _, _ = _run(PrefectRunner(group_by=group_by), make_pipeline())
    assert out == seq_out
    assert log.per_node() == seq_log.per_node()  # every hook, once per node, same details
    assert sorted(log.names("before_node_run")) == sorted(n.name for n in make_pipeline().nodes)
    assert sorted(log.names("release")) == sorted(seq_log.names("release"))


def test_one_task_run_per_group_and_per_ungrouped_node_named_after_it():
    flow_name = f"grouped-{time.time_ns()}"
    _run(PrefectRunner(flow_name=flow_name, group_by="namespace"), p.namespaced())
    flow_run, task_runs = _latest_flow_run_and_tasks(flow_name, 3)
    assert flow_run.state.is_completed()
    by_name = {t.name: t for t in task_runs}
    assert sorted(by_name) == ["alpha", "beta", "join"]
    assert set(by_name["alpha"].tags) == {"light", "alpha"}
    # join waits for both groups: the UI draws an edge from each
    upstream = {i.id for inputs in by_name["join"].task_inputs.values() for i in inputs}
    assert upstream == {by_name["alpha"].id, by_name["beta"].id}


class Unpicklable:
    """Data that cannot leave the process: pickling it fails the test."""

    pickled = 0

    def __init__(self, value):
        self.value = value

    def __reduce_ex__(self, protocol):
        Unpicklable.pickled += 1
        raise TypeError("a group's in-memory data was pickled")

    def __deepcopy__(self, memo):  # MemoryDataset copies what it hands out
        return Unpicklable(self.value)


def wrap(x):
    return Unpicklable(x)


def unwrap(x):
    return x.value * 10


def test_in_memory_data_inside_a_group_is_never_pickled():
    pipeline = Pipeline(
        [
            node(wrap, "source", "wrapped", name="wrap"),
            node(unwrap, "wrapped", "out", name="unwrap"),
        ],
    )
    pipeline = Pipeline(pipeline, namespace="ns", inputs={"source"}, outputs={"out"})
    Unpicklable.pickled = 0
    for group_by in ("namespace", "memory"):
        outputs = PrefectRunner(group_by=group_by).run(
            pipeline, DataCatalog({"source": MemoryDataset(4)})
        )
        assert outputs["out"].load() == 40
    assert Unpicklable.pickled == 0


def add_one_persisted(x):
    return x + 1


def test_a_failure_inside_a_group_names_the_node_and_resumes_as_sequential_runner(caplog, tmp_path):
    inner = Pipeline(
        [
            node(p.add_one, "x", "a", name="inc"),
            node(p.identity, "a", "kept", name="keep"),
            node(p.boom, "kept", "b", name="explode"),
            node(p.double, "b", "c", name="dbl"),
        ]
    )
    pipeline = Pipeline(inner, namespace="alpha", inputs={"x": "source"})

    def catalog(pipe, log):
        built = p.make_catalog(pipe, log)
        built["alpha.kept"] = p.TextFileDataset(str(tmp_path / "kept.txt"))
        return built

    hints = []
    for runner in (SequentialRunner(), PrefectRunner(group_by="namespace")):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            with pytest.raises(ValueError, match="boom on 2") as excinfo:
                _run(runner, pipeline, catalog)
        assert type(excinfo.value) is ValueError
        hints.append([r.getMessage() for r in caplog.records if "--from-nodes" in r.getMessage()])
    assert hints[0] and hints[1] == hints[0]
    assert '--from-nodes "alpha.explode"' in hints[1][0]


def test_failure_in_a_group_stops_it_and_the_hooks_name_the_node():
    pipeline = Pipeline(
        [
            node(p.add_one, "source", "a", name="inc", namespace="ns"),
            node(p.boom, "a", "b", name="explode", namespace="ns"),
            node(p.double, "b", "c", name="dbl", namespace="ns"),
        ]
    )
    log = p.EventLog()
    hooks = p.RecordingHooks(log)
    with pytest.raises(ValueError, match="boom on 2"):
        PrefectRunner(group_by="namespace").run(
            pipeline, p.make_catalog(pipeline, log), p.hook_manager_with(hooks)
        )
    assert log.names("on_node_error") == ["ns.explode"]
    assert log.names("before_node_run") == ["ns.inc", "ns.explode"]


def test_a_grouping_with_a_cycle_is_refused_before_any_node_runs():
    pipeline = Pipeline(
        [
            node(p.add_one, "source", "a1", name="first", namespace="a"),
            node(p.add_one, "a1", "b1", name="middle", namespace="b"),
            node(p.add_one, "b1", "a2", name="last", namespace="a"),
        ]
    )
    log = p.EventLog()
    with pytest.raises(NodeGroupingError, match=r"a\.first -> b\.middle -> a\.last"):
        PrefectRunner(group_by="namespace").run(
            pipeline, p.make_catalog(pipeline, log), p.hook_manager_with(p.RecordingHooks(log))
        )
    assert not log.names("before_node_run")
    # the same pipeline runs node by node
    outputs = PrefectRunner().run(pipeline, p.make_catalog(pipeline, p.EventLog()))
    assert outputs["a2"].load() == 4


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"group_by": "namespaces"}, "group_by='namespaces'"),
    ],
)
def test_bad_group_by_options_fail_with_one_specific_line(options, expected):
    with pytest.raises(PrefectRunnerConfigError, match=expected):
        PrefectRunner(**options)


@pytest.mark.parametrize("group_by", ["namespace", "memory"])
def test_grouped_on_worker_processes_matches_sequential_and_keeps_group_data_inside(group_by):
    """task_runner=process: a group is one task in a worker process; results come back through
    the driver pickled, so an unpicklable object inside the group would fail the run."""
    seq_out, _, _, _ = _run(SequentialRunner(), p.namespaced())
    out, _, _, _ = _run(PrefectRunner(task_runner="process", group_by=group_by), p.namespaced())
    assert out == seq_out
    pipeline = Pipeline(
        [
            node(wrap, "source", "wrapped", name="wrap"),
            node(unwrap, "wrapped", "out", name="unwrap"),
        ]
    )
    pipeline = Pipeline(pipeline, namespace="ns", inputs={"source"}, outputs={"out"})
    outputs = PrefectRunner(task_runner="process", group_by=group_by).run(
        pipeline, DataCatalog({"source": MemoryDataset(4)})
    )
    assert outputs["out"].load() == 40


def sleep_long(x):
    time.sleep(6)
    return x


def test_a_group_times_out_after_the_sum_of_its_nodes_timeouts():
    from kedro_prefect.errors import NodeTimeoutError

    pipeline = Pipeline(
        [
            node(p.add_one, "source", "a", name="quick", namespace="ns"),
            node(sleep_long, "a", "b", name="slow", namespace="ns"),
        ]
    )
    with pytest.raises(NodeTimeoutError, match=r"timeout_seconds=2\.0 \(group 'ns'"):
        PrefectRunner(group_by="namespace", timeout_seconds=1).run(
            pipeline, DataCatalog({"source": MemoryDataset(1)})
        )
