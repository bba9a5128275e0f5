"""Clusters started by the run: placement of fan-outs, adaptive and custom clusters, bad input.

Each run starts its own ``LocalCluster`` of worker processes (``cluster_kwargs``), reporting to
the session's ``prefect server``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import dask
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node

from kedro_prefect import PrefectRunner, PrefectRunnerConfigError
from kedro_prefect.errors import DaskClusterError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(prefect_server):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        yield prefect_server.api_url


# --- node functions (module level: the workers import them) --------------------------------------


def start(directory: str) -> str:
    return directory


def meet(directory: str, me: str, other: str) -> tuple[int, bool]:
    """Say "I am running", then wait (up to 60 s) for the other branch to say so too."""
    Path(directory, me).touch()
    deadline = time.monotonic() + 60
    while not Path(directory, other).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return os.getpid(), Path(directory, other).exists()


def where(_seed: int) -> str:
    from distributed import get_worker

    time.sleep(2)
    return get_worker().address


def watch_scale_down(*addresses: str) -> tuple[int, int]:
    """Distinct workers of the wide stage, and workers left once the cluster scaled down."""
    from distributed import get_client

    client = get_client()
    deadline = time.monotonic() + 90
    while len(client.scheduler_info(n_workers=-1)["workers"]) > 1 and time.monotonic() < deadline:
        time.sleep(0.25)
    return len(set(addresses)), len(client.scheduler_info(n_workers=-1)["workers"])


def touch(path: str) -> str:
    Path(path).touch()
    return path


# --- placement -----------------------------------------------------------------------------------


def test_branches_of_a_fan_out_run_side_by_side_on_free_workers(api, tmp_path):
    """Two branches of one producer on two single-thread workers run at the same time.

    Work stealing is off, so Dask alone would queue both branches on the producer's worker
    (the one holding their input) and they would never meet.
    """
    pipeline = Pipeline(
        [
            node(start, "params:dir", "dir", name="produce"),
            node(meet, ["dir", "params:a", "params:b"], "left", name="left"),
            node(meet, ["dir", "params:b", "params:a"], "right", name="right"),
        ]
    )
    catalog = DataCatalog(
        {
            "params:dir": MemoryDataset(str(tmp_path)),
            "params:a": MemoryDataset("a"),
            "params:b": MemoryDataset("b"),
        }
    )
    runner = PrefectRunner(
        task_runner="dask",
        cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "dashboard_address": None},
    )
    with dask.config.set({"distributed.scheduler.work-stealing": False}):
        out = runner.run(pipeline, catalog)
    (left_pid, left_met), (right_pid, right_met) = out["left"].load(), out["right"].load()
    assert left_met and right_met
    assert left_pid != right_pid


# --- adaptive and custom clusters ----------------------------------------------------------------


def test_adaptive_local_cluster_scales_up_for_a_wide_pipeline_and_back_down(api, tmp_path):
    report = tmp_path / "report.html"
    pipeline = Pipeline(
        [node(where, "params:seed", f"w{i}", name=f"wide_{i}") for i in range(4)]
        + [node(watch_scale_down, [f"w{i}" for i in range(4)], "scaling", name="watch")]
    )
    runner = PrefectRunner(
        task_runner="dask",
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": 0, "threads_per_worker": 1, "dashboard_address": None},
        adapt_kwargs={
            "minimum": 0,
            "maximum": 2,
            "target_duration": "0.2s",
            "interval": "0.5s",
            "wait_count": 2,
        },
        performance_report_path=str(report),
        flow_name="dask-adaptive",
    )
    out = runner.run(pipeline, DataCatalog({"params:seed": MemoryDataset(1)}))
    wide_workers, workers_left = out["scaling"].load()
    assert wide_workers == 2  # scaled up from none to the maximum for the wide stage ...
    assert workers_left == 1  # ... and back down while the last node ran
    assert "Dask Performance Report" in report.read_text()


def test_performance_report_is_linked_from_the_flow_run(api, prefect_server, tmp_path):
    from tests.helpers import api_client, latest_flow_run

    report = tmp_path / "perf" / "report.html"
    report.parent.mkdir()
    runner = PrefectRunner(
        task_runner="dask",
        n_workers=1,
        threads_per_worker=1,
        performance_report_path=str(report),
        flow_name="dask-report",
    )
    runner.run(Pipeline([node(touch, "params:p", "t", name="touch")]),
               DataCatalog({"params:p": MemoryDataset(str(tmp_path / "t"))}))  # fmt: skip
    assert report.exists()
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with api_client(prefect_server) as client:
        flow_run = latest_flow_run(client, "dask-report")
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
    links = [a for a in artifacts if report.resolve().as_uri() in str(a.data)]
    assert len(links) == 1, [a.data for a in artifacts]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cluster_class": "no_such_package.Cluster"}, "cannot import it"),
        ({"cluster_class": "distributed.LocalCluster", "cluster_kwargs": {"n_wokers": 2}},
         "take no argument 'n_wokers'"),
        ({"cluster_class": "distributed.deploy.spec.SpecCluster",
          "cluster_kwargs": {"no_such_argument": 1}}, "no_such_argument"),
        ({"n_workers": 1, "adapt_kwargs": {"minimun": 0}}, "minimun"),
    ],
)  # fmt: skip
def test_a_cluster_that_cannot_be_built_is_one_error_before_any_node_runs(
    api, tmp_path, options, message
):
    marker = tmp_path / "ran"
    runner = PrefectRunner(task_runner="dask", **options)
    with pytest.raises(DaskClusterError, match=message) as error:
        runner.run(Pipeline([node(touch, "params:p", "t", name="touch")]),
                   DataCatalog({"params:p": MemoryDataset(str(marker))}))  # fmt: skip
    assert isinstance(error.value, PrefectRunnerConfigError)
    assert "no node has run" in str(error.value)
    assert not marker.exists()


def test_address_with_a_cluster_class_is_refused_when_the_runner_is_built():
    with pytest.raises(PrefectRunnerConfigError, match="cannot be combined with address="):
        PrefectRunner(
            task_runner="dask",
            address="tcp://127.0.0.1:8786",
            cluster_class="distributed.LocalCluster",
        )


# --- a local cluster started early (dask/early.py, dask/preload.py) ------------------------------


def worker_state(_seed: int) -> dict[str, object]:
    """What the worker running this node had prepared before it."""
    import gc
    import sys

    return {
        "preloaded": "kedro_prefect.dask.preload" in sys.modules,
        "frozen": gc.get_freeze_count(),
    }


def _worker_processes() -> list[object]:
    import psutil

    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            command = " ".join(child.cmdline())
            if "spawn_main" in command:  # a spawned Dask worker process
                found.append(child)
            elif "multiprocessing.forkserver" in command and child.ppid() != os.getpid():
                found.append(child)  # a worker forked from the fork server (not the server)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):  # exited meanwhile
            continue
    return found


def test_the_local_cluster_s_workers_are_prepared_for_the_run_before_its_first_node(api):
    pipeline = Pipeline([node(worker_state, "params:s", "state", name="state")])
    runner = PrefectRunner(
        task_runner="dask", cluster_kwargs={"n_workers": 1, "dashboard_address": None}
    )
    state = runner.run(pipeline, DataCatalog({"params:s": MemoryDataset(1)}))["state"].load()
    # the worker imported Prefect, Kedro and the node's module as it started, then froze them
    assert state["preloaded"] is True
    assert state["frozen"] > 10_000


def test_a_cluster_started_early_is_closed_when_the_run_never_takes_it(api):
    from kedro_prefect.config.options import parse_runner_options
    from kedro_prefect.dask.early import local_cluster_started_early

    before = {p.pid for p in _worker_processes()}
    options = parse_runner_options(
        {"task_runner": "dask", "cluster_kwargs": {"n_workers": 1, "dashboard_address": None}}
    )
    pipeline = Pipeline([node(worker_state, "params:s", "state", name="state")])
    with local_cluster_started_early(options, pipeline, DataCatalog()) as early:
        assert early is not None  # starting in the background; the run fails before taking it
        deadline = time.monotonic() + 60
        while not {p.pid for p in _worker_processes()} - before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert {p.pid for p in _worker_processes()} - before  # its worker process started
    deadline = time.monotonic() + 60  # a loaded machine takes its time to close a cluster
    while {p.pid for p in _worker_processes()} - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert {p.pid for p in _worker_processes()} - before == set()


def test_address_and_other_cluster_classes_do_not_start_early():
    from kedro_prefect.config.options import parse_runner_options
    from kedro_prefect.dask.early import local_cluster_started_early

    for given in (
        {"address": "tcp://127.0.0.1:8786"},
        {"cluster_class": "distributed.deploy.spec.SpecCluster"},
    ):
        options = parse_runner_options({"task_runner": "dask", **given})
        with local_cluster_started_early(options, Pipeline([]), DataCatalog()) as early:
            assert early is None
