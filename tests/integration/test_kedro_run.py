"""``kedro run --runner=kedro_prefect.PrefectRunner`` in the example project, as a user types it."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from tests.helpers import eventually, is_final, run_kedro

pytestmark = pytest.mark.integration

OUTPUTS = [
    "data/02_intermediate/orders.parquet",
    "data/02_intermediate/products.parquet",
    "data/03_primary/order_lines.parquet",
    "data/08_reporting/region_report.csv",
    "data/08_reporting/top_products.csv",
]
NODES = 13


def _read(path):
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


@pytest.fixture(scope="module")
def sequential_outputs(tmp_path_factory):
    """The example's outputs under SequentialRunner, the reference."""
    from tests.helpers import EXAMPLE_PROJECT

    project = tmp_path_factory.mktemp("seq") / "sales_demo"
    shutil.copytree(EXAMPLE_PROJECT, project, ignore=shutil.ignore_patterns("*.parquet"))
    result = run_kedro(project, "run")
    assert result.returncode == 0, result.stderr
    return {name: _read(project / name) for name in OUTPUTS}


def _assert_outputs_equal(project, expected):
    for name in OUTPUTS:
        pd.testing.assert_frame_equal(_read(project / name), expected[name])


def test_example_on_ephemeral_api_gives_sequential_outputs(example_project, sequential_outputs):
    result = run_kedro(example_project, "run", "--runner=kedro_prefect.PrefectRunner")
    assert result.returncode == 0, result.stdout + result.stderr
    _assert_outputs_equal(example_project, sequential_outputs)
    log = result.stdout + result.stderr
    assert f"Completed {NODES} out of {NODES} tasks" in log
    assert "Finished in state" not in log  # Prefect's lines go to the task runs' logs in the API
    assert "Running hook" not in log  # the runner's bookkeeping stays out of the node logs


def test_unknown_runner_option_fails_before_any_node(example_project):
    result = run_kedro(
        example_project, "run", "--runner=kedro_prefect.PrefectRunner", "--runner-params=workers=2"
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "unknown PrefectRunner option 'workers'" in output
    assert "Running node" not in output
    assert not (example_project / "data/02_intermediate/orders.parquet").exists()


def test_only_missing_outputs_reruns_only_what_is_missing(example_project, sequential_outputs):
    first = run_kedro(example_project, "run", "--runner=kedro_prefect.PrefectRunner")
    assert first.returncode == 0, first.stderr
    (example_project / "data/08_reporting/top_products.csv").unlink()
    again = run_kedro(
        example_project, "run", "--runner=kedro_prefect.PrefectRunner", "--only-missing-outputs"
    )
    assert again.returncode == 0, again.stderr
    output = again.stdout + again.stderr
    assert "Running 1 out of 13 nodes" in output
    assert "Completed 1 out of 1 tasks" in output
    _assert_outputs_equal(example_project, sequential_outputs)


def test_failing_node_exits_non_zero_with_its_error_and_resume_hint(example_project):
    # A bad parameter makes rank_products fail after ingest has saved its outputs.
    (example_project / "conf/base/parameters.yml").write_text(
        (example_project / "conf/base/parameters.yml").read_text().replace("top_n: 3", "top_n: x")
    )
    result = run_kedro(
        example_project,
        "run",
        "--runner=kedro_prefect.PrefectRunner",
        "--runner-params=max_workers=1",
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "TypeError" in output
    assert '--from-nodes "' in output
    # Nodes that completed before the failure keep their outputs.
    assert (example_project / "data/03_primary/order_lines.parquet").exists()


def test_real_server_records_one_flow_run_with_a_task_run_per_node(
    example_project, sequential_outputs, prefect_server
):
    result = run_kedro(
        example_project,
        "run",
        "--runner=kedro_prefect.PrefectRunner",
        "--runner-params=flow_name=sales-demo-on-server",
        env=prefect_server.env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    _assert_outputs_equal(example_project, sequential_outputs)

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        LogFilter,
        LogFilterTaskRunId,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        with get_client(sync_client=True) as client:
            flow_runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["sales-demo-on-server"]))
            )
            assert len(flow_runs) == 1
            assert flow_runs[0].state.is_completed()
            assert flow_runs[0].name.startswith("sales_demo-__default__-")

            def read():
                return client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id={"any_": [flow_runs[0].id]})
                )

            # Task run states reach the server as events, recorded a moment after the run.
            eventually(lambda: len(runs := read()) == NODES and all(is_final(t) for t in runs))
            task_runs = read()
            assert len(task_runs) == NODES
            assert all(t.state.is_completed() for t in task_runs)
            combine = next(t for t in task_runs if t.name == "combine_regions")
            logs = eventually(
                lambda: client.read_logs(
                    log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[combine.id]))
                )
            )
    messages = "\n".join(log.message for log in logs)
    # The project hook's logger and Kedro's own logger, emitted inside the node's task.
    assert "sales_demo hook: node combine_regions took" in messages
    assert "Saving data to region_report" in messages


def test_profile_naming_a_server_sends_the_run_there_without_an_ephemeral_database(
    example_project, prefect_server, tmp_path
):
    """``PREFECT_API_URL`` set in the active Prefect profile, not in the environment.

    The runner launches the ephemeral API before it has read Prefect's settings; that server
    must see the profile and step aside before creating a database under ``PREFECT_HOME``.
    """
    home = tmp_path / "prefect-home"
    home.mkdir()
    (home / "profiles.toml").write_text(
        f'active = "team"\n\n[profiles.team]\nPREFECT_API_URL = "{prefect_server.api_url}"\n'
    )
    result = run_kedro(
        example_project,
        "run",
        "--runner=kedro_prefect.PrefectRunner",
        "--runner-params=flow_name=sales-demo-from-profile",
        env={"PREFECT_HOME": str(home)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (home / "prefect.db").exists()

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        with get_client(sync_client=True) as client:
            flow_runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["sales-demo-from-profile"]))
            )
    assert [run.state.name for run in flow_runs] == ["Completed"]
