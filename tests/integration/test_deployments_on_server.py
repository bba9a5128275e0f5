"""Deployments as the user made them (issue 20), against a real ``prefect server start``.

The server is the source of truth: ``kedro prefect serve`` serves what is deployed (never
re-creating it), ``kedro prefect deploy`` flags change only what they name, environments live side
by side, an interval keeps its anchor, a work-pool deployment is run by a real worker, and
messages say who runs what. Every process a test starts (serve, worker and the flow runs they
start) runs in its own process group and is killed by PID at the end, also when the test fails.

This module starts its own server with a 1 s scheduler loop, so scheduled runs appear at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.helpers import KEDRO, PREFECT, PrefectServer, ProcessGroup, run_kedro

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[PrefectServer]:
    """A Prefect server whose scheduler creates runs every second (stopped by PID)."""
    server = PrefectServer(
        tmp_path_factory.mktemp("prefect-server-i20"),
        env={"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1"},
    )
    server.start()
    yield server
    server.stop()


@contextmanager
def _client(server) -> Iterator[SyncPrefectClient]:
    with (
        temporary_settings({PREFECT_API_URL: server.api_url}),
        get_client(sync_client=True) as client,
    ):
        yield client


def _kedro(project: Path, server, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_kedro(project, "prefect", *args, env={**server.env, **env}, timeout=180)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``Error: ...`` line of a failed command (no traceback)."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def _write_prefect_yml(project: Path, content: dict, env: str = "base") -> None:
    (project / "conf" / env).mkdir(parents=True, exist_ok=True)
    (project / "conf" / env / "prefect.yml").write_text(yaml.safe_dump(content, sort_keys=False))


def _deployment(client, flow_name: str, name: str):
    return client.read_deployment_by_name(f"{flow_name}/{name}")


def _deployment_names(client, flow_name: str) -> set[str]:
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    return {
        d.name
        for d in client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name]))
        )
    }


def _scheduled_runs(client, deployment_id) -> list:
    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
        ),
    )


def _final_run(client, deployment_id):
    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    )
    return next((r for r in runs if r.state and r.state.is_final()), None)


def _wait(get, what: str, group: ProcessGroup | None = None, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = get()
        if value:
            return value
        if group is not None and group.process.poll() is not None:
            pytest.fail(f"process exited while waiting for {what}:\n{group.output()[-5000:]}")
        time.sleep(0.5)
    log = group.output()[-5000:] if group else ""
    pytest.fail(f"timed out waiting for {what}\n{log}")


def _run_deployment(server, full_name: str) -> None:
    result = subprocess.run(
        [PREFECT, "deployment", "run", full_name],
        env={**os.environ, **server.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    _ok(result)


def _schedule(deployment) -> tuple:
    (stored,) = deployment.schedules
    return stored.schedule


# --- 1, 2, 8: the README sequence; serve serves what is deployed; logs name the flow ---------


def test_readme_sequence_serve_keeps_the_schedule_and_serves_flag_deployments(
    example_project, server, tmp_path
):
    flow = "sales_demo"  # the package name: the README's project names no flow
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with _client(server) as client:  # none of the flow's deployments yet (the docs tests use it)
        for deployment in client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow]))
        ):
            client.delete_deployment(deployment.id)
    _ok(_kedro(example_project, server, "init"))
    out = _ok(
        _kedro(
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
    out = _ok(
        _kedro(example_project, server, "deploy", "--name", "adhoc-ingest", "--pipeline", "ingest")
    )
    assert f"Created '{flow}/adhoc-ingest' (no schedule, runs on demand)" in out
    assert "run by `kedro prefect serve`" in out
    with _client(server) as client:
        before = _deployment(client, flow, "nightly")

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
        with _client(server) as client:
            after = _deployment(client, flow, "nightly")
            schedule = _schedule(after)
            # The read-back the issue asks for: serving did not touch the schedule.
            print(f"after serve: {schedule.cron!r} {schedule.timezone} updated={after.updated}")
            assert (schedule.cron, schedule.timezone) == ("0 3 * * *", "Europe/Paris")
            assert after.updated == before.updated
            assert after.parameters == before.parameters and after.tags == before.tags

            adhoc = _deployment(client, flow, "adhoc-ingest")
            _run_deployment(server, f"{flow}/adhoc-ingest")
            run = _wait(lambda: _final_run(client, adhoc.id), "the adhoc run", group)
            assert run.state.is_completed(), run.state
            assert run.parameters["pipeline"] == "ingest"
        listed = _ok(_kedro(example_project, server, "list"))
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

    with _client(server) as client:
        schedule = _schedule(_deployment(client, flow, "nightly"))
        assert (schedule.cron, schedule.timezone) == ("0 3 * * *", "Europe/Paris")


# --- 3: environments side by side; prefect.yml merged per deployment --------------------------


def test_environments_are_side_by_side_and_merge_per_deployment(example_project, server, tmp_path):
    flow = f"envs-{uuid.uuid4().hex[:8]}"
    _write_prefect_yml(
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
    _write_prefect_yml(
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
    _ok(_kedro(example_project, server, "deploy"))
    with _client(server) as client:
        base_nightly = _deployment(client, flow, "nightly")
    out = _ok(_kedro(example_project, server, "deploy", "--env", "prod"))
    assert f"Created '{flow}/nightly-prod' for env 'prod' (daily at 05:00 Asia/Tokyo" in out

    with _client(server) as client:
        assert _deployment_names(client, flow) == {
            "nightly",
            "weekly",
            "base-only",
            "nightly-prod",
            "weekly-prod",
            "prod-only-prod",
        }
        base = _deployment(client, flow, "nightly")
        assert base.id == base_nightly.id and base.updated == base_nightly.updated
        assert (_schedule(base).cron, _schedule(base).timezone or "UTC") == ("0 2 * * *", "UTC")
        assert base.parameters["env"] is None
        prod = _deployment(client, flow, "nightly-prod")
        assert (_schedule(prod).cron, _schedule(prod).timezone) == ("0 5 * * *", "Asia/Tokyo")
        assert prod.parameters["env"] == "prod"
        assert prod.parameters["params"] == {"top_n": 5}  # from base: merged per deployment
        assert prod.tags == ["kedro", "env:prod"]
        assert _deployment(client, flow, "weekly-prod").parameters["pipeline"] == "ingest"
        assert _deployment(client, flow, "prod-only-prod").paused is True

    listed = _ok(_kedro(example_project, server, "list", "--env", "prod"))
    assert f"{flow}/nightly-prod" in listed and f"{flow}/prod-only-prod" in listed
    assert f"{flow}/weekly " not in listed and f"{flow}/nightly " not in listed
    everything = _ok(_kedro(example_project, server, "list"))
    assert f"{flow}/nightly " in everything and f"{flow}/nightly-prod" in everything

    # A name clash between environments: one clear line, nothing changed.
    clash = _kedro(
        example_project, server, "deploy", "--name", "nightly-prod", "--cron", "0 1 * * *"
    )
    line = _one_error_line(clash)
    assert f"'{flow}/nightly-prod' exists already for env 'prod'" in line
    assert "choose another --name" in line
    with _client(server) as client:
        assert _deployment(client, flow, "nightly-prod").updated == prod.updated

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
    _write_prefect_yml(example_project, {"runner": {"flow_name": flow}})
    with _client(server) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    out = _ok(
        _kedro(
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
    out = _ok(
        _kedro(
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
    with _client(server) as client:
        pooled = _deployment(client, flow, "pooled")
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
    _ok(
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
    line = _one_error_line(_kedro(example_project, server, "serve", "--name", "pooled"))
    assert f"runs on work pool {pool!r}" in line and f"prefect worker start --pool {pool}" in line

    worker = ProcessGroup(
        [PREFECT, "worker", "start", "--pool", pool, "--type", "process"],
        tmp_path,
        {**server.env, "PREFECT_WORKER_QUERY_SECONDS": "1", "COLUMNS": "400"},
        tmp_path / "worker.log",
    )
    try:
        with _client(server) as client:
            remote = _deployment(client, flow, "remote")
            _run_deployment(server, f"{flow}/pooled")
            run = _wait(lambda: _final_run(client, pooled.id), "the pooled run", worker)
            assert run.state.is_completed(), (run.state, worker.output()[-4000:])
            assert (example_project / "data" / "02_intermediate").exists()
            _run_deployment(server, f"{flow}/remote")
            failed = _wait(lambda: _final_run(client, remote.id), "the remote run", worker)
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
    _write_prefect_yml(
        example_project,
        {
            "runner": {"flow_name": flow},
            "deployments": {"hourly": {"pipeline": "ingest", "schedule": {"interval": 3600}}},
        },
    )
    flags = ("--name", "every", "--pipeline", "ingest", "--interval", "5400")
    _ok(
        _kedro(
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
    with _client(server) as client:
        every = _deployment(client, flow, "every")
        schedule = _schedule(every)
        assert schedule.interval == timedelta(minutes=90)
        assert schedule.anchor_date == datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
        assert schedule.timezone == "Asia/Tokyo"
        runs = _wait(lambda: _scheduled_runs(client, every.id), "scheduled runs")
        times = sorted(r.expected_start_time for r in runs)
        # Every run is a whole number of 90-minute steps from the anchor (Tokyo has no DST).
        assert all((t - schedule.anchor_date).total_seconds() % 5400 == 0 for t in times)

    out = _ok(_kedro(example_project, server, "deploy", *flags))  # no anchor given: kept
    assert f"Unchanged '{flow}/every'" in out
    with _client(server) as client:
        same = _deployment(client, flow, "every")
        assert same.updated == every.updated
        assert _schedule(same).anchor_date == schedule.anchor_date
        assert {r.id for r in _scheduled_runs(client, every.id)} >= {r.id for r in runs}

    # A change elsewhere: updated, the anchor stays, the runs come back at the same times.
    out = _ok(_kedro(example_project, server, "deploy", "--name", "every", "--tags", "changed"))
    assert f"Updated '{flow}/every'" in out
    with _client(server) as client:
        changed = _deployment(client, flow, "every")
        assert changed.tags == ["changed"]
        assert _schedule(changed).anchor_date == schedule.anchor_date
        assert _schedule(changed).timezone == "Asia/Tokyo"
        again = _wait(lambda: _scheduled_runs(client, every.id), "re-scheduled runs")
        assert sorted(r.expected_start_time for r in again)[: len(times)] == times

    # prefect.yml's interval without anchor_date: the first deploy's anchor stays.
    _ok(_kedro(example_project, server, "deploy"))
    with _client(server) as client:
        first = _schedule(_deployment(client, flow, "hourly")).anchor_date
    time.sleep(1.1)
    out = _ok(_kedro(example_project, server, "deploy"))
    assert f"Unchanged '{flow}/hourly'" in out
    with _client(server) as client:
        assert _schedule(_deployment(client, flow, "hourly")).anchor_date == first

    # A schedule removed from prefect.yml is removed from the deployment.
    _write_prefect_yml(
        example_project,
        {"runner": {"flow_name": flow}, "deployments": {"hourly": {"pipeline": "ingest"}}},
    )
    out = _ok(_kedro(example_project, server, "deploy"))
    assert f"Updated '{flow}/hourly' (no schedule, runs on demand)" in out
    with _client(server) as client:
        assert _deployment(client, flow, "hourly").schedules == []


# --- every flag, with non-default values ---------------------------------------------------------


def test_every_deploy_flag_reaches_the_server_and_flags_change_only_what_they_name(
    example_project, server
):
    flow = f"flags-{uuid.uuid4().hex[:8]}"
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    _write_prefect_yml(example_project, {"runner": {"flow_name": flow}})
    with _client(server) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    _ok(
        _kedro(
            example_project,
            server,
            "deploy",
            "--name",
            "pinned",
            "--pipeline",
            "ingest",
            "--cron",
            "15 4 * * 2",
            "--timezone",
            "Europe/Paris",
            "--params",
            "top_n=7",
            "--tags",
            "a,b",
            "--description",
            "Pinned run",
            "--version",
            "3.2",
            "--work-pool",
            pool,
            "--work-queue",
            "q1",
            "--job-variable",
            "working_dir=/tmp",
            "--job-variable",
            'env={"A": "1"}',
            "--paused",
        )
    )
    with _client(server) as client:
        pinned = _deployment(client, flow, "pinned")
        cron = _schedule(pinned)
        assert (cron.cron, cron.timezone) == ("15 4 * * 2", "Europe/Paris")
        assert pinned.parameters["pipeline"] == "ingest"
        assert pinned.parameters["params"] == {"top_n": 7}
        assert pinned.tags == ["a", "b"]
        assert pinned.description == "Pinned run"
        assert pinned.version == "3.2"
        assert (pinned.work_pool_name, pinned.work_queue_name) == (pool, "q1")
        assert pinned.job_variables == {"working_dir": "/tmp", "env": {"A": "1"}}
        assert pinned.paused is True

    _ok(_kedro(example_project, server, "deploy", "--name", "pinned", "--version", "3.3"))
    with _client(server) as client:
        again = _deployment(client, flow, "pinned")
        assert again.version == "3.3"
        for field in ("parameters", "tags", "description", "work_pool_name", "work_queue_name"):
            assert getattr(again, field) == getattr(pinned, field), field
        assert again.job_variables == pinned.job_variables and again.paused is True
        assert (_schedule(again).cron, _schedule(again).timezone) == ("15 4 * * 2", "Europe/Paris")

    rule = "FREQ=WEEKLY;BYDAY=TU;BYHOUR=4;BYMINUTE=15"
    _ok(
        _kedro(
            example_project, server, "deploy", "--name", "pinned", "--rrule", rule, "--no-paused"
        )
    )
    with _client(server) as client:
        last = _deployment(client, flow, "pinned")
        assert _schedule(last).rrule.splitlines()[-1] == rule
        assert _schedule(last).timezone == "Europe/Paris"  # the zone is kept with a new rule
        assert last.paused is False


# --- bad input: one clear line, nothing half-created -------------------------------------------


def test_bad_input_is_one_line_naming_the_fix_and_creates_nothing(example_project, server):
    flow = f"bad-{uuid.uuid4().hex[:8]}"
    _write_prefect_yml(
        example_project,
        {
            "runner": {"flow_name": flow},
            "deployments": {
                "fine": {"schedule": {"cron": "0 2 * * *"}},
                "pooled": {"work_pool": "no-such-pool"},
            },
        },
    )
    line = _one_error_line(_kedro(example_project, server, "deploy"))
    assert "work pool 'no-such-pool' does not exist" in line
    assert "prefect work-pool create no-such-pool --type process" in line
    with _client(server) as client:
        assert _deployment_names(client, flow) == set()

    line = _one_error_line(_kedro(example_project, server, "serve", "--name", "nope"))
    assert f"no deployment 'nope' of flow {flow!r}" in line
    assert "`kedro prefect deploy --name nope`" in line

    # Item 7: the URL of a running server without /api.
    root = server.api_url.removesuffix("/api")
    line = _one_error_line(
        run_kedro(example_project, "prefect", "deploy", env={"PREFECT_API_URL": root})
    )
    assert f"PREFECT_API_URL={root} is missing /api" in line
    assert f"PREFECT_API_URL={root}/api" in line


def test_kedro_deployment_for_a_path_not_on_this_machine_needs_an_absolute_path_and_a_flow():
    from kedro_prefect.config import ProjectConfigError
    from kedro_prefect.deploy import kedro_deployment

    with pytest.raises(ProjectConfigError, match="must be absolute"):
        kedro_deployment("x", project_path="not-here/sales_demo")
    with pytest.raises(ProjectConfigError, match="pass flow_name="):
        kedro_deployment("x", project_path="/srv/not-here/sales_demo")
    deployment = kedro_deployment(
        "x", project_path="/srv/not-here/sales_demo", flow_name="sales_demo", env="prod"
    )
    assert deployment.name == "x-prod"
    assert deployment.parameters["project_path"] == "/srv/not-here/sales_demo"
    assert "env:prod" in deployment.tags


# --- every command of docs/deploy.md and the README's deploy lines runs as written ------------

_LONG_RUNNING = {"kedro prefect serve": "Ctrl-C stops serving", "prefect worker start": "started"}


def _doc_commands(path: Path) -> list[str]:
    """The ``kedro prefect`` / ``prefect work-pool`` / ``prefect worker`` lines of bash blocks."""
    import re

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(("kedro prefect", "prefect work-pool", "prefect worker")):
                commands.append(line)
    return commands


@pytest.mark.parametrize("doc", ["docs/deploy.md", "README.md"])
def test_every_deploy_command_of_the_docs_runs_as_written(doc, example_project, server, tmp_path):
    from tests.helpers import REPO

    commands = _doc_commands(REPO / doc)
    assert any(c.startswith("kedro prefect serve") for c in commands), commands
    (example_project / "conf" / "prod").mkdir(exist_ok=True)
    env = {**server.env, "PATH": f"{Path(KEDRO).parent}:{os.environ['PATH']}"}
    with _client(server) as client:  # docs/deploy.md's pool, once per server
        if "kedro-pool" not in {p.name for p in client.read_work_pools()}:
            client.create_work_pool(WorkPoolCreate(name="kedro-pool", type="process"))
    for i, command in enumerate(commands):
        if command.startswith("prefect work-pool create kedro-pool"):
            continue  # created above (a second create would fail)
        ready = next(
            (text for start, text in _LONG_RUNNING.items() if command.startswith(start)), None
        )
        if ready is None:
            result = subprocess.run(
                command,
                shell=True,
                cwd=example_project,
                env={**os.environ, **env, "COLUMNS": "200"},
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
            continue
        group = ProcessGroup(
            ["bash", "-c", f"exec {command}"], example_project, env, tmp_path / f"{i}.log"
        )
        try:
            group.wait_for_output(ready)
        finally:
            group.stop()
