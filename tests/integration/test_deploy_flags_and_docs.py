"""Deploy flags, bad input and the docs' deploy commands (issue 20), against a real server.

The server is the source of truth: ``kedro prefect serve`` serves what is deployed (never
re-creating it), ``kedro prefect deploy`` flags change only what they name, environments live side
by side, an interval keeps its anchor, a work-pool deployment is run by a real worker, and
messages say who runs what. Every process a test starts (serve, worker and the flow runs they
start) runs in its own process group and is killed by PID at the end, also when the test fails.

The server is the session's ``scheduling_server`` (tests/conftest.py), whose scheduler loop runs
every second, so scheduled runs appear at once.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from prefect.client.schemas.actions import WorkPoolCreate

from tests.helpers import KEDRO, ProcessGroup, run_kedro
from tests.integration.deploy_support import (
    api,
    deployment_names,
    kedro,
    ok,
    one_error_line,
    only_schedule,
    read_deployment,
    write_prefect_yml,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def server(scheduling_server):
    """The session's Prefect server with a 1 s scheduler loop (tests/conftest.py)."""
    return scheduling_server


# --- every flag, with non-default values ---------------------------------------------------------


def test_every_deploy_flag_reaches_the_server_and_flags_change_only_what_they_name(
    example_project, server
):
    flow = f"flags-{uuid.uuid4().hex[:8]}"
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    write_prefect_yml(example_project, {"runner": {"flow_name": flow}})
    with api(server) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    ok(
        kedro(
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
    with api(server) as client:
        pinned = read_deployment(client, flow, "pinned")
        cron = only_schedule(pinned)
        assert (cron.cron, cron.timezone) == ("15 4 * * 2", "Europe/Paris")
        assert pinned.parameters["pipeline"] == "ingest"
        assert pinned.parameters["params"] == {"top_n": 7}
        assert pinned.tags == ["a", "b"]
        assert pinned.description == "Pinned run"
        assert pinned.version == "3.2"
        assert (pinned.work_pool_name, pinned.work_queue_name) == (pool, "q1")
        assert pinned.job_variables == {"working_dir": "/tmp", "env": {"A": "1"}}
        assert pinned.paused is True

    ok(kedro(example_project, server, "deploy", "--name", "pinned", "--version", "3.3"))
    with api(server) as client:
        again = read_deployment(client, flow, "pinned")
        assert again.version == "3.3"
        for field in ("parameters", "tags", "description", "work_pool_name", "work_queue_name"):
            assert getattr(again, field) == getattr(pinned, field), field
        assert again.job_variables == pinned.job_variables and again.paused is True
        assert (only_schedule(again).cron, only_schedule(again).timezone) == (
            "15 4 * * 2",
            "Europe/Paris",
        )

    rule = "FREQ=WEEKLY;BYDAY=TU;BYHOUR=4;BYMINUTE=15"
    ok(kedro(example_project, server, "deploy", "--name", "pinned", "--rrule", rule, "--no-paused"))
    with api(server) as client:
        last = read_deployment(client, flow, "pinned")
        assert only_schedule(last).rrule.splitlines()[-1] == rule
        assert only_schedule(last).timezone == "Europe/Paris"  # the zone is kept with a new rule
        assert last.paused is False


# --- bad input: one clear line, nothing half-created -------------------------------------------


def test_bad_input_is_one_line_naming_the_fix_and_creates_nothing(example_project, server):
    flow = f"bad-{uuid.uuid4().hex[:8]}"
    write_prefect_yml(
        example_project,
        {
            "runner": {"flow_name": flow},
            "deployments": {
                "fine": {"schedule": {"cron": "0 2 * * *"}},
                "pooled": {"work_pool": "no-such-pool"},
            },
        },
    )
    line = one_error_line(kedro(example_project, server, "deploy"))
    assert "work pool 'no-such-pool' does not exist" in line
    assert "prefect work-pool create no-such-pool --type process" in line
    with api(server) as client:
        assert deployment_names(client, flow) == set()

    line = one_error_line(kedro(example_project, server, "serve", "--name", "nope"))
    assert f"no deployment 'nope' of flow {flow!r}" in line
    assert "`kedro prefect deploy --name nope`" in line

    # Item 7: the URL of a running server without /api.
    root = server.api_url.removesuffix("/api")
    line = one_error_line(
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


@pytest.mark.timeout(600)  # a dozen commands, one after the other
@pytest.mark.parametrize("doc", ["docs/deploy.md", "README.md"])
def test_every_deploy_command_of_the_docs_runs_as_written(doc, example_project, server, tmp_path):
    from tests.helpers import REPO

    commands = _doc_commands(REPO / doc)
    assert any(c.startswith("kedro prefect serve") for c in commands), commands
    (example_project / "conf" / "prod").mkdir(exist_ok=True)
    env = {**server.env, "PATH": f"{Path(KEDRO).parent}:{os.environ['PATH']}"}
    with api(server) as client:  # docs/deploy.md's pool, once per server
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
