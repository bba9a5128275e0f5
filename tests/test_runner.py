"""PrefectRunner gives what SequentialRunner gives: same outputs, same hook calls per node.

These tests run pipelines in-process on Prefect's ephemeral API (one for the whole test session).
"""

from __future__ import annotations

import logging
import time

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner

from kedro_prefect import PrefectRunner, PrefectRunnerConfigError
from kedro_prefect.local_api import EPHEMERAL_API, drain_prefect_workers
from tests import pipelines as p
from tests.helpers import eventually, is_final


def _run(runner, pipeline: Pipeline, catalog_factory=p.make_catalog, **run_kwargs):
    log = p.EventLog()
    hooks = p.RecordingHooks(log)
    catalog = catalog_factory(pipeline, log)
    result = runner.run(pipeline, catalog, p.hook_manager_with(hooks), **run_kwargs)
    loaded = {name: ds.load() for name, ds in result.items()}
    return loaded, log, hooks, catalog


def _assert_same_as_sequential(pipeline: Pipeline, **runner_kwargs):
    seq_out, seq_log, _, _ = _run(SequentialRunner(**runner_kwargs), pipeline)
    pre_out, pre_log, _, _ = _run(PrefectRunner(**runner_kwargs), pipeline)
    assert pre_out == seq_out
    if runner_kwargs.get("is_async"):
        # Loads and saves of one node overlap in threads: compare the calls, not their order.
        assert _sorted_events(pre_log) == _sorted_events(seq_log)
    else:
        assert pre_log.per_node() == seq_log.per_node()
    assert sorted(pre_log.names("release")) == sorted(seq_log.names("release"))
    return pre_log


def _sorted_events(log: p.EventLog):
    return {name: sorted(events, key=repr) for name, events in log.per_node().items()}


@pytest.mark.parametrize(
    "make_pipeline", [p.fan_out_fan_in, p.branchless, p.namespaced, p.generator]
)
def test_outputs_hooks_and_releases_match_sequential_runner(make_pipeline):
    log = _assert_same_as_sequential(make_pipeline())
    assert log.names("before_node_run")  # the hooks really fired


def test_async_load_and_save_match_sequential_runner():
    log = _assert_same_as_sequential(p.fan_out_fan_in(), is_async=True)
    assert all(detail[1] is True for _, detail in log.per_node()["gather"] if _ == "after_node_run")


def test_async_generator_node_is_refused_like_sequential_runner():
    with pytest.raises(ValueError, match="Async data loading and saving does not work"):
        _run(SequentialRunner(is_async=True), p.generator())
    with pytest.raises(ValueError, match="Async data loading and saving does not work"):
        _run(PrefectRunner(is_async=True), p.generator())


def test_memory_datasets_are_released_as_soon_as_their_last_consumer_is_done():
    _, log, _, _ = _run(PrefectRunner(), p.branchless())
    # "b" is consumed only by n2: it is released before n3 (which runs after n2) starts.
    assert log.index("release", "b") < log.index("before_node_run", "n3")
    assert log.index("release", "c") < log.index("before_node_run", "n4")
    # The free output "e" is returned, not released.
    assert "e" not in log.names("release")


def test_confirms_are_confirmed():
    pipeline = Pipeline([node(add_one_confirming, "source", "out", confirms="checkpoint")])

    def catalog(pipe, log):
        return DataCatalog(
            {
                "source": MemoryDataset(1),
                "checkpoint": p.ConfirmableDataset("checkpoint", log),
            }
        )

    for runner in (SequentialRunner(), PrefectRunner()):
        _, log, _, _ = _run(runner, pipeline, catalog_factory=catalog)
        assert log.names("confirm") == ["checkpoint"]


def add_one_confirming(x):
    return x + 1


def test_only_missing_outputs_runs_the_same_nodes(tmp_path):
    pipeline = Pipeline(
        [
            node(p.add_one, "source", "kept", name="make_kept"),
            node(p.double, "kept", "missing", name="make_missing"),
        ]
    )
    (tmp_path / "kept.txt").write_text("41")

    def catalog(pipe, log):
        return DataCatalog(
            {
                "source": MemoryDataset(1),
                "kept": p.TextFileDataset(str(tmp_path / "kept.txt")),
                "missing": p.TextFileDataset(str(tmp_path / "missing.txt")),
            }
        )

    ran = {}
    for runner in (SequentialRunner(), PrefectRunner()):
        (tmp_path / "missing.txt").unlink(missing_ok=True)
        _, log, _, _ = _run(runner, pipeline, catalog_factory=catalog, only_missing_outputs=True)
        ran[type(runner).__name__] = log.names("before_node_run")
        assert (tmp_path / "missing.txt").read_text() == "82"
    assert ran["PrefectRunner"] == ran["SequentialRunner"] == ["make_missing"]


def test_run_returns_what_sequential_runner_returns():
    seq = SequentialRunner().run(
        p.fan_out_fan_in(), p.make_catalog(p.fan_out_fan_in(), p.EventLog())
    )
    pre = PrefectRunner().run(p.fan_out_fan_in(), p.make_catalog(p.fan_out_fan_in(), p.EventLog()))
    assert set(pre) == set(seq) == {"summed"}
    assert pre["summed"].load() == seq["summed"].load()


# --- dependency wiring --------------------------------------------------------------------------


def test_fast_branch_never_waits_for_a_slow_sibling():
    """The slow node only returns once the fast branch is done; two threads must suffice.

    A runner with layer barriers (or one that parks waiting tasks on its threads) would hold
    fast2/fast3 back behind the slow node, which then times out.
    """
    p.FAST_BRANCH_DONE.clear()
    pipeline = Pipeline(
        [
            node(p.wait_for_fast_branch, "source", "slow_out", name="slow"),
            node(p.add_one, "source", "f1", name="fast1"),
            node(p.add_one, "f1", "f2", name="fast2"),
            node(p.finish_fast_branch, "f2", "f3", name="fast3"),
            node(p.total, ["slow_out", "f3"], "joined", name="join"),
        ]
    )
    out, log, _, _ = _run(PrefectRunner(max_workers=2), pipeline)
    assert out == {"joined": 1 + 4}
    assert log.index("after_node_run", "fast3") < log.index("after_node_run", "slow")
    assert log.index("after_node_run", "slow") < log.index("before_node_run", "join")


# --- failure ------------------------------------------------------------------------------------


def test_failing_node_raises_its_own_exception_and_starts_nothing_new(caplog):
    pipeline = Pipeline(
        [
            node(p.add_one, "source", "ok", name="first"),
            node(p.boom, "ok", "never", name="explode"),
            node(p.slow, "source", "slow_out", name="slow_sibling"),
            node(p.add_one, "slow_out", "late", name="after_slow"),
            node(p.add_one, "never", "never2", name="after_boom"),
        ]
    )
    caplog.set_level(logging.WARNING)
    with pytest.raises(ValueError, match="boom on 2"):
        _run(SequentialRunner(), pipeline)
    with pytest.raises(ValueError, match="boom on 2") as excinfo:
        log = p.EventLog()
        hooks = p.RecordingHooks(log)
        PrefectRunner().run(pipeline, p.make_catalog(pipeline, log), p.hook_manager_with(hooks))
    assert type(excinfo.value) is ValueError
    assert log.names("on_node_error") == ["explode"]
    started = set(log.names("before_node_run"))
    # slow_sibling was already running and finishes; nothing new starts after the failure.
    assert "after_slow" not in started
    assert "after_boom" not in started
    assert '--from-nodes "' in caplog.text


# --- options ------------------------------------------------------------------------------------


def test_unknown_option_names_it_and_the_valid_ones():
    with pytest.raises(PrefectRunnerConfigError) as excinfo:
        PrefectRunner(max_worker=3)
    message = str(excinfo.value)
    assert "'max_worker'" in message
    for valid in ("task_runner", "max_workers", "flow_name", "is_async"):
        assert valid in message


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"max_workers": 0}, "max_workers=0"),
        ({"max_workers": "many"}, "max_workers='many'"),
        ({"task_runner": "threads"}, "unknown task runner 'threads'"),
        ({"task_runner": "no_such_module.Runner"}, "cannot import it"),
        ({"task_runner": "logging.Logger"}, "is not a subclass of prefect.task_runners.TaskRunner"),
        ({"flow_name": " "}, "must not be empty"),
    ],
)
def test_bad_option_values_fail_with_a_specific_message(options, expected):
    with pytest.raises(PrefectRunnerConfigError, match="PrefectRunner") as excinfo:
        PrefectRunner(**options)
    assert expected in str(excinfo.value)


def test_task_runner_by_import_path():
    runner = PrefectRunner(task_runner="prefect.task_runners.ThreadPoolTaskRunner", max_workers=1)
    out, _, _, _ = _run(runner, p.fan_out_fan_in())
    assert out == {"summed": 2 * 2 + 3 + 2 - 2}


# --- what Prefect records -----------------------------------------------------------------------


def _latest_flow_run_and_tasks(flow_name: str, nodes: int):
    """The flow's latest flow run, and its task runs once ``nodes`` of them are final."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    drain_prefect_workers(timeout=10)  # task run states reach the API as events
    with temporary_settings({PREFECT_API_URL: EPHEMERAL_API.wait()}):
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                sort=FlowRunSort.START_TIME_DESC,
                limit=1,
            )[0]

            def read():
                return client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id={"any_": [flow_run.id]})
                )

            eventually(lambda: len(runs := read()) == nodes and all(is_final(t) for t in runs))
            task_runs = read()
    return flow_run, task_runs


def test_one_flow_run_with_one_named_tagged_task_run_per_node():
    flow_name = f"namespaced-{time.time_ns()}"
    _run(PrefectRunner(flow_name=flow_name), p.namespaced())
    flow_run, task_runs = _latest_flow_run_and_tasks(flow_name, len(p.namespaced().nodes))
    assert flow_run.state.is_completed()
    by_name = {t.name: t for t in task_runs}
    assert set(by_name) == {n.name for n in p.namespaced().nodes}
    assert all(t.state.is_completed() for t in task_runs)
    assert set(by_name["alpha.inc"].tags) == {"light", "alpha"}
    assert set(by_name["beta.dbl"].tags) == {"beta"}
    assert by_name["join"].tags == []
    # The task runs record their upstream task runs, so the Prefect UI draws the DAG.
    upstream = {i.id for inputs in by_name["join"].task_inputs.values() for i in inputs}
    assert upstream == {by_name["alpha.dbl"].id, by_name["beta.dbl"].id}


def test_failed_node_fails_the_flow_run():
    flow_name = f"failing-{time.time_ns()}"
    pipeline = Pipeline([node(p.boom, "source", "x", name="explode")])
    with pytest.raises(ValueError, match="boom"):
        _run(PrefectRunner(flow_name=flow_name), pipeline)
    flow_run, task_runs = _latest_flow_run_and_tasks(flow_name, 1)
    assert flow_run.state.is_failed()
    assert [t.state.is_failed() for t in task_runs] == [True]


def test_a_chain_of_namespaced_nodes_runs_without_prefects_deadlock_warning(caplog):
    """A chain gets a one-thread pool; each node has a tag (its namespace) and an upstream.

    Prefect warns that such a task, submitted with ``wait_for``, may dead-lock the pool. It
    cannot here: a node is submitted only once its producers are done (their task runs are
    recorded as its inputs, not waited for), so the user must not see the warning.
    """
    pipeline = Pipeline(
        [
            node(p.add_one, "source", "a", name="first", namespace="prep"),
            node(p.add_one, "a", "b", name="second", namespace="prep"),
            node(p.add_one, "b", "c", name="third", namespace="prep"),
        ]
    )
    catalog = DataCatalog({"source": MemoryDataset(1)})
    with caplog.at_level(logging.WARNING):
        outputs = PrefectRunner().run(pipeline, catalog)
    assert outputs["c"].load() == 4
    assert not [r.getMessage() for r in caplog.records if "dead-lock" in r.getMessage()]
