"""PrefectRunner keeps the contract of Kedro's runners: their exception types and messages, their
log lines, and no Prefect chatter where Kedro's runners print none.

In-process runs on Prefect's ephemeral API (one for the whole test session).
"""

from __future__ import annotations

import logging
import time

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner, ThreadRunner

from kedro_prefect import PrefectRunner
from kedro_prefect.errors import KedroPrefectError, RunCancelledError
from kedro_prefect.local_api import EPHEMERAL_API, drain_prefect_workers
from tests import pipelines as p
from tests.helpers import eventually

RUNNER_LOGGERS = ("kedro.runner", "kedro_prefect.runner", "kedro_prefect.scheduling")


def _needs_missing_input() -> Pipeline:
    return Pipeline([node(p.add_one, "not_there", "out", name="needs_it")])


@pytest.mark.parametrize("kedro_runner", [SequentialRunner, ThreadRunner])
def test_missing_input_is_kedros_value_error_with_kedros_message_first(kedro_runner):
    with pytest.raises(ValueError) as kedro_error:
        kedro_runner().run(_needs_missing_input(), DataCatalog())
    with pytest.raises(ValueError) as ours:
        PrefectRunner().run(_needs_missing_input(), DataCatalog())
    assert isinstance(ours.value, KedroPrefectError)  # `kedro run`: "Error: ..." without traceback
    first, *hint = str(ours.value).splitlines()
    assert first == str(kedro_error.value)
    assert hint and "needs_it" in hint[0]


def test_max_workers_below_one_is_kedros_value_error_with_kedros_message_first():
    with pytest.raises(ValueError) as kedro_error:
        ThreadRunner(max_workers=0)
    with pytest.raises(ValueError) as ours:
        PrefectRunner(max_workers=0)
    assert str(ours.value).splitlines()[0] == str(kedro_error.value)
    assert "PrefectRunner option max_workers=0" in str(ours.value)


def _runner_messages(caplog, runner, pipeline: Pipeline) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.INFO):
        runner.run(pipeline, p.make_catalog(pipeline, p.EventLog()))
    return [r.getMessage() for r in caplog.records if r.name.startswith(RUNNER_LOGGERS)]


def _kedro_shape(messages: list[str]) -> list[str]:
    """The lines, with the run time ("... completed successfully in 0.1 sec.") left out."""
    return sorted(m.split(" in ")[0] if "completed successfully" in m else m for m in messages)


@pytest.mark.parametrize("is_async", [False, True])
def test_logs_the_lines_sequential_runner_logs(caplog, is_async):
    pipeline = p.fan_out_fan_in()
    kedro = _runner_messages(caplog, SequentialRunner(is_async=is_async), pipeline)
    ours = _runner_messages(caplog, PrefectRunner(is_async=is_async), pipeline)
    assert any(("synchronous" if not is_async else "Asynchronous") in m for m in kedro)
    # Every line SequentialRunner logs, the same number of times (nodes complete in any order).
    assert _kedro_shape(ours) == _kedro_shape(kedro)


def _records_of_prefect_run_loggers(caplog, flow_name: str) -> list[logging.LogRecord]:
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="prefect"):
        PrefectRunner(flow_name=flow_name).run(
            p.branchless(), p.make_catalog(p.branchless(), p.EventLog())
        )
    return [
        r for r in caplog.records if r.name.startswith(("prefect.task_runs", "prefect.flow_runs"))
    ]


def test_prefects_run_lines_go_to_the_api_not_the_terminal(caplog):
    flow_name = f"quiet-{time.time_ns()}"
    # caplog's handler is on the root logger, where the project's console handler is
    assert _records_of_prefect_run_loggers(caplog, flow_name) == []
    messages = _flow_run_log_messages(flow_name)
    assert "Beginning flow run" in " ".join(messages)
    assert sum("Finished in state Completed()" in m for m in messages) >= len(p.branchless().nodes)


def test_prefects_run_lines_are_on_the_terminal_at_debug(caplog):
    ours = logging.getLogger("kedro_prefect")
    level = ours.level
    ours.setLevel(logging.DEBUG)
    try:
        records = _records_of_prefect_run_loggers(caplog, f"debug-{time.time_ns()}")
    finally:
        ours.setLevel(level)
    messages = [r.getMessage() for r in records]
    assert sum("Finished in state Completed()" in m for m in messages) > len(p.branchless().nodes)


def _flow_run_log_messages(flow_name: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    drain_prefect_workers(timeout=10)
    with temporary_settings({PREFECT_API_URL: EPHEMERAL_API.wait()}):
        with get_client(sync_client=True) as client:
            [flow_run] = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name]))
            )

            def read() -> list[str]:
                logs = client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id]))
                )
                return [log.message for log in logs]

            eventually(lambda: any("Finished in state" in m for m in read()))
            return read()


def test_summary_of_a_cancelled_run_says_cancelled_and_lists_what_completed():
    from prefect.states import Completed
    from rich.console import Console

    from kedro_prefect.observe.base import PipelineRun
    from kedro_prefect.observe.progress import summary

    pipeline = p.branchless()
    run = PipelineRun(pipeline, None, "demo", ["__default__"])
    done = [n.name for n in pipeline.nodes][:2]
    for name in done:
        run.nodes[name].state = Completed()
    run.error = RunCancelledError(2, completed=2, total=len(pipeline.nodes))
    console = Console(width=120, record=True, force_terminal=False)
    console.print(summary(run))
    text = console.export_text()
    assert f"Pipeline cancelled: 2/{len(pipeline.nodes)} nodes completed" in text
    assert "failed" not in text
    assert f"completed: {', '.join(done)}" in text


def test_a_pipeline_with_a_node_that_fails_raises_its_error_like_sequential_runner():
    pipeline = Pipeline([node(p.boom, "source", "x", name="explode")])
    errors = []
    for runner in (SequentialRunner(), PrefectRunner()):
        with pytest.raises(Exception) as error:
            runner.run(pipeline, DataCatalog({"source": MemoryDataset(1)}))
        errors.append(error.value)
    assert type(errors[1]) is type(errors[0])
    assert str(errors[1]) == str(errors[0])
