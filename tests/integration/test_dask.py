"""PrefectRunner with ``task_runner=dask``: real scheduler and worker processes on 127.0.0.1.

One ``dask scheduler`` with two ``dask worker`` processes (one of them declaring ``GPU=1``) is
shared by the module; runs report to the session's real ``prefect server``. The example project
runs through the ``kedro`` CLI, once on a LocalCluster started by the runner and once on the
existing cluster (whose workers do not have the project's ``src`` on their path).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner

from kedro_prefect import PrefectRunner, PrefectRunnerConfigError
from kedro_prefect.errors import DaskDatasetError, DaskSchedulerUnreachableError
from tests.helpers import (
    REPO,
    api_client,
    artifacts_of,
    free_port,
    latest_flow_run,
    run_kedro,
    table_rows,
)
from tests.pipelines import TextFileDataset, add_one, boom, double, namespaced, split, total

pytestmark = pytest.mark.integration

DASK = str(Path(sys.executable).with_name("dask"))


# --- a real cluster ------------------------------------------------------------------------------


class DaskCluster:
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, stopped by PID."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen[bytes]] = []
        # Workers import the test module (node functions) but not the example project.
        self.env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.env.pop("PREFECT_API_URL", None)

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [DASK, *args],
            env=self.env,
            cwd=self.log_dir,
            stdout=open(self.log_dir / f"{name}.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def start(self, workers: list[list[str]], timeout: float = 120) -> None:
        self._spawn(
            "scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
            "--no-dashboard",
        )  # fmt: skip
        for i, extra in enumerate(workers):
            self._spawn(
                f"worker{i}", "worker", self.address, "--host", "127.0.0.1", "--nthreads", "1",
                "--name", f"w{i}", "--no-dashboard", *extra,
            )  # fmt: skip
        self.wait_for_workers(len(workers), timeout)

    def workers(self) -> dict[str, dict[str, Any]]:
        """Worker address -> {"pid": worker process id, "resources": declared resources}."""
        from distributed import Client

        with Client(self.address, timeout="20s") as client:
            info = client.scheduler_info(n_workers=-1)["workers"]
            pids = client.run(os.getpid)
        return {
            address: {"pid": pids.get(address), "resources": worker.get("resources", {})}
            for address, worker in info.items()
        }

    def wait_for_workers(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, TimeoutError):
                if len(self.workers()) >= n:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"dask workers did not start: see {self.log_dir}")

    def alive(self) -> bool:
        return all(process.poll() is None for process in self.processes)

    def stop(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> DaskCluster:
    cluster = DaskCluster(tmp_path_factory.mktemp("dask-cluster"))
    try:
        cluster.start(workers=[["--resources", "GPU=1"], []])
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def api(prefect_server):
    """In-process runs report to the session's ``prefect server`` (not an ephemeral API)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        yield prefect_server.api_url


# --- node functions (module level: pickled by reference, imported by the workers) ----------------


def dict_chunks(x):
    for i in range(3):
        yield {"chunked": x + i, "count": i}


def worker_pid(x):
    return os.getpid()


def pid_then_sleep(x, pid_file):
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(8)
    return x + 100


class SingleProcessDataset(TextFileDataset):
    _SINGLE_PROCESS = True


class LockedDataset(TextFileDataset):
    def __init__(self, filepath: str):
        super().__init__(filepath)
        self._lock = threading.Lock()


def fan_out_fan_in() -> Pipeline:
    """``tests.pipelines.fan_out_fan_in`` with a parameter: a free in-memory input sent along."""
    return Pipeline(
        [
            node(add_one, "source", "base", name="prepare"),
            node(double, "base", "left", name="left"),
            node(add_one, "base", "middle", name="middle"),
            node(split, "base", ["right", "mirror"], name="right"),
            node(total, ["left", "middle", "right", "mirror", "params:bonus"], "summed"),
        ]
    )


def generator() -> Pipeline:
    """A generator node with dict outputs, each chunk saved as it comes."""
    return Pipeline(
        [
            node(dict_chunks, "source", {"chunked": "chunked", "count": "count"}, name="gen"),
            node(add_one, "chunked", "after_gen", name="consume"),
        ]
    )


def _catalog(tmp_path: Path) -> DataCatalog:
    return DataCatalog(
        {
            "source": MemoryDataset(1),
            "params:bonus": MemoryDataset(1000),
            "base": TextFileDataset(str(tmp_path / "base.txt")),
        }
    )


def _run(runner, pipeline: Pipeline, catalog: DataCatalog) -> dict[str, Any]:
    return {name: ds.load() for name, ds in runner.run(pipeline, catalog).items()}


# --- in-process runs on the existing cluster ------------------------------------------------------


@pytest.mark.parametrize("make_pipeline", [fan_out_fan_in, namespaced, generator])
def test_outputs_match_sequential_runner(make_pipeline, cluster, api, tmp_path):
    pipeline = make_pipeline()
    (tmp_path / "seq").mkdir()
    (tmp_path / "dask").mkdir()
    expected = _run(SequentialRunner(), pipeline, _catalog(tmp_path / "seq"))
    got = _run(
        PrefectRunner(task_runner="dask", address=cluster.address),
        pipeline,
        _catalog(tmp_path / "dask"),
    )
    assert got == expected
    assert got  # the free outputs came back to the driver
    assert cluster.alive()
    assert len(cluster.workers()) == 2  # an existing cluster is left running


def test_persisted_datasets_are_saved_by_the_workers(cluster, api, tmp_path):
    catalog = _catalog(tmp_path)
    _run(PrefectRunner(task_runner="dask", address=cluster.address), fan_out_fan_in(), catalog)
    assert (tmp_path / "base.txt").read_text() == "2"


def test_node_asking_for_a_resource_runs_only_on_the_worker_declaring_it(cluster, api):
    gpu_pids = {info["pid"] for info in cluster.workers().values() if info["resources"].get("GPU")}
    other_pids = {info["pid"] for info in cluster.workers().values()} - gpu_pids
    pipeline = Pipeline(
        [node(worker_pid, "source", f"gpu{i}", tags=["dask-GPU-1"]) for i in range(4)]
        + [node(worker_pid, "source", f"any{i}") for i in range(4)]
    )
    got = _run(
        PrefectRunner(task_runner="dask", address=cluster.address),
        pipeline,
        DataCatalog({"source": MemoryDataset(0)}),
    )
    assert {got[f"gpu{i}"] for i in range(4)} == gpu_pids
    assert os.getpid() not in got.values()  # nodes ran in the worker processes
    assert len(other_pids) == 1


def test_dask_dashboard_names_tasks_after_nodes(cluster, api):
    """The Dask dashboard (task stream, progress) groups tasks by key prefix: the node name."""
    from distributed import Client

    pipeline = Pipeline([node(worker_pid, "source", "pid", name="find_worker_pid")])
    with Client(cluster.address) as client:
        before = set(client.run_on_scheduler(_task_prefixes))
        _run(
            PrefectRunner(task_runner="dask", address=cluster.address),
            pipeline,
            DataCatalog({"source": MemoryDataset(0)}),
        )
        added = set(client.run_on_scheduler(_task_prefixes)) - before
    assert "find_worker_pid" in added


def test_node_table_of_a_dask_run_comes_from_the_workers(
    cluster, api, prefect_server, monkeypatch, tmp_path
):
    """Attempts, start, duration and worker of each node come back from the workers.

    The driver does not read the task runs back from the API (and wait for the states the
    workers sent it to be recorded). (Placement asks the scheduler where a ready node's inputs
    are, for the node about to run; the table's worker column comes from the workers.)
    """
    from prefect.client.orchestration import SyncPrefectClient

    calls: list[str] = []

    def counting(cls, name):
        original = getattr(cls, name)

        def counted(self, *args, **kwargs):
            calls.append(name)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, counted)

    counting(SyncPrefectClient, "read_task_runs")  # reading task runs back from the API
    _run(
        PrefectRunner(task_runner="dask", address=cluster.address, flow_name="dask-table"),
        fan_out_fan_in(),
        _catalog(tmp_path),
    )
    monkeypatch.undo()
    assert calls == []
    with api_client(prefect_server) as client:
        flow_run = latest_flow_run(client, "dask-table")
        (artifact,) = artifacts_of(client, flow_run.id, "dask-table-default-nodes")
    rows = table_rows(artifact)
    assert sorted(row["node"] for row in rows) == sorted(n.name for n in fan_out_fan_in().nodes)
    for row in rows:
        assert row["state"] == "Completed" and row["attempts"] == 1, row
        assert row["start"] and row["duration"].endswith(" s"), row
        assert row["worker"].startswith("tcp://127.0.0.1:"), row


def test_prefect_draws_the_pipeline_edges_of_a_dask_run(cluster, api, prefect_server, tmp_path):
    """Each node's task run records its producers' task runs as inputs (the UI's graph edges),
    whether the data came through a persisted dataset (``base``) or in memory (``left``...)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    pipeline = fan_out_fan_in()
    _run(
        PrefectRunner(task_runner="dask", address=cluster.address, flow_name="dask-edges"),
        pipeline,
        _catalog(tmp_path),
    )
    names = {node_.name for node_ in pipeline.nodes}
    deadline = time.monotonic() + 30  # task runs reach the server as events, a moment later
    with api_client(prefect_server) as client:
        flow_run = latest_flow_run(client, "dask-edges")
        while True:
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
            )
            by_name = {task_run.name: task_run for task_run in task_runs}
            if names <= set(by_name) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    for node_, producers in pipeline.node_dependencies.items():
        recorded = {
            str(run_input.id)
            for inputs in by_name[node_.name].task_inputs.values()
            for run_input in inputs
            if hasattr(run_input, "id")
        }
        expected = {str(by_name[p.name].id) for p in producers}
        assert expected <= recorded, (node_.name, expected - recorded)
    assert any(pipeline.node_dependencies.values())


def _task_prefixes(dask_scheduler) -> list[str]:
    return list(dask_scheduler.task_prefixes)


def _spawned_processes() -> set[int]:
    """PIDs of this process's descendants started by multiprocessing (Dask worker processes)."""
    import psutil

    pids = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "spawn_main" in " ".join(child.cmdline()):
                pids.add(child.pid)
    return pids


def test_local_cluster_is_closed_when_a_node_fails_and_the_node_error_is_raised(api, tmp_path):
    pipeline = Pipeline(
        [node(add_one, "source", "base", name="prepare"), node(boom, "base", "out", name="boom")]
    )
    before = _spawned_processes()
    with pytest.raises(ValueError, match="boom on 2"):
        PrefectRunner(task_runner="dask", n_workers=1, threads_per_worker=1).run(
            pipeline, _catalog(tmp_path)
        )
    assert (tmp_path / "base.txt").read_text() == "2"  # the first node ran on the cluster
    assert not _spawned_processes() - before  # the LocalCluster's worker processes are gone


# --- bad inputs: clear errors before any node runs ------------------------------------------------


def test_unreachable_address_fails_naming_it_before_any_node_runs(api, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    catalog = _catalog(tmp_path)
    with pytest.raises(DaskSchedulerUnreachableError, match=address):
        PrefectRunner(task_runner="dask", address=address).run(fan_out_fan_in(), catalog)
    assert not (tmp_path / "base.txt").exists()


def test_remote_scheduler_with_an_api_only_on_this_machine_is_refused(api, tmp_path):
    with pytest.raises(PrefectRunnerConfigError, match="PREFECT_API_URL") as error:
        PrefectRunner(task_runner="dask", address="tcp://192.0.2.10:8786").run(
            fan_out_fan_in(), _catalog(tmp_path)
        )
    assert "192.0.2.10" in str(error.value)
    assert not (tmp_path / "base.txt").exists()


@pytest.mark.parametrize(
    ("dataset_class", "reason"),
    [(SingleProcessDataset, "_SINGLE_PROCESS"), (LockedDataset, "cannot be pickled")],
)
def test_datasets_that_cannot_cross_processes_are_refused(
    dataset_class, reason, cluster, api, tmp_path
):
    catalog = _catalog(tmp_path)
    catalog["left"] = dataset_class(str(tmp_path / "left.txt"))
    with pytest.raises(DaskDatasetError, match=reason) as error:
        PrefectRunner(task_runner="dask", address=cluster.address).run(fan_out_fan_in(), catalog)
    assert f"left ({dataset_class.__name__})" in str(error.value)
    assert not (tmp_path / "base.txt").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"address": "tcp://127.0.0.1:8786"}, "only apply to task_runner=dask"),
        ({"task_runner": "thread", "n_workers": 2}, "only apply to task_runner=dask"),
        (
            {"task_runner": "dask", "address": "tcp://127.0.0.1:8786", "n_workers": 2},
            "cannot be combined with address",
        ),
        ({"task_runner": "dask", "address": "nowhere"}, "tcp://HOST:PORT"),
        ({"task_runner": "dask", "max_workers": 4}, "n_workers and threads_per_worker"),
        ({"task_runner": "dask", "n_workers": 0}, "n_workers"),
        ({"cluster_kwargs": {"n_workers": 1}}, "only apply to task_runner=dask"),
        (
            {"task_runner": "dask", "address": "tcp://127.0.0.1:8786", "adapt_kwargs": {}},
            "adapt_kwargs describe a cluster started for the run",
        ),
        ({"task_runner": "dask", "cluster_class": "LocalCluster"}, "import path"),
        ({"task_runner": "dask", "client_kwargs": {"asynchronous": True}}, "asynchronous"),
    ],
)
def test_bad_dask_options_are_refused_when_the_runner_is_built(options, message):
    with pytest.raises(PrefectRunnerConfigError, match=message):
        PrefectRunner(**options)


def test_bad_resource_tag_is_refused_before_any_node_runs(cluster, api, tmp_path):
    pipeline = Pipeline(
        [node(add_one, "source", "base"), node(double, "base", "out", tags=["dask-GPU"])]
    )
    with pytest.raises(PrefectRunnerConfigError, match="dask-GPU-1"):
        PrefectRunner(task_runner="dask", address=cluster.address).run(pipeline, _catalog(tmp_path))
    assert not (tmp_path / "base.txt").exists()


# --- the example project through the kedro CLI ----------------------------------------------------

_PID_HOOKS = """

import os as _os
from pathlib import Path as _Path

from kedro.framework.hooks import hook_impl as _hook_impl

_PIDS = _Path(__file__).resolve().parents[2] / "hook_pids"


class _PidHooks:
    @_hook_impl
    def before_pipeline_run(self):
        _PIDS.mkdir(exist_ok=True)
        (_PIDS / "driver").write_text(str(_os.getpid()))

    @_hook_impl
    def after_node_run(self, node):
        _PIDS.mkdir(exist_ok=True)
        (_PIDS / node.name).write_text(str(_os.getpid()))


HOOKS = (*HOOKS, _PidHooks())
"""

_OUTPUTS = ("data/08_reporting/region_report.csv", "data/08_reporting/top_products.csv")


def _outputs(project: Path) -> list[pd.DataFrame]:
    return [pd.read_csv(project / name) for name in _OUTPUTS]


@pytest.fixture(scope="module")
def sequential_outputs(tmp_path_factory) -> list[pd.DataFrame]:
    import shutil

    from tests.helpers import EXAMPLE_PROJECT

    project = tmp_path_factory.mktemp("sequential") / "sales_demo"
    shutil.copytree(EXAMPLE_PROJECT, project, ignore=shutil.ignore_patterns("*.parquet", "logs"))
    for name in _OUTPUTS:
        (project / name).unlink(missing_ok=True)
    result = run_kedro(project, "run")
    assert result.returncode == 0, result.stderr
    return _outputs(project)


def _task_run_logs(api_url: str, flow_name: str) -> list[dict[str, Any]]:
    flow_runs = httpx.post(
        f"{api_url}/flow_runs/filter",
        json={"flows": {"name": {"any_": [flow_name]}}, "sort": "START_TIME_DESC", "limit": 1},
    ).json()
    logs = httpx.post(
        f"{api_url}/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [flow_runs[0]["id"]]}}, "limit": 200},
    ).json()
    return [log for log in logs if log["task_run_id"]]


def _task_runs(api_url: str, flow_name: str) -> list[dict[str, Any]]:
    flow_runs = httpx.post(
        f"{api_url}/flow_runs/filter",
        json={"flows": {"name": {"any_": [flow_name]}}, "sort": "START_TIME_DESC", "limit": 1},
    ).json()
    return httpx.post(
        f"{api_url}/task_runs/filter",
        json={"flow_runs": {"id": {"any_": [flow_runs[0]["id"]]}}},
    ).json()


def _check_example_run(project: Path, result, sequential_outputs, api_url: str, flow: str):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for got, expected in zip(_outputs(project), sequential_outputs, strict=True):
        pd.testing.assert_frame_equal(got, expected)
    pids = {p.name: int(p.read_text()) for p in (project / "hook_pids").iterdir()}
    driver = pids.pop("driver")
    assert len(pids) == 13  # the project's hooks fired for every node ...
    assert driver not in pids.values()  # ... in the worker processes
    # Every task run reached the run's Prefect API from the workers, and so did the
    # log records the project's hook emitted there.
    runs = _task_runs(api_url, flow)
    assert len(runs) == 13
    assert {run["state_type"] for run in runs} == {"COMPLETED"}
    messages = [log["message"] for log in _task_run_logs(api_url, flow)]
    assert sum("sales_demo hook: node" in m for m in messages) == 13


def test_example_project_on_a_local_cluster(example_project, prefect_server, sequential_outputs):
    settings = example_project / "src" / "sales_demo" / "settings.py"
    settings.write_text(settings.read_text() + _PID_HOOKS)
    result = run_kedro(
        example_project,
        "run",
        "--runner=kedro_prefect.PrefectRunner",
        "--runner-params=task_runner=dask,n_workers=2,threads_per_worker=1,flow_name=dask-local",
        env=prefect_server.env,
    )
    _check_example_run(example_project, result, sequential_outputs, prefect_server.api_url,
                       "dask-local")  # fmt: skip
    assert "Dask dashboard" in result.stdout + result.stderr


def test_example_project_on_an_existing_cluster(
    example_project, prefect_server, sequential_outputs, cluster
):
    settings = example_project / "src" / "sales_demo" / "settings.py"
    settings.write_text(settings.read_text() + _PID_HOOKS)
    result = run_kedro(
        example_project,
        "run",
        "--runner=kedro_prefect.PrefectRunner",
        f"--runner-params=task_runner=dask,address={cluster.address},flow_name=dask-existing",
        env=prefect_server.env,
    )
    _check_example_run(example_project, result, sequential_outputs, prefect_server.api_url,
                       "dask-existing")  # fmt: skip
    assert cluster.alive()
    assert len(cluster.workers()) == 2


# --- fault: a worker dies mid-node (last: it restarts a worker of the shared cluster) -----------


def test_run_completes_when_a_worker_is_killed_during_a_node(cluster, api, tmp_path):
    pid_file = tmp_path / "pid"
    pipeline = Pipeline(
        [
            node(add_one, "source", "base", name="prepare"),
            node(pid_then_sleep, ["base", "params:pid_file"], "slow", name="slow"),
            node(double, "base", "fast", name="fast"),
            node(total, ["slow", "fast"], "summed", name="gather"),
        ]
    )
    catalog = DataCatalog(
        {"source": MemoryDataset(1), "params:pid_file": MemoryDataset(str(pid_file))}
    )
    killed: list[int] = []

    def kill_the_worker_running_slow() -> None:
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_the_worker_running_slow, daemon=True)
    killer.start()
    got = _run(PrefectRunner(task_runner="dask", address=cluster.address), pipeline, catalog)
    killer.join(timeout=5)
    assert killed  # the worker really died mid-node
    assert got == {"summed": (2 + 100) + 4}
    cluster.wait_for_workers(2)  # the nanny restarted it; the cluster is still usable
