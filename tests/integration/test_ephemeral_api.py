"""The ephemeral Prefect API: launched once per process, reused by every run, and still Prefect.

No timings here (they are in benchmarks/); these tests count launches, check which modules the
driver imports and that tag concurrency limits still hold on the ephemeral API.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline, node

from kedro_prefect import PrefectRunner
from kedro_prefect.local_api import EPHEMERAL_API

pytestmark = pytest.mark.integration


def _one(x=None):
    return 1


def _chain(prefix: str) -> Pipeline:
    return Pipeline(
        [
            node(_one, None, f"{prefix}_a", name=f"{prefix}_first"),
            node(_one, f"{prefix}_a", f"{prefix}_b", name=f"{prefix}_second"),
        ]
    )


async def _flow_run_count(api_url: str, flow_name: str) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name]))
            )
    return len(runs)


def test_ephemeral_api_is_launched_once_and_reused_by_every_run():
    runner = PrefectRunner(flow_name="ephemeral-reuse")
    # Launched (or already running) as soon as the runner exists, before any run.
    assert EPHEMERAL_API.running
    runner.run(_chain("first"), DataCatalog())
    launches, url = EPHEMERAL_API.launches, EPHEMERAL_API.url

    PrefectRunner(flow_name="ephemeral-reuse").run(_chain("second"), DataCatalog())
    runner.run(_chain("third"), DataCatalog())

    assert EPHEMERAL_API.launches == launches
    assert EPHEMERAL_API.url == url
    assert asyncio.run(_flow_run_count(url, "ephemeral-reuse")) == 3


def test_tag_concurrency_limits_still_hold_on_the_ephemeral_api():
    """Nodes tagged ``serial`` under a ``tag:serial`` limit of 1 never overlap."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = EPHEMERAL_API.wait()

    async def create_limit() -> None:
        with temporary_settings({PREFECT_API_URL: url}):
            async with get_client() as client:
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name="tag:kp-serial", limit=1)
                )

    asyncio.run(create_limit())
    intervals: list[tuple[float, float]] = []
    lock = threading.Lock()

    def work(x=None):
        start = time.monotonic()
        time.sleep(0.5)
        with lock:
            intervals.append((start, time.monotonic()))
        return 1

    pipeline = Pipeline(
        [node(work, None, f"serial_{i}", name=f"serial_{i}", tags=["kp-serial"]) for i in range(2)]
    )
    PrefectRunner(max_workers=2).run(pipeline, DataCatalog())

    assert len(intervals) == 2
    first, second = sorted(intervals)
    assert first[1] <= second[0], f"tagged nodes overlapped: {intervals}"


def test_driver_never_imports_prefect_server_and_no_server_outlives_a_killed_driver(tmp_path):
    """In a fresh process: run a pipeline on the ephemeral API, then ``kill -9`` that process.

    The server runs in its own process, so the driver only needs Prefect's client (importing
    ``prefect.server`` costs seconds); and when the driver dies without stopping the server,
    the server stops by itself instead of running on as an orphan.
    """
    import psutil

    script = textwrap.dedent(
        """
        import os, signal, sys
        from kedro.io import DataCatalog
        from kedro.pipeline import Pipeline, node
        from kedro_prefect import PrefectRunner
        from kedro_prefect.local_api import EPHEMERAL_API

        def one(x=None):
            return 1

        pipeline = Pipeline([node(one, None, "a", name="n1"), node(one, "a", "b", name="n2")])
        PrefectRunner().run(pipeline, DataCatalog())
        print(sorted(m for m in sys.modules if m.startswith("prefect.server")), flush=True)
        print(EPHEMERAL_API.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == -9, result.stderr[-3000:]
    server_modules, server_pid = result.stdout.strip().splitlines()[-2:]
    assert server_modules == "[]"

    def gone() -> bool:
        try:
            return psutil.Process(int(server_pid)).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 60
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.2)
    if not gone():
        psutil.Process(int(server_pid)).kill()
        pytest.fail("the ephemeral API server outlived the process that launched it")


def test_every_task_run_state_is_in_the_database_when_the_driver_exits(tmp_path):
    """A run's task run states reach the ephemeral API as events, recorded asynchronously.

    The driver exits as soon as the nodes are done, without waiting for that bookkeeping; the
    server must still record every final state before it stops by itself (lingering off), or
    the database keeps task runs "Running".
    """
    import psutil
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from kedro_prefect.local_api import EphemeralAPI

    nodes = 120
    script = textwrap.dedent(
        f"""
        from kedro.io import DataCatalog
        from kedro.pipeline import Pipeline, node
        from kedro_prefect import PrefectRunner
        from kedro_prefect.local_api import EPHEMERAL_API

        def one():
            return 1

        pipeline = Pipeline([node(one, None, f"out{{i}}", name=f"n{{i}}") for i in range({nodes})])
        PrefectRunner(flow_name="settle-at-exit").run(pipeline, DataCatalog())
        print(EPHEMERAL_API.pid)
        """
    )
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**env, "PREFECT_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    server = int(result.stdout.split()[-1])

    def gone() -> bool:
        try:
            return psutil.Process(server).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    # The server stops by itself once it has recorded the run: nothing keeps the database open.
    deadline = time.monotonic() + 120
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gone(), "the ephemeral API server did not stop after the driver exited"

    # Open the same database with a server of its own: what a user sees afterwards.
    reader = EphemeralAPI()
    with temporary_settings({PREFECT_HOME: home}):
        url = reader.wait()
    try:
        with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
            states = [
                task_run.state_name
                for offset in range(0, nodes, 100)
                for task_run in client.read_task_runs(limit=100, offset=offset)
            ]
    finally:
        reader.stop()
    assert states == ["Completed"] * nodes


def test_back_to_back_runs_are_not_refused_by_a_busy_database(monkeypatch):
    """A run starting while the API still records the last run's states must not be refused.

    With Prefect's deferred SQLite transactions the API answers 503 (SQLITE_BUSY_SNAPSHOT) and
    Prefect's client sleeps 2 s, then 4 s, before it retries creating the next flow run.
    """
    import types

    from prefect.client import base

    retry_sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        retry_sleeps.append(seconds)
        time.sleep(seconds)

    # Prefect's client waits between retries with time.sleep in prefect.client.base.
    monkeypatch.setattr(base, "time", types.SimpleNamespace(sleep=sleep))
    pipeline = Pipeline([node(_one, None, f"b2b{i}", name=f"b2b_{i}") for i in range(150)])
    for _ in range(3):
        PrefectRunner(flow_name="back-to-back").run(pipeline, DataCatalog())
    assert retry_sleeps == []


def test_the_server_app_is_built_cheaply_and_keeps_every_router(tmp_path):
    """The ephemeral server builds Prefect's app without full collections, then collects again.

    Its start-up objects are frozen (later collections skip them), and the collector is on
    again, so garbage the server makes while it serves a long run is still freed. The routers a
    run calls come first (FastAPI prepares routers up to the one a request reaches); none is lost.
    """
    script = textwrap.dedent(
        """
        import gc, json
        from prefect.server.api import server
        from kedro_prefect.local_api.server_app import create_app

        before = [router.prefix for router in server.API_ROUTERS]
        full = []
        gc.callbacks.append(lambda phase, info: phase == "stop" and full.append(info["generation"]))
        app = create_app()
        after = [router.prefix for router in server.API_ROUTERS]
        print(json.dumps([gc.isenabled(), gc.get_freeze_count(), full.count(2), before, after]))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**env, "PREFECT_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    enabled, frozen, full_collections, before, after = json.loads(result.stdout.splitlines()[-1])
    assert enabled is True
    # None of the import-time ones; Prefect's own gc.collect() only where it frees the routes it
    # deleted (FastAPI < 0.137 copied them into the app).
    from kedro_prefect._upstream.prefect_server import fastapi_copies_routes_on_include

    assert full_collections == (1 if fastapi_copies_routes_on_include() else 0)
    assert frozen > 100_000
    assert sorted(after) == sorted(before)
    assert after[:3] == ["/admin", "/flows", "/flow_runs"]
