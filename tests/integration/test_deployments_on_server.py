"""Deployments as the user made them (issue 20), against a real ``prefect server start``.

The server is the source of truth: ``kedro prefect serve`` serves what is deployed (never
re-creating it), ``kedro prefect deploy`` flags change only what they name, environments live side
by side, an interval keeps its anchor, a work-pool deployment is run by a real worker, and
messages say who runs what. Every process a test starts (serve, worker and the flow runs they
start) runs in its own process group and is killed by PID at the end, also when the test fails.

The server is the session's ``scheduling_server`` (tests/conftest.py), whose scheduler loop runs
every second, so scheduled runs appear at once. More: test_deploy_flags_and_docs.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prefect.client.schemas.actions import WorkPoolCreate

from tests.helpers import KEDRO, PREFECT, ProcessGroup
from tests.integration.deploy_support import (
    api,
    deployment_names,
    final_run,
    kedro,
    ok,
    one_error_line,
    only_schedule,
    read_deployment,
    run_deployment,
    scheduled_runs,
    wait,
    write_prefect_yml,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def server(scheduling_server):
    """The session's Prefect server with a 1 s scheduler loop (tests/conftest.py)."""
    return scheduling_server


# --- 1, 2, 8: the README sequence; serve serves what is deployed; logs name the flow ---------


def test_readme_sequence_serve_keeps_the_schedule_and_serves_flag_deployments(
    example_project, server, tmp_path
):
    flow = "sales_demo"  # the package name: the README's project names no flow
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with api(server) as client:  # none of the flow's deployments yet (the docs tests use it)
        for deployment in client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow]))
        ):
            client.delete_deployment(deployment.id)
    ok(kedro(example_project, server, "init"))
    out = ok(
        kedro(
            example_project,
            server,
            "deploy",
            "--name",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--timezone",
            "Europe/Paris",
        )
    )
    assert f"Created '{flow}/nightly' (daily at 03:00 Europe/Paris" in out
    # A deployment made by flags only (deploy.md's example), then served like any other.
    out = ok(
        kedro(example_project, server, "deploy", "--name", "adhoc-ingest", "--pipeline", "ingest")
    )
    assert f"Created '{flow}/adhoc-ingest' (no schedule, runs on demand)" in out
    assert "run by `kedro prefect serve`" in out
    with api(server) as client:
        before = read_deployment(client, flow, "nightly")

    group = ProcessGroup(
        [KEDRO, "prefect", "serve"],
        example_project,
        {**server.env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        tmp_path / "serve.log",
    )
    try:
        group.wait_for_output("Ctrl-C stops serving")
        out = group.output()
        assert f"Serving '{flow}/nightly' (daily at 03:00 Europe/Paris" in out
        assert f"Serving '{flow}/adhoc-ingest' (no schedule, runs on demand)" in out
        with api(server) as client:
            after = read_deployment(client, flow, "nightly")
            schedule = only_schedule(after)
            # The read-back the issue asks for: serving did not touch the schedule.
            print(f"after serve: {schedule.cron!r} {schedule.timezone} updated={after.updated}")
            assert (schedule.cron, schedule.timezone) == ("0 3 * * *", "Europe/Paris")
            assert after.updated == before.updated
            assert after.parameters == before.parameters and after.tags == before.tags

            adhoc = read_deployment(client, flow, "adhoc-ingest")
            run_deployment(server, f"{flow}/adhoc-ingest")
            run = wait(lambda: final_run(client, adhoc.id), "the adhoc run", group)
            assert run.state.is_completed(), run.state
            assert run.parameters["pipeline"] == "ingest"
        listed = ok(kedro(example_project, server, "list"))
        nightly_row = next(line for line in listed.splitlines() if f"{flow}/nightly " in line)
        assert "daily at 03:00 Europe/Paris" in nightly_row and "served" in nightly_row
        assert "03:00 Europe/Paris" in nightly_row.split("cron")[-1]  # the next run, local time
        adhoc_row = next(line for line in listed.splitlines() if f"{flow}/adhoc-ingest" in line)
        assert "Completed" in adhoc_row
        assert group.terminate() == 0
        log = group.output()
        assert f"for flow '{flow}'" in log
        assert "kedro-pipeline" not in log
    finally:
        group.stop()

    with api(server) as client:
        schedule = only_schedule(read_deployment(client, flow, "nightly"))
        assert (schedule.cron, schedule.timezone) == ("0 3 * * *", "Europe/Paris")


# --- 3: environments side by side; prefect.yml merged per deployment --------------------------


def test_environments_are_side_by_side_and_merge_per_deployment(example_project, server, tmp_path):
    flow = f"envs-{uuid.uuid4().hex[:8]}"
    write_prefect_yml(
        example_project,
        {
            "runner": {"flow_name": flow},
            "deployments": {
                "nightly": {
                    "schedule": {"cron": "0 2 * * *"},
                    "parameters": {"top_n": 5},
                    "tags": ["kedro"],
                },
                "weekly": {"pipeline": "ingest", "schedule": {"cron": "0 6 * * 1"}},
                "base-only": {"pipeline": "ingest"},
            },
        },
    )
    write_prefect_yml(
        example_project,
        {
            "deployments": {
                "nightly": {"schedule": {"cron": "0 5 * * *", "timezone": "Asia/Tokyo"}},
                "base-only": None,  # how an environment removes a deployment
                "prod-only": {"pipeline": "ingest", "paused": True},
            }
        },
        env="prod",
    )
    ok(kedro(example_project, server, "deploy"))
    with api(server) as client:
        base_nightly = read_deployment(client, flow, "nightly")
    out = ok(kedro(example_project, server, "deploy", "--env", "prod"))
    assert f"Created '{flow}/nightly-prod' for env 'prod' (daily at 05:00 Asia/Tokyo" in out

    with api(server) as client:
        assert deployment_names(client, flow) == {
            "nightly",
            "weekly",
            "base-only",
            "nightly-prod",
            "weekly-prod",
            "prod-only-prod",
        }
        base = read_deployment(client, flow, "nightly")
        assert base.id == base_nightly.id and base.updated == base_nightly.updated
        assert (only_schedule(base).cron, only_schedule(base).timezone or "UTC") == (
            "0 2 * * *",
            "UTC",
        )
        assert base.parameters["env"] is None
        prod = read_deployment(client, flow, "nightly-prod")
        assert (only_schedule(prod).cron, only_schedule(prod).timezone) == (
            "0 5 * * *",
            "Asia/Tokyo",
        )
        assert prod.parameters["env"] == "prod"
        assert prod.parameters["params"] == {"top_n": 5}  # from base: merged per deployment
        assert prod.tags == ["kedro", "env:prod"]
        assert read_deployment(client, flow, "weekly-prod").parameters["pipeline"] == "ingest"
        assert read_deployment(client, flow, "prod-only-prod").paused is True

    listed = ok(kedro(example_project, server, "list", "--env", "prod"))
    assert f"{flow}/nightly-prod" in listed and f"{flow}/prod-only-prod" in listed
    assert f"{flow}/weekly " not in listed and f"{flow}/nightly " not in listed
    everything = ok(kedro(example_project, server, "list"))
    assert f"{flow}/nightly " in everything and f"{flow}/nightly-prod" in everything

    # A name clash between environments: one clear line, nothing changed.
    clash = kedro(
        example_project, server, "deploy", "--name", "nightly-prod", "--cron", "0 1 * * *"
    )
    line = one_error_line(clash)
    assert f"'{flow}/nightly-prod' exists already for env 'prod'" in line
    assert "choose another --name" in line
    with api(server) as client:
        assert read_deployment(client, flow, "nightly-prod").updated == prod.updated

    group = ProcessGroup(
        [KEDRO, "prefect", "serve", "--env", "prod", "--name", "nightly"],
        example_project,
        server.env,
        tmp_path / "serve.log",
    )
    try:
        out = group.wait_for_output("Ctrl-C stops serving")
        assert f"Serving '{flow}/nightly-prod' (daily at 05:00 Asia/Tokyo" in out
        assert f"Serving '{flow}/nightly' " not in out
    finally:
        group.stop()


# --- 4, 6, 8: a work pool and a real worker ------------------------------------------------------


def test_work_pool_deployments_run_by_a_worker_and_messages_name_the_pool(
    example_project, server, tmp_path
):
    flow = f"pooled-{uuid.uuid4().hex[:8]}"
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    write_prefect_yml(example_project, {"runner": {"flow_name": flow}})
    with api(server) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    out = ok(
        kedro(
            example_project,
            server,
            "deploy",
            "--name",
            "pooled",
            "--pipeline",
            "ingest",
            "--work-pool",
            pool,
            "--job-variable",
            f"working_dir={tmp_path}",
        )
    )
    assert f"run by work pool {pool!r}" in out
    # Item 6: flags without --work-pool change the schedule only; the pool stays, and says so.
    out = ok(
        kedro(
            example_project,
            server,
            "deploy",
            "--name",
            "pooled",
            "--cron",
            "0 4 * * *",
            "--timezone",
            "Europe/Berlin",
        )
    )
    assert f"Updated '{flow}/pooled' (daily at 04:00 Europe/Berlin" in out
    assert f"run by work pool {pool!r}" in out and "kedro prefect serve" not in out
    with api(server) as client:
        pooled = read_deployment(client, flow, "pooled")
        assert pooled.work_pool_name == pool
        assert pooled.parameters["pipeline"] == "ingest"
        assert pooled.job_variables == {"working_dir": str(tmp_path)}

    # Item 4: a project path that exists only where the worker runs: deployable from here.
    missing = f"/nonexistent-{uuid.uuid4().hex[:6]}/sales_demo"
    script = f"""
from kedro_prefect.deploy import kedro_deployment
d = kedro_deployment("remote", project_path={missing!r}, pipeline="ingest", flow_name={flow!r})
d.apply(work_pool_name={pool!r})
"""
    ok(
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env={**os.environ, **server.env},
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    )

    # serve refuses a pooled deployment, naming the worker command.
    line = one_error_line(kedro(example_project, server, "serve", "--name", "pooled"))
    assert f"runs on work pool {pool!r}" in line and f"prefect worker start --pool {pool}" in line

    worker = ProcessGroup(
        [PREFECT, "worker", "start", "--pool", pool, "--type", "process"],
        tmp_path,
        {**server.env, "PREFECT_WORKER_QUERY_SECONDS": "1", "COLUMNS": "400"},
        tmp_path / "worker.log",
    )
    try:
        with api(server) as client:
            remote = read_deployment(client, flow, "remote")
            run_deployment(server, f"{flow}/pooled")
            run = wait(lambda: final_run(client, pooled.id), "the pooled run", worker)
            assert run.state.is_completed(), (run.state, worker.output()[-4000:])
            assert (example_project / "data" / "02_intermediate").exists()
            run_deployment(server, f"{flow}/remote")
            failed = wait(lambda: final_run(client, remote.id), "the remote run", worker)
            assert failed.state.is_failed()
            assert f"No Kedro project at project_path={missing!r}" in failed.state.message
        log = worker.output()
        assert f"No Kedro project at project_path={missing!r}" in log
        assert f"for flow '{flow}'" in log
        assert "for flow 'kedro-pipeline'" not in log
    finally:
        worker.stop()


# --- 5: interval anchors and scheduled runs survive a re-deploy ----------------------------------


def test_interval_redeploy_keeps_its_anchor_and_unchanged_keeps_its_runs(example_project, server):
    flow = f"interval-{uuid.uuid4().hex[:8]}"
    write_prefect_yml(
        example_project,
        {
            "runner": {"flow_name": flow},
            "deployments": {"hourly": {"pipeline": "ingest", "schedule": {"interval": 3600}}},
        },
    )
    flags = ("--name", "every", "--pipeline", "ingest", "--interval", "5400")
    ok(
        kedro(
            example_project,
            server,
            "deploy",
            *flags,
            "--anchor-date",
            "2026-01-01T00:10:00Z",
            "--timezone",
            "Asia/Tokyo",
        )
    )
    with api(server) as client:
        every = read_deployment(client, flow, "every")
        schedule = only_schedule(every)
        assert schedule.interval == timedelta(minutes=90)
        assert schedule.anchor_date == datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
        assert schedule.timezone == "Asia/Tokyo"
        runs = wait(lambda: scheduled_runs(client, every.id), "scheduled runs")
        times = sorted(r.expected_start_time for r in runs)
        # Every run is a whole number of 90-minute steps from the anchor (Tokyo has no DST).
        assert all((t - schedule.anchor_date).total_seconds() % 5400 == 0 for t in times)

    out = ok(kedro(example_project, server, "deploy", *flags))  # no anchor given: kept
    assert f"Unchanged '{flow}/every'" in out
    with api(server) as client:
        same = read_deployment(client, flow, "every")
        assert same.updated == every.updated
        assert only_schedule(same).anchor_date == schedule.anchor_date
        assert {r.id for r in scheduled_runs(client, every.id)} >= {r.id for r in runs}

    # A change elsewhere: updated, the anchor stays, the runs come back at the same times.
    out = ok(kedro(example_project, server, "deploy", "--name", "every", "--tags", "changed"))
    assert f"Updated '{flow}/every'" in out
    with api(server) as client:
        changed = read_deployment(client, flow, "every")
        assert changed.tags == ["changed"]
        assert only_schedule(changed).anchor_date == schedule.anchor_date
        assert only_schedule(changed).timezone == "Asia/Tokyo"
        again = wait(lambda: scheduled_runs(client, every.id), "re-scheduled runs")
        assert sorted(r.expected_start_time for r in again)[: len(times)] == times

    # prefect.yml's interval without anchor_date: the first deploy's anchor stays.
    ok(kedro(example_project, server, "deploy"))
    with api(server) as client:
        first = only_schedule(read_deployment(client, flow, "hourly")).anchor_date
    time.sleep(1.1)
    out = ok(kedro(example_project, server, "deploy"))
    assert f"Unchanged '{flow}/hourly'" in out
    with api(server) as client:
        assert only_schedule(read_deployment(client, flow, "hourly")).anchor_date == first

    # A schedule removed from prefect.yml is removed from the deployment.
    write_prefect_yml(
        example_project,
        {"runner": {"flow_name": flow}, "deployments": {"hourly": {"pipeline": "ingest"}}},
    )
    out = ok(kedro(example_project, server, "deploy"))
    assert f"Updated '{flow}/hourly' (no schedule, runs on demand)" in out
    with api(server) as client:
        assert read_deployment(client, flow, "hourly").schedules == []
