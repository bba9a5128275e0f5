"""What a piped ``kedro run`` prints under PrefectRunner, next to SequentialRunner's output for
the same pipeline: Kedro's own lines, and little more (issue 15's budget: 1.1x the lines on
threads, 1.25x on a local Dask cluster), whose worker processes (Dask's, or the process pool's)
do not repeat Kedro's "Using 'conf/logging.yml' as logging configuration" line.

Each run is a ``kedro run`` subprocess of a fresh copy of the example project, piped (not a
terminal), at the project's default INFO level, on Prefect's ephemeral API.
"""

from __future__ import annotations

import pytest

from tests.helpers import copy_example_project, run_kedro

pytestmark = pytest.mark.integration

RUNNER = "--runner=kedro_prefect.PrefectRunner"
#: The whole example (13 nodes in the namespaces ingest and regions.*), and one namespace of it.
PIPELINES = {"example": [], "namespaced": ["--pipelines=ingest"]}
BUDGET = {"thread": 1.1, "dask": 1.25}
#: ``--runner-params`` per backend: two Dask workers, so a repeated line would show.
PARAMS = {"thread": "task_runner=thread", "dask": "task_runner=dask,n_workers=2",
          "process": "task_runner=process"}  # fmt: skip
#: Kedro's line when a process first imports ``kedro.framework.project``.
LOGGING_LINE = "Using 'conf/logging.yml' as logging"
SYNC_MODE = "Using synchronous mode for loading and saving data. Use the --async flag"


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _run(tmp_path, name: str, *args: str) -> str:
    project = copy_example_project(tmp_path / name)
    result = run_kedro(project, "run", *args)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> dict[str, str]:
    """SequentialRunner's output for each pipeline: the reference."""
    return {
        pipeline: _run(tmp_path_factory.mktemp(f"seq-{pipeline}"), "sales_demo", *args)
        for pipeline, args in PIPELINES.items()
    }


@pytest.mark.timeout(900)
@pytest.mark.parametrize("task_runner", ["thread", "dask"])
@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_terminal_is_kedros_with_little_more(tmp_path, sequential, pipeline, task_runner):
    if task_runner == "dask":
        pytest.importorskip("prefect_dask", reason="task_runner=dask needs prefect-dask")
    kedro = sequential[pipeline]
    ours = _run(
        tmp_path, "sales_demo", RUNNER, f"--runner-params={PARAMS[task_runner]}",
        *PIPELINES[pipeline],
    )  # fmt: skip
    assert len(_lines(ours)) <= BUDGET[task_runner] * len(_lines(kedro)), ours
    # Kedro's runner lines, as SequentialRunner logs them
    for line in (SYNC_MODE, "Pipeline execution completed successfully"):
        assert kedro.count(line) == ours.count(line) == 1, ours
    nodes = kedro.count("Completed node: ")
    assert (
        ours.count("Completed node: ") == nodes
        and f"Completed {nodes} out of {nodes} tasks" in ours
    )
    # worker processes do not repeat Kedro's logging-configuration line
    assert kedro.count(LOGGING_LINE) == ours.count(LOGGING_LINE) == 1, ours
    # no warning of Kedro's printed more often than under SequentialRunner
    warning = "register_new_resolver() is deprecated"
    assert ours.count(warning) == kedro.count(warning)
    # Prefect's per-run lines are in the API; the ephemeral API's link would be dead: one hint
    for prefect_line in ("Finished in state", "Beginning flow run", "View at http"):
        assert prefect_line not in ours
    assert ours.count("prefect server start") == 1
    # node lines from Dask workers in the project's format, not Prefect's; no cluster lifecycle
    assert " | INFO    | " not in ours
    for dask_line in ("Start worker at", "Nanny at", "Scheduler at", "Creating a new Dask cluster"):
        assert dask_line not in ours


@pytest.mark.timeout(900)
def test_process_workers_do_not_repeat_kedros_logging_line(tmp_path, sequential):
    ours = _run(tmp_path, "sales_demo", RUNNER, f"--runner-params={PARAMS['process']}")
    assert sequential["example"].count(LOGGING_LINE) == ours.count(LOGGING_LINE) == 1, ours
    assert ours.count("Pipeline execution completed successfully") == 1
