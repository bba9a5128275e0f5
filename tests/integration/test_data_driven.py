"""Data-driven runs against a real ``prefect server``: dataset events and dataset triggers.

Every test drives the real ``kedro`` CLI in a copy of the example project; events, deployments,
automations and flow runs are read back from the session's server (and its SQLite file).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowFilter,
    FlowFilterName,
)

from tests.helpers import KEDRO, api_client, eventually, is_final, latest_flow_run, run_kedro

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-" + uuid.uuid4().hex
PERSISTED = {"ingest.orders", "ingest.products", "order_lines", "region_report", "top_products"}


def _events(server, **filters) -> list[dict]:
    """Events stored by the server (``POST /events/filter``), oldest first."""
    import httpx

    body = {"filter": {"order": "ASC", **filters}, "limit": 50}
    response = httpx.post(f"{server.api_url}/events/filter", json=body, timeout=30)
    response.raise_for_status()
    return response.json()["events"]


def _saved_events_of(server, flow_run_id) -> list[dict]:
    return _events(
        server,
        event={"name": ["kedro.dataset.saved"]},
        related={"resources_in_roles": [[f"prefect.flow-run.{flow_run_id}", "flow-run"]]},
    )


def _write(project: Path, relative: str, content: dict) -> None:
    (project / relative).write_text(yaml.safe_dump(content, sort_keys=False))


def _run(project: Path, server, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_kedro(project, *args, env=server.env)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


@pytest.mark.parametrize("task_runner", ["thread", "dask"])
def test_each_saved_persisted_dataset_is_one_event_with_names_only(
    example_project, prefect_server, task_runner
):
    if task_runner == "dask":
        pytest.importorskip("prefect_dask")
    (example_project / "conf" / "local" / "credentials.yml").write_text(
        yaml.safe_dump({"warehouse": {"user": "kedro", "password": SECRET}})
    )
    _write(
        example_project,
        "conf/local/catalog.yml",
        {
            "order_lines": {
                "type": "pandas.ParquetDataset",
                "filepath": "data/03_primary/order_lines.parquet",
                "versioned": True,
            },
            # A credential, and a file path with the credential's value in it.
            "region_report": {
                "type": "pandas.CSVDataset",
                "filepath": f"data/08_reporting/{SECRET}/region_report.csv",
                "credentials": "warehouse",
            },
        },
    )
    flow_name = f"events-{uuid.uuid4().hex[:8]}"
    params = f"flow_name={flow_name},task_runner={task_runner}"
    if task_runner == "dask":
        params += ",n_workers=1,threads_per_worker=2"
    _run(
        example_project,
        prefect_server,
        "run",
        "--runner=kedro_prefect.PrefectRunner",
        f"--runner-params={params}",
    )

    with api_client(prefect_server) as client:
        flow_run = latest_flow_run(client, flow_name)
    events = eventually(
        lambda: (e := _saved_events_of(prefect_server, flow_run.id)) and len(e) >= 5 and e,
        timeout=60,
    )
    time.sleep(2)  # any extra event would have arrived by now
    events = _saved_events_of(prefect_server, flow_run.id)
    # One event per persisted dataset; none for the eight in-memory regions.* datasets.
    assert sorted(e["payload"]["dataset"] for e in events) == sorted(PERSISTED)
    by_dataset = {e["payload"]["dataset"]: e for e in events}
    lines = by_dataset["order_lines"]
    assert lines["resource"]["prefect.resource.id"] == "kedro.dataset.sales_demo.order_lines"
    (version_dir,) = (example_project / "data/03_primary/order_lines.parquet").iterdir()
    assert lines["payload"]["version"] == version_dir.name
    assert lines["resource"]["kedro.dataset.version"] == version_dir.name
    assert "version" not in by_dataset["top_products"]["payload"]
    related = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in lines["related"]}
    assert related["kedro-env"] == "kedro.env.sales_demo.local"
    assert related["kedro-pipeline"] == "kedro.pipeline.sales_demo.__default__"
    assert related["kedro-node"] == "kedro.node.sales_demo.ingest.join_lines"
    assert related["flow-run"] == f"prefect.flow-run.{flow_run.id}"
    assert related["task-run"].startswith("prefect.task-run.")
    # Nothing of the dataset's configuration, credentials or file path reached the server.
    stored = b"".join(p.read_bytes() for p in prefect_server.home.glob("*.db*"))
    assert b"region_report" in stored  # the event is in the database file...
    assert SECRET.encode() not in stored  # ...without the secret anywhere in it


def test_dataset_events_can_be_turned_off(example_project, prefect_server):
    flow_name = f"quiet-{uuid.uuid4().hex[:8]}"
    _run(
        example_project,
        prefect_server,
        "run",
        "--runner=kedro_prefect.PrefectRunner",
        "--pipeline=ingest",
        f"--runner-params=flow_name={flow_name},dataset_events=false",
    )
    with api_client(prefect_server) as client:
        flow_run = latest_flow_run(client, flow_name)
        # The run's own task-run events arrive: by then any dataset event would have too.
        eventually(
            lambda: _events(
                prefect_server,
                related={"resources_in_roles": [[f"prefect.flow-run.{flow_run.id}", "flow-run"]]},
            )
        )
    time.sleep(2)
    assert _saved_events_of(prefect_server, flow_run.id) == []


def _flow_runs_of(client, deployment_id) -> list:
    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    )


def _wait(get, serve, log: Path, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = get()
        if value:
            return value
        if serve.poll() is not None:
            pytest.fail(f"kedro prefect serve exited:\n{log.read_text()[-5000:]}")
        time.sleep(0.5)
    pytest.fail(f"timed out; serve log:\n{log.read_text()[-5000:]}")


def test_downstream_deployments_run_once_when_upstream_runs_save_their_datasets(
    example_project, prefect_server, tmp_path
):
    flow_name = f"chained-{uuid.uuid4().hex[:8]}"
    _write(
        example_project,
        "conf/base/prefect.yml",
        {
            "runner": {"flow_name": flow_name},
            "deployments": {
                # Any save of order_lines runs the per-region summaries (kept in memory: the
                # downstream runs save nothing that would trigger the other deployment).
                "report": {"pipeline": "regions", "on_dataset_saved": ["order_lines"]},
                # Runs once both were saved within the hour, here by two separate runs.
                "both": {
                    "pipeline": "regions",
                    "on_dataset_saved": ["ingest.orders", "sales_demo.top_products"],
                    "on_dataset_saved_all_within": 3600,
                },
            },
        },
    )
    deployed = run_kedro(example_project, "prefect", "deploy", env=prefect_server.env)
    assert deployed.returncode == 0, deployed.stderr  # serve serves what is deployed
    log = tmp_path / "serve.log"
    serve = subprocess.Popen(
        [KEDRO, "prefect", "serve"],
        cwd=example_project,
        env={**os.environ, **prefect_server.env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        stdout=open(log, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    deployments: dict = {}
    with api_client(prefect_server) as client:
        try:
            _chain(client, example_project, prefect_server, flow_name, serve, log, deployments)
        finally:
            serve.send_signal(signal.SIGINT)
            try:
                serve.wait(timeout=60)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait(timeout=30)
            for deployment in deployments.values():  # its triggers go with it
                client.delete_deployment(deployment.id)


def _chain(client, example_project, prefect_server, flow_name, serve, log, deployments):
    """Upstream runs save datasets; the served downstream deployments run, once each."""
    deployments.update(_wait(lambda: _deployments(client, flow_name, 2), serve, log))
    report, both = deployments["report"], deployments["both"]

    # Upstream: a plain `kedro run` of the ingest pipeline saves order_lines (and
    # ingest.orders, ingest.products): the report runs, exactly once.
    _run(
        example_project,
        prefect_server,
        "run",
        "--runner=kedro_prefect.PrefectRunner",
        "--pipeline=ingest",
        "--runner-params=flow_name=upstream-" + flow_name,
    )
    upstream = latest_flow_run(client, "upstream-" + flow_name)
    (run,) = _wait(lambda: _final_runs(client, report.id), serve, log)
    assert run.state.is_completed(), run.state
    assert run.name.startswith("sales_demo-regions-")
    trigger = run.parameters["trigger"]
    assert trigger["dataset"] == "order_lines"
    assert trigger["project"] == "sales_demo"
    assert trigger["flow_run"] == str(upstream.id)
    assert trigger["event"] == "kedro.dataset.saved"
    # The downstream flow run names its upstream flow run in a related resource.
    linked = eventually(
        lambda: _events(
            prefect_server,
            event={"name": ["kedro.run.triggered"]},
            related={
                "resources_in_roles": [[f"prefect.flow-run.{upstream.id}", "upstream-flow-run"]]
            },
        )
    )
    assert [e["resource"]["prefect.resource.id"] for e in linked] == [f"prefect.flow-run.{run.id}"]
    # Only one of the two datasets `both` waits for was saved: it has not run.
    assert _flow_runs_of(client, both.id) == []

    # A second run saves top_products: now `both` runs, once; `report` does not run again.
    _run(
        example_project,
        prefect_server,
        "run",
        "--runner=kedro_prefect.PrefectRunner",
        "--nodes=rank_products",
        "--runner-params=flow_name=upstream-" + flow_name,
    )
    (both_run,) = _wait(lambda: _final_runs(client, both.id), serve, log)
    assert both_run.state.is_completed(), both_run.state
    assert both_run.parameters["trigger"]["dataset"] in {"ingest.orders", "top_products"}
    time.sleep(5)  # a duplicate run would be scheduled within a second or two
    assert len(_flow_runs_of(client, report.id)) == 1
    assert len(_flow_runs_of(client, both.id)) == 1


def _deployments(client, flow_name: str, count: int) -> dict | None:
    found = {
        d.name: d
        for d in client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name]))
        )
    }
    return found if len(found) >= count else None


def _final_runs(client, deployment_id) -> list | None:
    runs = _flow_runs_of(client, deployment_id)
    return runs if runs and all(is_final(r) for r in runs) else None


def test_a_deployment_triggered_by_a_dataset_its_own_pipeline_saves_is_refused(
    example_project, prefect_server
):
    flow_name = f"loop-{uuid.uuid4().hex[:8]}"
    _write(
        example_project,
        "conf/base/prefect.yml",
        {
            "runner": {"flow_name": flow_name},
            "deployments": {
                "fine": {"pipeline": "reporting", "on_dataset_saved": ["order_lines"]},
                "loop": {"pipeline": "ingest", "on_dataset_saved": ["order_lines"]},
            },
        },
    )
    result = run_kedro(example_project, "prefect", "deploy", env=prefect_server.env)
    assert result.returncode == 1
    assert "deployments.loop.on_dataset_saved: pipeline 'ingest'" in result.stderr
    assert "saves 'order_lines'" in result.stderr
    assert "Traceback" not in result.stderr
    # The same through the flag, for one deployment.
    result = run_kedro(
        example_project,
        "prefect",
        "deploy",
        "--name",
        "again",
        "--pipeline",
        "ingest",
        "--on-dataset-saved",
        "sales_demo.ingest.orders",
        env=prefect_server.env,
    )
    assert result.returncode == 1
    assert "saves 'sales_demo.ingest.orders'" in result.stderr
    with api_client(prefect_server) as client:
        assert _deployments(client, flow_name, 1) is None  # nothing was created


def test_deploy_flag_triggers_a_work_pool_deployment_and_warns_about_unknown_names(
    example_project, prefect_server
):
    from prefect.client.schemas.actions import WorkPoolCreate

    flow_name = f"flag-{uuid.uuid4().hex[:8]}"
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    with api_client(prefect_server) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    _write(example_project, "conf/base/prefect.yml", {"runner": {"flow_name": flow_name}})
    result = run_kedro(
        example_project,
        "prefect",
        "deploy",
        "--name",
        "report",
        "--pipeline",
        "reporting",
        "--on-dataset-saved",
        "order_lines",
        "--on-dataset-saved",
        "orderlines",
        "--on-dataset-saved",
        "features_project.features",
        "--work-pool",
        pool,
        env=prefect_server.env,
    )
    assert result.returncode == 0, result.stderr
    assert "runs when order_lines or orderlines or features_project.features is saved" in (
        result.stdout
    )
    output = result.stdout + result.stderr
    assert "on_dataset_saved names 'orderlines', not a dataset of project sales_demo" in output
    assert "ingest.orders, ingest.products, order_lines" in output
    assert "features_project.features" not in output.split("not a dataset")[1]
    with api_client(prefect_server) as client:
        (deployment,) = _deployments(client, flow_name, 1).values()
        automations = client.read_automations_by_name(
            "on order_lines, orderlines, features_project.features saved"
        )
        assert len(automations) == 1
        match = automations[0].trigger.match.model_dump()["prefect.resource.id"]
        assert match == [
            "kedro.dataset.sales_demo.order_lines",
            "kedro.dataset.sales_demo.orderlines",
            "kedro.dataset.features_project.features",
        ]
    listed = run_kedro(
        example_project, "prefect", "list", env={**prefect_server.env, "COLUMNS": "400"}
    )
    assert listed.returncode == 0, listed.stderr
    assert (
        "saved: sales_demo.order_lines or sales_demo.orderlines or features_project.features"
        in listed.stdout
    )
    with api_client(prefect_server) as client:
        try:
            # An upstream run saves order_lines: the server creates a flow run of the
            # deployment for the pool's workers (there is none here: it stays scheduled).
            _run(
                example_project,
                prefect_server,
                "run",
                "--runner=kedro_prefect.PrefectRunner",
                "--pipeline=ingest",
                f"--runner-params=flow_name=up-{flow_name}",
            )
            (run,) = eventually(lambda: _flow_runs_of(client, deployment.id), timeout=60)
            assert run.parameters["trigger"]["dataset"] == "order_lines"
            assert run.work_pool_name == pool
        finally:
            client.delete_deployment(deployment.id)


def test_python_api_builds_the_trigger_and_refuses_a_self_trigger(example_project):
    script = """
from datetime import timedelta
from kedro_prefect.deploy import kedro_deployment
from kedro_prefect.deploy.triggers import SelfTriggerError

d = kedro_deployment("report", ".", "reporting", on_dataset_saved=["order_lines", "ingest.orders"],
                     on_dataset_saved_all_within=timedelta(hours=2))
(trigger,) = d.triggers
print(type(trigger).__name__, trigger.require, trigger.within)
try:
    kedro_deployment("loop", ".", "ingest", on_dataset_saved=["ingest.products"])
except SelfTriggerError as exc:
    print("refused:", exc)
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=example_project,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "DeploymentCompoundTrigger all 2:00:00" in result.stdout
    assert "refused: Invalid prefect.yml: deployments.loop.on_dataset_saved: pipeline 'ingest'" in (
        result.stdout
    )
    assert "saves 'ingest.products'" in result.stdout
