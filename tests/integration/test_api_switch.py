"""Two runs in one process against two Prefect APIs: each run's task runs land in its own API."""

from __future__ import annotations

import time

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from kedro_prefect import PrefectRunner
from kedro_prefect.local_api import EPHEMERAL_API, drain_prefect_workers
from tests import pipelines as p
from tests.helpers import eventually

pytestmark = pytest.mark.integration


def _task_run_names(api_url: str, flow_name: str) -> set[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
    return {run.name for run in runs if run.state and run.state.is_completed()}


def test_server_then_ephemeral_api_in_one_process(prefect_server):
    pipeline = p.branchless()
    names = {node.name for node in pipeline.nodes}
    on_server, on_ephemeral = f"on-server-{time.time_ns()}", f"on-ephemeral-{time.time_ns()}"

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        PrefectRunner(flow_name=on_server).run(pipeline, p.make_catalog(pipeline, p.EventLog()))
    PrefectRunner(flow_name=on_ephemeral).run(pipeline, p.make_catalog(pipeline, p.EventLog()))
    drain_prefect_workers(timeout=10)

    assert eventually(lambda: _task_run_names(prefect_server.api_url, on_server) == names)
    assert eventually(lambda: _task_run_names(EPHEMERAL_API.wait(), on_ephemeral) == names)
    assert _task_run_names(prefect_server.api_url, on_ephemeral) == set()
