"""Groups of nodes on Prefect work pools (``infrastructure:``), against a real server.

Two ``process`` work pools, each served by a real ``prefect worker``; the example project with
its ``ingest`` namespace mapped to the second pool. The parent run starts ``kedro run`` here (or
from a deployment on the first pool); the group runs as a child flow run in the second pool's
worker.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import uuid

import pandas as pd
import pytest
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentTaskRunId

from tests.helpers import KEDRO, PREFECT, ProcessGroup, run_kedro
from tests.integration.deploy_support import (
    api,
    final_run,
    kedro,
    ok,
    one_error_line,
    read_deployment,
    run_deployment,
    wait,
    write_prefect_yml,
)
from tests.integration.test_process import OUTPUTS, _example, _read

pytestmark = pytest.mark.integration

INGEST = ["ingest.clean_orders", "ingest.clean_products", "ingest.join_lines"]


@pytest.fixture(scope="module")
def pools(prefect_server, tmp_path_factory):
    """Two process work pools on the server, a ``prefect worker`` each (stopped by PID)."""
    suffix = uuid.uuid4().hex[:6]
    names = (f"first-{suffix}", f"second-{suffix}")
    home = tmp_path_factory.mktemp("workers")
    workers = []
    try:
        for name in names:
            create = [PREFECT, "work-pool", "create", name, "--type", "process"]
            ok(
                subprocess.run(
                    create,
                    env={**os.environ, **prefect_server.env},
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
            )
            worker = ProcessGroup(
                [PREFECT, "worker", "start", "--pool", name, "--type", "process"],
                home,
                {**prefect_server.env, "PREFECT_WORKER_QUERY_SECONDS": "1", "COLUMNS": "300"},
                home / f"{name}.log",
            )
            workers.append(worker)
        for worker in workers:
            worker.wait_for_output("started")
        yield names, workers
    finally:
        for worker in workers:
            worker.stop()


def _child_runs(client, parent):
    """The flow runs started as subflows of a task run of ``parent``."""
    tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [parent.id]}))
    return client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            parent_task_run_id=FlowRunFilterParentTaskRunId(any_=[t.id for t in tasks])
        )
    )


def _parent(client, flow: str):
    """The one top-level flow run of flow ``flow`` (a name of the test's own: the server is
    shared with other tests)."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])))
    (parent,) = [run for run in runs if run.parent_task_run_id is None]
    return parent


def test_a_namespace_runs_as_a_child_flow_run_on_its_pool(tmp_path, prefect_server, pools):
    (_, second), (_, second_worker) = pools
    sequential = _example(tmp_path, "seq")
    assert run_kedro(sequential, "run").returncode == 0
    project = _example(tmp_path, "pooled")
    job_variables = {"env": {"SALES_DEMO_POOL": second}}
    flow = f"pooled-{uuid.uuid4().hex[:6]}"
    write_prefect_yml(
        project,
        {
            "runner": {"flow_name": flow},
            "infrastructure": {"ingest": {"work_pool": second, "job_variables": job_variables}},
        },
    )

    result = run_kedro(
        project,
        "run",
        "--runner=kedro_prefect.PrefectRunner",
        env=prefect_server.env,
        timeout=600,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log + second_worker.output()[-5000:]
    for name in OUTPUTS:
        pd.testing.assert_frame_equal(_read(project / name), _read(sequential / name))
    assert "Completed 13 out of 13 tasks" in log
    assert "child flow run 'sales_demo-__default__-" in log and f"on work pool '{second}'" in log
    # The group's nodes ran in the worker's process, not in `kedro run`'s.
    worker_log = second_worker.output()
    for node in INGEST:
        short = node.split(".")[1]
        assert f"Running node: {short}" in worker_log, worker_log[-4000:]
        assert f"Running node: {short}" not in log
    assert "Running node: combine_regions" in log

    with api(prefect_server) as client:
        parent = _parent(client, flow)
        assert parent.state.is_completed()
        (child,) = _child_runs(client, parent)
        assert child.work_pool_name == second
        assert child.state.is_completed()
        assert child.name == f"{parent.name}-ingest"
        assert child.parameters["nodes"] == INGEST
        assert child.infrastructure_pid  # started by the worker, as a process of its own
        # The group's deployment carries the entry's job variables to the pool.
        group = client.read_deployment(child.deployment_id)
        assert group.name == "group-ingest" and group.job_variables == job_variables


def test_a_node_failing_in_the_child_fails_the_parent_naming_it(tmp_path, prefect_server, pools):
    (_, second), _ = pools
    project = _example(tmp_path, "failing")
    write_prefect_yml(project, {"infrastructure": {"ingest": {"work_pool": second}}})
    result = run_kedro(
        project,
        "run",
        "--runner=kedro_prefect.PrefectRunner",
        "--params=min_quantity=not-a-number",
        env=prefect_server.env,
        timeout=600,
    )
    line = one_error_line(result)
    assert line.startswith("Error: Node 'ingest.clean_orders' failed in child flow run"), line
    assert f"on work pool '{second}'" in line and "TypeError" in line
    assert "No nodes ran. Repeat the previous command" in result.stdout + result.stderr
    assert not (project / "data" / "08_reporting" / "region_report.csv").exists()


def test_in_memory_data_crossing_into_a_pool_is_refused_before_any_node(
    tmp_path, prefect_server, pools
):
    (_, second), _ = pools
    project = _example(tmp_path, "crossing")
    write_prefect_yml(project, {"infrastructure": {"regions": {"work_pool": second}}})
    with api(prefect_server) as client:
        before = len(client.read_flow_runs())
    line = one_error_line(
        run_kedro(project, "run", "--runner=kedro_prefect.PrefectRunner", env=prefect_server.env)
    )
    assert "in-memory datasets cannot cross into or out of a group run on a work pool" in line
    assert "regions.north.summary (regions.north.summarize -> combine_regions)" in line
    assert "conf/<env>/catalog.yml" in line and "No node has run." in line
    assert not list((project / "data").rglob("*.parquet"))  # nothing written
    with api(prefect_server) as client:
        assert len(client.read_flow_runs()) == before  # not even a flow run was started
    # The same check, without a run: `kedro prefect check`.
    line = one_error_line(kedro(project, prefect_server, "check"))
    assert "regions.west.summary" in line


def test_a_deployment_on_one_pool_runs_its_group_on_the_other(tmp_path, prefect_server, pools):
    (first, second), (first_worker, second_worker) = pools
    project = _example(tmp_path, "deployed")
    flow = f"pooled-{uuid.uuid4().hex[:6]}"
    write_prefect_yml(
        project,
        {
            "runner": {"flow_name": flow},
            "deployments": {
                "nightly": {
                    "work_pool": first,
                    "infrastructure": {"ingest": {"work_pool": second}},
                }
            },
        },
    )
    out = ok(kedro(project, prefect_server, "deploy"))
    assert "nightly" in out
    out = ok(kedro(project, prefect_server, "check"))  # prefect.yml's top level maps nothing
    assert "work pool" not in out
    with api(prefect_server) as client:
        deployment = read_deployment(client, flow, "nightly")
        run_deployment(prefect_server, f"{flow}/nightly")
        parent = wait(lambda: final_run(client, deployment.id), "the deployed run", first_worker)
        assert parent.state.is_completed(), (parent.state, first_worker.output()[-4000:])
        assert parent.work_pool_name == first
        (child,) = _child_runs(client, parent)
        assert child.work_pool_name == second and child.state.is_completed()
    assert (project / "data" / "08_reporting" / "region_report.csv").exists()
    assert re.search(r"Running node: join_lines", second_worker.output())
    # The group's deployment is the run's business: `kedro prefect list` shows only nightly.
    listed = ok(kedro(project, prefect_server, "list"))
    assert "nightly" in listed and "group-ingest" not in listed


def test_ctrl_c_cancels_the_child_flow_run_with_the_run(tmp_path, prefect_server, pools):
    idle = f"idle-{uuid.uuid4().hex[:6]}"  # a pool no worker serves: the child waits there
    ok(
        subprocess.run(
            [PREFECT, "work-pool", "create", idle, "--type", "process"],
            env={**os.environ, **prefect_server.env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    )
    project = _example(tmp_path, "cancelled")
    flow = f"cancelled-{uuid.uuid4().hex[:6]}"
    write_prefect_yml(
        project,
        {"runner": {"flow_name": flow}, "infrastructure": {"ingest": {"work_pool": idle}}},
    )
    run = ProcessGroup(
        [KEDRO, "run", "--runner=kedro_prefect.PrefectRunner"],
        project,
        {**prefect_server.env, "COLUMNS": "300"},
        tmp_path / "run.log",
    )
    try:
        run.wait_for_output(f"on work pool '{idle}'", timeout=180)
        run.process.send_signal(signal.SIGINT)
        assert run.exit_code(timeout=120) == 130, run.output()[-4000:]
    finally:
        run.stop()
    with api(prefect_server) as client:
        parent = _parent(client, flow)
        assert parent.state.is_cancelled(), parent.state
        (child,) = _child_runs(client, parent)
        assert child.work_pool_name == idle and child.state.is_cancelled(), child.state


def test_deploy_refuses_a_crossing_or_a_missing_pool_and_deploys_nothing(
    tmp_path, prefect_server, pools
):
    (first, second), _ = pools
    project = _example(tmp_path, "deploy-refused")
    flow = f"refused-{uuid.uuid4().hex[:6]}"
    deployments = {
        "plain": {"work_pool": first},
        "crossing": {"work_pool": first, "infrastructure": {"regions": {"work_pool": second}}},
    }
    write_prefect_yml(project, {"runner": {"flow_name": flow}, "deployments": deployments})
    line = one_error_line(kedro(project, prefect_server, "deploy"))
    assert line.startswith("Error: deployment 'crossing': infrastructure: in-memory datasets")
    assert "regions.east.summary (regions.east.summarize -> combine_regions)" in line

    deployments["crossing"]["infrastructure"] = {"ingest": {"work_pool": "no-such-pool"}}
    write_prefect_yml(project, {"runner": {"flow_name": flow}, "deployments": deployments})
    line = one_error_line(kedro(project, prefect_server, "deploy"))
    assert "work pool 'no-such-pool' does not exist" in line
    with api(prefect_server) as client:
        from prefect.client.schemas.filters import FlowFilter, FlowFilterName

        flows = FlowFilter(name=FlowFilterName(any_=[flow]))
        assert client.read_deployments(flow_filter=flows) == []  # nothing half-deployed
