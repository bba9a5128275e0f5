"""Shared by the deployment tests against a real server (issue 20): commands, waits, read-backs."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.helpers import PREFECT, ProcessGroup, is_final, run_kedro


@contextmanager
def api(server) -> Iterator[SyncPrefectClient]:
    with (
        temporary_settings({PREFECT_API_URL: server.api_url}),
        get_client(sync_client=True) as client,
    ):
        yield client


def kedro(project: Path, server, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_kedro(project, "prefect", *args, env={**server.env, **env}, timeout=180)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``Error: ...`` line of a failed command (no traceback)."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def write_prefect_yml(project: Path, content: dict, env: str = "base") -> None:
    (project / "conf" / env).mkdir(parents=True, exist_ok=True)
    (project / "conf" / env / "prefect.yml").write_text(yaml.safe_dump(content, sort_keys=False))


def read_deployment(client, flow_name: str, name: str):
    return client.read_deployment_by_name(f"{flow_name}/{name}")


def deployment_names(client, flow_name: str) -> set[str]:
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    return {
        d.name
        for d in client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name]))
        )
    }


def scheduled_runs(client, deployment_id) -> list:
    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
        ),
    )


def final_run(client, deployment_id):
    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    )
    return next((r for r in runs if is_final(r)), None)


def wait(get, what: str, group: ProcessGroup | None = None, timeout: float = 240):
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


def run_deployment(server, full_name: str) -> None:
    result = subprocess.run(
        [PREFECT, "deployment", "run", full_name],
        env={**os.environ, **server.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    ok(result)


def only_schedule(deployment) -> tuple:
    (stored,) = deployment.schedules
    return stored.schedule
