"""A local cluster's workers forked from the fork server (dask/forkserver.py), as a user runs it.

``kedro run`` of a real project on disk (``tests/hooks_project.py``) with a ``LocalCluster`` of two
worker processes: the workers are forks of the server process that imported Dask, Prefect and
Kedro once, and each is still a faithful Kedro process for the run: the project's hooks fire
there, and a variable the driver set before the run (as kedro-mlflow exports credentials) is
in their environment. Nothing is left running once ``kedro run`` has exited.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections import Counter
from pathlib import Path

import psutil
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node

from kedro_prefect import PrefectRunner
from tests.helpers import eventually, run_kedro, run_python
from tests.hooks_project import PACKAGE, take_hook_lines, write_project

pytestmark = pytest.mark.integration

TOKEN = "HOOKS_DEMO_TOKEN"

#: A hook recording, for each node, the process it ran in, that process's parent and the
#: variable the driver's ``before_pipeline_run`` set (it fires in the driver only).
ORIGIN_HOOK = f"""
    import json
    import os
    import time
    from pathlib import Path

    import psutil
    from kedro.framework.hooks import hook_impl


    def _started_since_boot(pid):
        # psutil's create_time() adds the boot time in whole seconds: up to 1 s early
        fields = Path(f"/proc/{{pid}}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")


    class Origin:
        @hook_impl
        def before_pipeline_run(self):
            started = time.clock_gettime(time.CLOCK_BOOTTIME)
            Path("data/pipeline-run-started").write_text(repr(started))
            if os.environ.get("KP_KEEP_ENVIRONMENT") != "1":
                os.environ["{TOKEN}"] = f"set by the driver {{os.getpid()}}"

        @hook_impl
        def before_node_run(self, node):
            parent = psutil.Process(os.getppid())
            record = {{
                "node": node.name,
                "pid": os.getpid(),
                "parent": parent.pid,
                "parent_cmdline": " ".join(parent.cmdline()),
                "token": os.environ.get("{TOKEN}"),
                "parent_started": _started_since_boot(parent.pid),
                "environ": {{k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "PYTHONHASHSEED")}},
            }}
            path = Path("data") / f"origin-{{node.name}}.json"
            path.write_text(json.dumps(record))
    """

SETTINGS = """
    from {package}.hooks import Recorder, StatsHook
    from {package}.origin import Origin

    HOOKS = (Recorder(), StatsHook(), Origin())
    """


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _run_on_dask(
    tmp_path: Path, env: dict[str, str] | None = None, *, options_in_prefect_yml: bool = False
) -> Path:
    """``kedro run`` of the hooks project with the Origin hook on a local cluster of 2 workers
    (the options as ``--runner-params``, or in ``conf/base/prefect.yml``);
    ``KP_KEEP_ENVIRONMENT=1``: its ``before_pipeline_run`` sets no variable."""
    project = write_project(tmp_path / "hooks_demo")
    package = project / "src" / PACKAGE
    (package / "origin.py").write_text(textwrap.dedent(ORIGIN_HOOK))
    (package / "settings.py").write_text(textwrap.dedent(SETTINGS.format(package=PACKAGE)))
    options = {"task_runner": "dask", "n_workers": 2, "threads_per_worker": 1}
    if options_in_prefect_yml:
        (project / "conf" / "base" / "prefect.yml").write_text(json.dumps({"runner": options}))
        given = []
    else:
        given = ["--runner-params=" + ",".join(f"{k}={v}" for k, v in options.items())]
    result = run_kedro(project, "run", "--runner=kedro_prefect.PrefectRunner", *given, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return project


def test_kedro_run_forks_the_dask_workers_from_the_server_and_they_run_the_project_s_hooks(
    tmp_path,
):
    project = _run_on_dask(tmp_path)

    origins = [json.loads(p.read_text()) for p in sorted((project / "data").glob("origin-*"))]
    assert sorted(o["node"] for o in origins) == ["join", "left", "make", "right"]
    lines = take_hook_lines(project)
    (driver,) = {pid for hook, pid, _ in lines if hook == "before_pipeline_run"}
    workers = {o["pid"] for o in origins}
    assert driver not in workers
    started = float((project / "data" / "pipeline-run-started").read_text())
    for origin in origins:
        # a fork of the server that imported Dask, Prefect and Kedro, itself started by the run
        assert "multiprocessing.forkserver" in origin["parent_cmdline"], origin
        assert origin["parent"] != driver
        # what the driver's hook added to its environment before the run reached the worker,
        # which is a fork of the server started with the runner, before that hook
        assert origin["token"] == f"set by the driver {driver}"
        assert origin["parent_started"] < started
    # the project's hooks fired in the worker processes, as on spawned workers
    on_workers = Counter(hook for hook, pid, _ in lines if pid in workers)
    assert on_workers["before_node_run"] == 4
    assert on_workers["after_context_created"] == len(workers)
    assert {d for h, p, d in lines if h == "after_context_created" and p in workers} == {"2"}

    # kedro run has exited: neither its workers nor the fork server are left running
    servers = {o["parent"] for o in origins}
    assert eventually(lambda: not any(_alive(pid) for pid in workers | servers), timeout=30)


def test_only_variables_added_since_the_server_started_that_nothing_reads_at_start_are_handed_on():
    from kedro_prefect.dask.forkserver import _added_since

    started = {"PATH": "/bin", "HOME": "/root"}
    # scikit-learn's, as the project's pipelines import it; a hook's credentials
    added = {"KMP_DUPLICATE_LIB_OK": "True", "MLFLOW_TRACKING_TOKEN": "t"}
    assert _added_since({**started, **added}, started) == added
    assert _added_since(dict(started), started) == {}
    # read as the interpreter starts or numpy is imported: the server must be started with it
    assert _added_since({**started, "OMP_NUM_THREADS": "1"}, started) is None
    assert _added_since({**started, "PYTHONPATH": "/src"}, started) is None
    # a changed or removed variable
    assert _added_since({**started, "PATH": "/usr/bin"}, started) is None
    assert _added_since({"PATH": "/bin"}, started) is None


# --- in the same process, a later run's environment --------------------------------------------


def token(_seed: int) -> str | None:
    return os.environ.get(TOKEN)


def test_a_variable_set_between_two_runs_in_one_process_reaches_the_second_run_s_workers(
    monkeypatch,
):
    """The fork server keeps the environment it was started with; a later cluster in the same
    process whose environment changed does not fork from it (its workers are spawned)."""
    pipeline = Pipeline([node(token, "params:s", "token", name="token")])
    options = {"task_runner": "dask", "cluster_kwargs": {"n_workers": 1, "dashboard_address": None}}
    monkeypatch.setenv(TOKEN, "first")
    first = PrefectRunner(**options).run(pipeline, DataCatalog({"params:s": MemoryDataset(1)}))
    monkeypatch.setenv(TOKEN, "second")
    second = PrefectRunner(**options).run(pipeline, DataCatalog({"params:s": MemoryDataset(1)}))
    assert (first["token"].load(), second["token"].load()) == ("first", "second")


#: Two runs one after the other in a fresh process, as in a notebook; prints each run's worker's
#: parent process (PID and command line).
TWO_RUNS = """
import json, os, psutil
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro_prefect import PrefectRunner


def parent(_seed):
    process = psutil.Process(os.getppid())
    return process.pid, " ".join(process.cmdline())


if __name__ == "__main__":
    pipeline = Pipeline([node(parent, "params:s", "parent", name="parent")])
    options = {"task_runner": "dask", "cluster_kwargs": {"n_workers": 1, "dashboard_address": None}}
    for _ in range(2):
        run = PrefectRunner(**options).run(pipeline, DataCatalog({"params:s": MemoryDataset(1)}))
        print("PARENT", json.dumps(run["parent"].load()), flush=True)
"""


def test_a_later_run_in_the_same_process_forks_its_workers_from_the_same_server(tmp_path):
    """A notebook or a script running pipelines one after the other: the fork server started
    with the first run serves the next runs' clusters too (each would otherwise spawn its
    workers, ~1.5 s more per run)."""
    script = tmp_path / "two_runs.py"
    script.write_text(TWO_RUNS)
    result = run_python(tmp_path, str(script))
    parents = [json.loads(line[7:]) for line in result.stdout.splitlines() if line[:7] == "PARENT "]
    assert len(parents) == 2, result.stdout
    assert "multiprocessing.forkserver" in parents[0][1], parents
    assert parents[1] == parents[0]


@pytest.mark.parametrize(
    "options_in_prefect_yml", [False, True], ids=["runner-params", "prefect.yml"]
)
def test_without_a_change_of_environment_the_workers_fork_from_the_server_started_with_the_runner(
    tmp_path, options_in_prefect_yml
):
    """The fork server starts as the runner is built (with ``task_runner=dask`` in prefect.yml:
    as the session creates the project's context), before the pipeline run begins, and the
    workers get what a Nanny gives a spawned worker (distributed's pre-spawn environment)."""
    from kedro_prefect._upstream.dask_processes import pre_spawn_environ

    project = _run_on_dask(
        tmp_path, {"KP_KEEP_ENVIRONMENT": "1"}, options_in_prefect_yml=options_in_prefect_yml
    )

    started = float((project / "data" / "pipeline-run-started").read_text())
    origins = [json.loads(p.read_text()) for p in sorted((project / "data").glob("origin-*"))]
    assert len(origins) == 4
    expected = pre_spawn_environ()
    for origin in origins:
        assert "multiprocessing.forkserver" in origin["parent_cmdline"], origin
        assert origin["parent_started"] < started  # started with the runner, not replaced
        for name, value in origin["environ"].items():
            assert value == expected.get(name), (name, origin)
