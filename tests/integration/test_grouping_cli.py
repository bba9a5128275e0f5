"""``group_by`` as a user types it: ``kedro run`` and ``kedro prefect check`` in the example."""

from __future__ import annotations

import pytest

from tests.helpers import run_kedro
from tests.integration.test_kedro_run import NODES, _assert_outputs_equal, sequential_outputs

pytestmark = pytest.mark.integration
__all__ = ["sequential_outputs"]  # the module fixture, shared


@pytest.mark.parametrize("group_by", ["namespace", "memory"])
def test_grouped_kedro_run_gives_sequential_outputs(example_project, sequential_outputs, group_by):
    result = run_kedro(
        example_project,
        "run",
        "--runner=kedro_prefect.PrefectRunner",
        f"--runner-params=group_by={group_by}",
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    _assert_outputs_equal(example_project, sequential_outputs)
    assert f"Completed {NODES} out of {NODES} tasks" in log


def test_check_prints_the_groups_their_nodes_and_what_crosses(example_project):
    result = run_kedro(example_project, "prefect", "check", "--group-by", "namespace")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "group_by=namespace: 13 nodes run as 4 task runs (2 groups, 2 single nodes)" in out
    assert "group ingest (namespace, 3 nodes): ingest.clean_orders" in out
    assert "  node rank_products" in out
    assert "  ingest -> regions: order_lines" in out


def test_check_and_run_refuse_a_group_whose_nodes_have_conflicting_timeouts(example_project):
    (example_project / "conf/base/prefect.yml").write_text(
        "runner:\n  group_by: namespace\n"
        "tasks:\n  rules:\n    - node: regions.east.select\n      timeout_seconds: 30\n"
    )
    check = run_kedro(example_project, "prefect", "check")
    assert check.returncode == 1
    error = [line for line in check.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1
    assert "group 'regions'" in error[0] and "timeout_seconds" in error[0]
    assert "regions.east.select: 30.0" in error[0]
    run = run_kedro(example_project, "run", "--runner=kedro_prefect.PrefectRunner")
    assert run.returncode != 0
    assert "group 'regions'" in run.stdout + run.stderr
    assert not (example_project / "data/08_reporting/region_report.csv").exists()


def test_deploy_refuses_a_deployment_whose_grouping_cannot_run(example_project, prefect_server):
    import uuid

    import yaml

    flow_name = f"grouped-{uuid.uuid4().hex[:8]}"
    (example_project / "conf/base/prefect.yml").write_text(
        yaml.safe_dump(
            {
                "runner": {"flow_name": flow_name},
                "tasks": {"rules": [{"node": "regions.east.select", "retry_delay_seconds": 5}]},
                "deployments": {
                    "plain": {},
                    "grouped": {"runner": {"group_by": "namespace"}},
                },
            }
        )
    )
    result = run_kedro(example_project, "prefect", "deploy", env=prefect_server.env, timeout=180)
    assert result.returncode == 1, result.stdout + result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1
    assert "deployment 'grouped': group 'regions'" in error[0]
    assert "retry_delay_seconds" in error[0]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings({PREFECT_API_URL: prefect_server.api_url}),
        get_client(sync_client=True) as client,
    ):
        flows = FlowFilter(name=FlowFilterName(any_=[flow_name]))
        assert client.read_deployments(flow_filter=flows) == []  # nothing half-deployed
