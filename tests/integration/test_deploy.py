"""``kedro prefect init|deploy|serve`` and the deployable flow, against a real Prefect server.

Every test drives the real ``kedro`` CLI in a copy of the example project and reads the result
back through the Prefect client from the session's ``prefect server start`` process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from kedro_prefect.deploy import FLOW_ENTRYPOINT
from tests.helpers import KEDRO, PREFECT, ProcessGroup, free_port, is_final, run_kedro
from tests.integration.deploy_support import final_run

pytestmark = pytest.mark.integration

REGIONS = ("north", "south", "east", "west")
SECRET = "s3cr3t-" + uuid.uuid4().hex
NODE_NAMES = {
    "ingest.clean_orders",
    "ingest.clean_products",
    "ingest.join_lines",
    *(f"regions.{r}.{step}" for r in REGIONS for step in ("select", "summarize")),
    "combine_regions",
    "rank_products",
}


@contextmanager
def _client(server) -> Iterator[SyncPrefectClient]:
    """A sync Prefect client for the test server (the test process has no PREFECT_API_URL)."""
    with (
        temporary_settings({PREFECT_API_URL: server.api_url}),
        get_client(sync_client=True) as client,
    ):
        yield client


def _write_prefect_yml(project: Path, content: dict, env: str = "base") -> None:
    (project / "conf" / env / "prefect.yml").write_text(yaml.safe_dump(content, sort_keys=False))


def _kedro(project: Path, server, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    result = run_kedro(project, "prefect", *args, env={**server.env, **env}, timeout=180)
    return result


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def _deployments_of_flow(client, flow_name: str) -> dict:
    return {
        d.name: d
        for d in client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name]))
        )
    }


def test_deploy_creates_schedules_as_given_and_redeploy_updates_in_place(
    example_project, prefect_server
):
    flow_name = f"sales-{uuid.uuid4().hex[:8]}"
    _write_prefect_yml(
        example_project,
        {
            # Read through the project's config loader: `_` variables and ${...} work.
            "_tz": "Europe/Amsterdam",
            "runner": {"flow_name": flow_name},
            "deployments": {
                "nightly": {
                    "pipeline": "__default__",
                    "schedule": {"cron": "0 2 * * *", "timezone": "${_tz}"},
                    "parameters": {"top_n": 5},
                    "tags": ["kedro", "nightly"],
                    "description": "Nightly sales",
                    "version": "1.0",
                },
                "every-90-min": {"pipeline": "ingest", "schedule": {"interval": 5400}},
                "mwf": {
                    "pipeline": "reporting",
                    "schedule": {
                        "rrule": "FREQ=WEEKLY;BYDAY=MO,WE,FR;BYHOUR=6;BYMINUTE=0",
                        "timezone": "America/New_York",
                    },
                },
            },
        },
    )
    out = _ok(_kedro(example_project, prefect_server, "deploy"))
    assert f"Created '{flow_name}/nightly' (daily at 02:00 Europe/Amsterdam" in out
    assert "run by `kedro prefect serve`" in out

    with _client(prefect_server) as client:
        first = _deployments_of_flow(client, flow_name)
        assert set(first) == {"nightly", "every-90-min", "mwf"}
        nightly = first["nightly"]
        (cron,) = nightly.schedules
        assert (cron.schedule.cron, cron.schedule.timezone, cron.active) == (
            "0 2 * * *",
            "Europe/Amsterdam",
            True,
        )
        assert nightly.entrypoint == FLOW_ENTRYPOINT
        assert nightly.tags == ["kedro", "nightly"]
        assert nightly.description == "Nightly sales"
        assert nightly.version == "1.0"
        assert nightly.work_pool_name is None
        assert nightly.parameters == {
            "project_path": str(example_project.resolve()),
            "pipeline": "__default__",
            "env": None,
            "params": {"top_n": 5},
            "runner_options": {},
        }
        (interval,) = first["every-90-min"].schedules
        assert interval.schedule.interval == timedelta(minutes=90)
        assert first["every-90-min"].parameters["pipeline"] == "ingest"
        (rrule,) = first["mwf"].schedules
        # Prefect stores a rule without DTSTART with its default anchor (2020-01-01) in front;
        # older releases (3.4) store it as given.
        assert rrule.schedule.rrule.splitlines() in (
            ["DTSTART:20200101T000000", "FREQ=WEEKLY;BYDAY=MO,WE,FR;BYHOUR=6;BYMINUTE=0"],
            ["FREQ=WEEKLY;BYDAY=MO,WE,FR;BYHOUR=6;BYMINUTE=0"],
        )
        assert rrule.schedule.timezone == "America/New_York"

    # Flags on an existing name: the prefect.yml entry with the flags applied, updated in place,
    # here also moved to a (process) work pool, which must exist first.
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    with _client(prefect_server) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    out = _ok(
        _kedro(
            example_project,
            prefect_server,
            "deploy",
            "--name",
            "nightly",
            "--cron",
            "30 3 * * 1-5",
            "--timezone",
            "America/Chicago",
            "--params",
            "min_quantity=2",
            "--tags",
            "kedro,weekdays",
            "--work-pool",
            pool,
        )
    )
    assert f"Updated '{flow_name}/nightly' (weekdays at 03:30 America/Chicago" in out
    assert f"run by work pool {pool!r}" in out
    with _client(prefect_server) as client:
        second = _deployments_of_flow(client, flow_name)
        assert set(second) == {"nightly", "every-90-min", "mwf"}
        assert second["nightly"].id == nightly.id
        (cron,) = second["nightly"].schedules
        assert (cron.schedule.cron, cron.schedule.timezone) == ("30 3 * * 1-5", "America/Chicago")
        assert second["nightly"].parameters["params"] == {"top_n": 5, "min_quantity": 2}
        assert second["nightly"].tags == ["kedro", "weekdays"]
        assert second["nightly"].description == "Nightly sales"
        assert second["nightly"].work_pool_name == pool
        assert second["nightly"].entrypoint == FLOW_ENTRYPOINT
        assert second["every-90-min"].id == first["every-90-min"].id


def test_python_api_deployment_deploys_to_a_work_pool(example_project, prefect_server):
    from kedro_prefect.deploy import DeployError, check_work_pool

    flow_name = f"pooled-{uuid.uuid4().hex[:8]}"
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    _write_prefect_yml(example_project, {"runner": {"flow_name": flow_name}})
    with (
        temporary_settings({PREFECT_API_URL: prefect_server.api_url}),
        pytest.raises(DeployError, match=f"work pool {pool!r} does not exist"),
    ):
        check_work_pool(pool)
    with _client(prefect_server) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))

    # A RunnerDeployment that prefect.deploy() registers for the pool (no image, no storage).
    script = f"""
from prefect import deploy
from prefect.deployments.runner import RunnerDeployment
from kedro_prefect.deploy import kedro_deployment

d = kedro_deployment("api", ".", "ingest", interval=600, tags=["api"], version="7",
                     runner_options={{"max_workers": 2}})
assert isinstance(d, RunnerDeployment), type(d)
deploy(d, work_pool_name={pool!r}, build=False, push=False, print_next_steps_message=False)
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=example_project,
        env={**os.environ, **prefect_server.env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    _ok(result)

    with _client(prefect_server) as client:
        (api,) = _deployments_of_flow(client, flow_name).values()
        assert api.name == "api"
        assert api.work_pool_name == pool
        assert api.entrypoint == FLOW_ENTRYPOINT
        assert api.tags == ["api"]
        assert api.version == "7"
        assert api.schedules[0].schedule.interval == timedelta(minutes=10)
        assert api.parameters["runner_options"] == {"max_workers": 2}
        assert api.parameters["pipeline"] == "ingest"


def test_serve_runs_a_deployment_as_one_flow_run_with_a_task_per_node(
    example_project, prefect_server, tmp_path
):
    # The same project run by `kedro run` with SequentialRunner, for the expected outputs.
    reference = tmp_path / "reference"
    subprocess.run(["cp", "-r", str(example_project), str(reference)], check=True)
    sequential = subprocess.Popen(
        [KEDRO, "run"], cwd=reference, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )

    (example_project / "conf" / "local" / "credentials.yml").write_text(
        yaml.safe_dump({"warehouse": {"user": "kedro", "password": SECRET}})
    )
    (example_project / "conf" / "local" / "catalog.yml").write_text(
        yaml.safe_dump(
            {
                "region_report": {
                    "type": "pandas.CSVDataset",
                    "filepath": "data/08_reporting/region_report.csv",
                    "credentials": "warehouse",
                }
            }
        )
    )
    flow_name = f"served-{uuid.uuid4().hex[:8]}"
    _write_prefect_yml(
        example_project,
        {
            "runner": {"flow_name": flow_name},
            "deployments": {
                # A schedule far away: it must still be active after serve stops.
                "yearly": {"schedule": {"cron": "0 3 1 1 *"}, "parameters": {"top_n": 3}},
            },
        },
    )
    # Serve serves what is deployed: deploy first.
    _ok(_kedro(example_project, prefect_server, "deploy"))
    serve_log = tmp_path / "serve.log"
    group = ProcessGroup(
        [KEDRO, "prefect", "serve"],
        example_project,
        {**prefect_server.env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        serve_log,
    )
    serve = group.process
    try:
        with _client(prefect_server) as client:
            deployment = _wait_for(
                lambda: _deployments_of_flow(client, flow_name).get("yearly"), serve, serve_log
            )
        run = subprocess.run(
            [PREFECT, "deployment", "run", f"{flow_name}/yearly"],
            env={**os.environ, **prefect_server.env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        _ok(run)
        with _client(prefect_server) as client:
            flow_run = _wait_for(
                lambda: final_run(client, deployment.id), serve, serve_log, timeout=240
            )
            assert flow_run.state.is_completed(), flow_run.state
            assert flow_run.name.startswith("sales_demo-__default__-")
            # Task runs reach the database through events, a moment after the flow run ends.
            task_runs = _wait_for(
                lambda: _task_runs_once_final(client, flow_run.id), serve, serve_log
            )
            assert sorted(t.name for t in task_runs) == sorted(NODE_NAMES)
            assert all(t.state.is_completed() for t in task_runs)
            # The runner used the deployment's flow run: no second flow run was started. (The
            # server also schedules the deployment's next runs once they are within its
            # scheduling horizon, 100 days by default: from late September, 1 January is.)
            all_runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name]))
            )
            assert [r.id for r in all_runs if r.state_type != StateType.SCHEDULED] == [flow_run.id]
            stored = json.dumps(flow_run.parameters) + json.dumps(deployment.parameters)
            assert SECRET not in stored
            assert flow_run.parameters["params"] == {"top_n": 3}

        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=60) == 0, serve_log.read_text()[-3000:]
        with _client(prefect_server) as client:
            after = client.read_deployment(deployment.id)
            assert not after.paused
            assert [s.active for s in after.schedules] == [True]
    finally:
        group.stop()  # serve and any flow run it started, also when the test failed

    assert sequential.wait(timeout=240) == 0, sequential.stdout.read().decode()[-3000:]
    outputs = sorted(
        p.relative_to(reference)
        for p in (reference / "data").rglob("*")
        if p.suffix in (".csv", ".parquet") and "01_raw" not in p.parts
    )
    assert len(outputs) == 5, outputs
    for relative in outputs:
        read = pd.read_parquet if relative.suffix == ".parquet" else pd.read_csv
        pd.testing.assert_frame_equal(read(example_project / relative), read(reference / relative))


def test_bad_config_fails_naming_the_key_before_anything_is_created(
    example_project, prefect_server
):
    flow_name = f"bad-{uuid.uuid4().hex[:8]}"
    _write_prefect_yml(
        example_project,
        {
            "runner": {"flow_name": flow_name},
            "deployments": {
                "good": {"schedule": {"cron": "0 2 * * *"}},
                "typo": {"pipeline": "reportng"},
            },
        },
    )
    result = _kedro(example_project, prefect_server, "deploy")
    assert result.returncode == 1
    assert "deployments.typo.pipeline: unknown pipeline 'reportng'" in result.stderr
    assert "__default__, ingest, regions, reporting" in result.stderr
    assert "Traceback" not in result.stderr

    with _client(prefect_server) as client:
        assert _deployments_of_flow(client, flow_name) == {}


def test_unreachable_api_gives_a_clear_error_naming_prefect_api_url(example_project):
    url = f"http://127.0.0.1:{free_port()}/api"
    _write_prefect_yml(example_project, {"deployments": {"nightly": {}}})
    result = run_kedro(example_project, "prefect", "deploy", env={"PREFECT_API_URL": url})
    assert result.returncode == 1
    assert f"No Prefect API answers at PREFECT_API_URL={url}" in result.stderr
    assert "Traceback" not in result.stderr


def _task_runs_once_final(client, flow_run_id):
    task_runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    )
    done = len(task_runs) >= len(NODE_NAMES) and all(is_final(t) for t in task_runs)
    return task_runs if done else None


def _wait_for(get, process, log: Path, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = get()
        if value:
            return value
        if process.poll() is not None:
            pytest.fail(f"kedro prefect serve exited:\n{log.read_text()[-5000:]}")
        time.sleep(0.5)
    pytest.fail(f"timed out; serve log:\n{log.read_text()[-5000:]}")
