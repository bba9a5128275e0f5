"""Log records emitted in a task on a Dask worker process reach that task run's logs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent(
    """
    import logging
    import os

    from prefect import flow, task
    from prefect.context import FlowRunContext
    from prefect_dask import DaskTaskRunner

    from kedro_prefect.dask_logs import forward_dask_worker_logs


    @task(name="node-on-dask", task_run_name="node-on-dask")
    def node_like():
        logging.getLogger("kedro.io.data_catalog").info("Loading data from lines (on a worker)")
        logging.getLogger("sales_demo.hooks").info("hook ran on a worker")
        logging.getLogger("sales_demo.hooks").debug("below the project's level")
        return os.getpid()


    @flow(
        name="dask-node-logs",
        task_runner=DaskTaskRunner(
            cluster_kwargs={"n_workers": 1, "threads_per_worker": 1, "processes": True,
                            "dashboard_address": None}
        ),
    )
    def dask_node_logs():
        logging.getLogger("kedro").setLevel(logging.INFO)
        logging.getLogger("sales_demo").setLevel(logging.INFO)
        assert forward_dask_worker_logs(FlowRunContext.get().task_runner, "sales_demo")
        return node_like.submit().result()


    if __name__ == "__main__":
        assert dask_node_logs() != os.getpid()  # the task ran in another process
    """
)


def test_node_logs_on_dask_workers_reach_the_task_run(prefect_server, tmp_path):
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        LogFilter,
        LogFilterTaskRunId,
        TaskRunFilter,
        TaskRunFilterName,
    )

    script = tmp_path / "dask_node_logs.py"
    script.write_text(SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**os.environ, **prefect_server.env},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    with SyncPrefectClient(prefect_server.api_url) as client:
        deadline = time.monotonic() + 30
        while True:  # task runs and logs reach the server asynchronously
            task_runs = client.read_task_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["dask-node-logs"])),
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=["node-on-dask"])),
            )
            logs = client.read_logs(
                log_filter=LogFilter(
                    task_run_id=LogFilterTaskRunId(any_=[task_run.id for task_run in task_runs])
                )
            )
            messages = {(log.name, log.message) for log in logs}
            if ("sales_demo.hooks", "hook ran on a worker") in messages:
                break
            assert time.monotonic() < deadline, (task_runs, messages)
            time.sleep(0.5)
    assert len(task_runs) == 1
    shipped = [(log.name, log.message) for log in logs]
    assert shipped.count(("sales_demo.hooks", "hook ran on a worker")) == 1, shipped  # once
    assert ("kedro.io.data_catalog", "Loading data from lines (on a worker)") in messages
    assert not any(message == "below the project's level" for _, message in messages)
