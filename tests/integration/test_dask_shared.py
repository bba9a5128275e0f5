"""One existing Dask cluster shared by several Kedro projects, and the data path on Dask.

Real ``dask scheduler``/``dask worker`` processes (started here, stopped by PID) and real
``kedro run`` processes of two small projects written to disk, reporting to the session's
``prefect server``.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node

from kedro_prefect import PrefectRunner
from tests.helpers import KEDRO
from tests.integration.test_dask import DaskCluster

pytestmark = pytest.mark.integration

NODES = 4


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory) -> DaskCluster:
    """A scheduler and two single-thread workers whose ``sys.path`` has no project on it."""
    cluster = DaskCluster(tmp_path_factory.mktemp("shared-cluster"))
    try:
        cluster.start(workers=[[], []])
        yield cluster
    finally:
        cluster.stop()


def write_project(root: Path, package: str) -> Path:
    """A Kedro project whose hook appends ``<package> <node> <env param>`` to ``events.log``."""
    files = {
        "pyproject.toml": f"""
            [project]
            name = "{package}"
            version = "0.1.0"

            [tool.kedro]
            package_name = "{package}"
            project_name = "{package}"
            kedro_init_version = "1.0.0"
            source_dir = "src"
            """,
        "conf/base/parameters.yml": "label: base\n",
        "conf/base/catalog.yml": "{}\n",
        "conf/local/.keep": "",
        "conf/other/parameters.yml": "label: other\n",
        f"src/{package}/__init__.py": "",
        f"src/{package}/settings.py": f"""
            from {package}.hooks import EventHooks

            HOOKS = (EventHooks(),)
            """,
        f"src/{package}/hooks.py": f"""
            import os
            from pathlib import Path

            from kedro.framework.hooks import hook_impl

            LOG = Path(__file__).resolve().parents[2] / "events.log"


            class EventHooks:
                @hook_impl
                def after_node_run(self, node, inputs):
                    label = inputs.get("params:label", "-")
                    with LOG.open("a") as log:
                        log.write(f"{package} {{node.name}} {{label}} {{os.getpid()}}\\n")
            """,
        f"src/{package}/pipeline_registry.py": f"""
            import time

            from kedro.pipeline import Pipeline, node


            def work(label, *_):
                time.sleep(0.5)
                return label


            def register_pipelines():
                nodes = [node(work, "params:label", "first", name="{package}_first")]
                nodes += [
                    node(work, ["params:label", "first"], f"out{{i}}", name=f"{package}_{{i}}")
                    for i in range({NODES})
                ]
                return {{"__default__": Pipeline(nodes)}}
            """,
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


def _events(project: Path) -> list[tuple[str, str, str]]:
    lines = (project / "events.log").read_text().splitlines()
    return sorted(tuple(line.split()[:3]) for line in lines)


def test_projects_sharing_a_cluster_concurrently_run_only_their_own_hooks(
    shared_cluster, prefect_server, tmp_path
):
    """Two projects, and two environments of one, at the same time on one cluster: each node
    fires exactly its own project's hooks, with its own environment's parameters."""
    alpha = write_project(tmp_path / "alpha", "alpha_project")
    beta = write_project(tmp_path / "beta", "beta_project")
    runs = []
    for project, env in ((alpha, "local"), (beta, "local"), (alpha, "other")):
        params = f"task_runner=dask,address={shared_cluster.address}"
        runs.append(
            subprocess.Popen(
                [KEDRO, "run", f"--env={env}", "--runner=kedro_prefect.PrefectRunner",
                 f"--runner-params={params}"],
                cwd=project,
                env={**os.environ, **prefect_server.env},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )  # fmt: skip
    for process in runs:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output[-4000:]

    def expected(package: str, *labels: str) -> list[tuple[str, str, str]]:
        names = [f"{package}_first", *(f"{package}_{i}" for i in range(NODES))]
        return sorted((package, name, label) for name in names for label in labels)

    assert _events(alpha) == expected("alpha_project", "base", "other")
    assert _events(beta) == expected("beta_project", "base")
    assert shared_cluster.alive()


def test_cluster_options_in_prefect_yml_reach_the_cluster(prefect_server, tmp_path):
    """Nested ``runner:`` values of prefect.yml (they do not fit ``--runner-params``)."""
    project = write_project(tmp_path / "gamma", "gamma_project")
    (project / "conf/base/prefect.yml").write_text(
        textwrap.dedent(
            """
            runner:
              task_runner: dask
              cluster_class: distributed.LocalCluster
              cluster_kwargs: {n_workers: 1, threads_per_worker: 1, dashboard_address: null}
              adapt_kwargs: {minimum: 1, maximum: 1}
              performance_report_path: dask-report.html
            """
        )
    )
    result = subprocess.run(
        [KEDRO, "run", "--runner=kedro_prefect.PrefectRunner"],
        cwd=project,
        env={**os.environ, **prefect_server.env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Dask Performance Report" in (project / "dask-report.html").read_text()
    assert len(_events(project)) == NODES + 1


# --- the data path: worker to worker, released when consumed -------------------------------------


class Payload:
    """Data whose unpickling appends this process's id to ``log`` (wherever it happens)."""

    def __init__(self, log: str, value: int):
        self.log = log
        self.value = value

    def __reduce__(self):
        return (_unpickled, (self.log, self.value))


def _unpickled(log: str, value: int) -> Payload:
    with open(log, "a") as file:
        file.write(f"{os.getpid()}\n")
    return Payload(log, value)


def make_payload(log: str) -> Payload:
    return Payload(log, 41)


def use_payload(payload: Payload) -> int:
    return payload.value + 1


def keys_in_memory(_value: int) -> list[str]:
    """Ask the scheduler (from a node, mid-run) which task results it still holds."""
    from distributed import get_client

    def in_memory(dask_scheduler) -> list[str]:
        return [str(k) for k, ts in dask_scheduler.tasks.items() if ts.state == "memory"]

    return get_client().run_on_scheduler(in_memory)


def test_in_memory_data_is_never_unpickled_in_the_driver(shared_cluster, api, tmp_path):
    log = tmp_path / "unpickled.log"
    log.touch()
    pipeline = Pipeline(
        [
            node(make_payload, "params:log", "payload", name="make_payload"),
            node(use_payload, "payload", "first", name="use_a"),
            node(use_payload, "payload", "second", name="use_b"),
        ]
    )
    catalog = DataCatalog({"params:log": MemoryDataset(str(log))})
    out = PrefectRunner(task_runner="dask", address=shared_cluster.address).run(pipeline, catalog)
    assert out["first"].load() == out["second"].load() == 42
    unpickled_in = {int(pid) for pid in log.read_text().split()}
    assert os.getpid() not in unpickled_in


def test_a_consumed_output_is_gone_from_the_cluster_before_the_run_ends(
    shared_cluster, api, tmp_path
):
    pipeline = Pipeline(
        [
            node(make_payload, "params:log", "payload", name="produce_payload"),
            node(use_payload, "payload", "used", name="consume_payload"),
            node(keys_in_memory, "used", "held", name="ask_scheduler"),
        ]
    )
    catalog = DataCatalog({"params:log": MemoryDataset(str(tmp_path / "unpickled.log"))})
    out = PrefectRunner(task_runner="dask", address=shared_cluster.address).run(pipeline, catalog)
    held = out["held"].load()
    # The consumer's output is still needed (by the node asking); the payload is not.
    assert any(key.startswith("consume_payload-") for key in held), held
    assert not [key for key in held if key.startswith("produce_payload-")], held


@pytest.fixture(scope="module")
def api(prefect_server):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        yield prefect_server.api_url
