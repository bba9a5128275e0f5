"""``skip_unchanged`` end to end: a real project on disk, real files, a real Prefect API.

The project (``tests/skip_project.py``) records every node and dataset hook in
``data/events.log``: a node ran when its ``before_node_run`` hook fired. Each test keeps its
cache in its own directory (``prefect.yml`` ``cache: path:``). Runs go through ``KedroSession``
in this process (the ephemeral API), except where a fresh process is the point (edited node
code) or where task run states are read back (a real ``prefect server``).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from kedro_prefect import PrefectRunner
from kedro_prefect.errors import CacheStorageError, PrefectRunnerConfigError, ProjectConfigError
from tests.helpers import api_client, artifacts_of, latest_flow_run, run_kedro, table_rows
from tests.integration.test_reliability import task_runs
from tests.reliability_project import write_prefect_yml
from tests.skip_project import NODES, ran, take_events, write_project

pytestmark = pytest.mark.integration

RUNNER = "--runner=kedro_prefect.PrefectRunner"
ALL = set(NODES)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = write_project(tmp_path / "skip_demo")
    write_prefect_yml(root, f"cache:\n  path: {tmp_path / 'cache'}\n")
    return root


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.INFO) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]


@pytest.fixture
def session_run(project, monkeypatch):
    """Run the project through ``KedroSession`` in this process; returns the hook events."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.chdir(project)
    bootstrap_project(project)
    records = _Records()
    logging.getLogger("kedro_prefect").addHandler(records)

    def run(params: dict | None = None, api_url: str | None = None, **runner_params):
        runner_params.setdefault("skip_unchanged", True)
        runner = PrefectRunner(**runner_params)
        settings = {PREFECT_API_URL: api_url} if api_url else {}
        records.records.clear()
        try:
            with (
                temporary_settings(settings),
                KedroSession.create(project_path=project, runtime_params=params) as session,
            ):
                session.run(runner=runner)
        finally:
            run.events = take_events(project)
        return run.events

    run.records = records
    yield run
    logging.getLogger("kedro_prefect").removeHandler(records)
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    EventsWorker.drain_all(timeout=30)
    APILogWorker.drain_all(timeout=30)


def outputs(project: Path) -> dict[str, str]:
    names = ("report", "count", "summary", "stamp", "final")
    return {name: (project / "data" / f"{name}.txt").read_text() for name in names}


def test_unchanged_rerun_runs_nothing_and_logs_each_skipped_node(project, session_run):
    assert ran(session_run()) == ALL
    first = outputs(project)

    events = session_run()

    assert events == []  # no node hook, no dataset loaded or saved
    assert outputs(project) == first
    skipped = [m for m in session_run.records.messages() if m.startswith("Skipped node: ")]
    assert sorted(m.split()[2] for m in skipped) == sorted(NODES)
    assert not session_run.records.messages(logging.WARNING)


def test_changed_parameter_runs_exactly_its_readers_and_their_downstream(project, session_run):
    session_run()

    events = session_run(params={"factor": 3})

    assert ran(events) == {"scale", "report", "final"}
    # `cleaned` (in memory) came back from the cache of the skipped `clean` node
    assert (project / "data" / "final.txt").read_text() == "3,6,9 stamp!"
    assert ran(session_run(params={"factor": 3})) == set()
    assert ran(session_run()) == {"scale", "report", "final"}  # back to factor 2: changed again
    assert (project / "data" / "final.txt").read_text() == "2,4,6 stamp!"


def test_changed_input_file_runs_its_readers_and_downstream_only(project, session_run):
    session_run()
    raw = project / "data" / "raw.txt"

    raw.write_text("5\n4\n")
    assert ran(session_run()) == ALL - {"stamp"}
    assert (project / "data" / "final.txt").read_text() == "8,10 stamp!"

    # Same content written again (new modification time): the content hash decides.
    raw.write_text("5\n4\n")
    os.utime(raw, (raw.stat().st_atime + 10, raw.stat().st_mtime + 10))
    assert ran(session_run()) == set()


def test_deleted_output_reruns_its_node_and_unchanged_content_stops_there(project, session_run):
    session_run()
    (project / "data" / "report.txt").unlink()

    events = session_run()

    # `report` reads `scaled` (in memory) from the cache of the skipped `scale`; it writes the
    # same content again, so `final` (reading report.txt) is unchanged.
    assert ran(events) == {"report"}
    assert (project / "data" / "report.txt").read_text() == "2,4,6"


def test_deleted_cache_directory_runs_everything_without_error(project, session_run, tmp_path):
    session_run()
    shutil.rmtree(tmp_path / "cache")

    assert ran(session_run()) == ALL
    assert ran(session_run()) == set()


def test_lost_cached_results_run_the_node_with_one_warning(project, session_run, tmp_path):
    session_run()
    for sub in ("keys", "results"):  # node records stay: the nodes look unchanged
        shutil.rmtree(tmp_path / "cache" / sub)

    assert ran(session_run()) == ALL
    warnings = session_run.records.messages(logging.WARNING)
    assert len(warnings) == len(NODES)
    assert all("cached result" in w and "ran again" in w for w in warnings)
    assert ran(session_run()) == set()


def test_failed_run_resumes_at_the_failed_node(project, session_run, monkeypatch):
    session_run()
    (project / "data" / "raw.txt").write_text("7\n8\n9\n10\n")  # all but stamp change
    monkeypatch.setenv("SKIP_DEMO_FAIL", "1")

    with pytest.raises(RuntimeError, match="count failed on purpose"):
        session_run(max_workers=1)
    failed_run = session_run.events
    completed = {line.split()[1] for line in failed_run if line.startswith("after_node_run ")}
    assert "count" not in completed
    assert "clean" in completed
    hints = session_run.records.messages(logging.WARNING)
    assert any("skip_unchanged is on: run the same command again to resume" in h for h in hints)

    monkeypatch.delenv("SKIP_DEMO_FAIL")
    resumed = ran(session_run())

    assert "count" in resumed and "summary" in resumed
    assert resumed == ALL - completed - {"stamp"}
    assert (project / "data" / "summary.txt").read_text() == "4 values"


def test_edited_node_code_reruns_that_node_only(project):
    """An edit of a node's code, or of a helper of the project it calls (same module, or another
    module through a helper there), re-runs the node and the nodes after it, in a new process."""

    def kedro(*args: str) -> set[str]:
        result = run_kedro(project, "run", RUNNER, "--runner-params=skip_unchanged=true", *args)
        assert result.returncode == 0, result.stdout + result.stderr
        return ran(take_events(project))

    assert kedro() == ALL
    nodes = project / "src" / "skip_demo" / "nodes.py"
    nodes.write_text(nodes.read_text().replace('f"{count} values"', 'f"{count} numbers"'))

    assert kedro() == {"summary"}  # the edit is in _describe, the helper summary calls
    assert (project / "data" / "summary.txt").read_text() == "3 numbers"

    parsing = project / "src" / "skip_demo" / "parsing.py"
    parsing.write_text(parsing.read_text().replace("return int(line)", "return int(line) + 1"))
    # clean reaches _to_int through parsing.parse_lines; count.txt comes out the same ("3"),
    # so summary, reading that file, is skipped
    assert kedro() == ALL - {"stamp", "summary"}
    assert (project / "data" / "final.txt").read_text() == "4,6,8 stamp!"  # as Sequential
    assert kedro() == set()


def test_skipped_nodes_are_cached_task_runs_and_counted_in_the_node_table(
    project, session_run, prefect_server
):
    session_run(api_url=prefect_server.api_url, flow_name="skip-table")
    session_run(api_url=prefect_server.api_url, flow_name="skip-table", params={"factor": 5})

    with api_client(prefect_server) as client:
        flow_run = latest_flow_run(client, "skip-table")
        (table,) = artifacts_of(client, flow_run.id, "skip-table-default-nodes")
    runs = task_runs(prefect_server, str(flow_run.id), len(NODES))
    states = {run["name"]: run["state"]["name"] for run in runs}
    assert {name for name, state in states.items() if state == "Cached"} == ALL - {
        "scale",
        "report",
        "final",
    }
    rows = {row["node"]: row["state"] for row in table_rows(table)}
    assert rows["clean"] == "skipped (unchanged)" and rows["scale"] == "Completed"
    assert "4 of 7 skipped (unchanged)" in table.description


def test_dask_skips_unchanged_nodes_and_ships_cached_outputs(project, session_run):
    dask = {"task_runner": "dask", "n_workers": 1, "threads_per_worker": 2}
    assert ran(session_run(**dask)) == ALL

    assert ran(session_run(params={"factor": 3}, **dask)) == {"scale", "report", "final"}
    assert (project / "data" / "final.txt").read_text() == "3,6,9 stamp!"
    assert ran(session_run(params={"factor": 3}, **dask)) == set()


def test_dask_nodes_load_the_version_saved_in_this_run(project, session_run):
    """A versioned dataset (`report`) written again on a worker: the node reading it (`final`)
    loads the new version, not the one the driver's object cached when it checked whether
    `report` existed before `report` ran; the next, unchanged run skips every node (the
    version fingerprinted is the one loaded)."""
    catalog = project / "conf" / "base" / "catalog.yml"
    catalog.write_text(
        catalog.read_text().replace(
            "filepath: data/report.txt", "filepath: data/report.txt\n  versioned: true"
        )
    )
    dask = {"task_runner": "dask", "n_workers": 1, "threads_per_worker": 2}
    assert ran(session_run(**dask)) == ALL
    assert (project / "data" / "final.txt").read_text() == "2,4,6 stamp!"

    assert ran(session_run(params={"factor": 3}, **dask)) == {"scale", "report", "final"}
    assert (project / "data" / "final.txt").read_text() == "3,6,9 stamp!"  # as Sequential
    assert len(list((project / "data" / "report.txt").iterdir())) == 2
    assert ran(session_run(params={"factor": 3}, **dask)) == set()


def test_bad_skip_unchanged_value_is_one_clear_error():
    with pytest.raises(PrefectRunnerConfigError, match="skip_unchanged='maybe'"):
        PrefectRunner(skip_unchanged="maybe")


def test_unusable_cache_location_fails_before_any_node(project, session_run, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    write_prefect_yml(project, f"cache:\n  path: {blocker / 'cache'}\n")

    with pytest.raises(CacheStorageError, match="cannot use the cache directory"):
        session_run()
    assert session_run.events == []

    write_prefect_yml(project, "cache:\n  block: no-slash\n")
    with pytest.raises(ProjectConfigError, match=r"cache\.block"):
        session_run()


def test_deployment_flow_skips_unchanged_nodes(project, monkeypatch):
    """The deployable flow (what `kedro prefect deploy` schedules) with the option in its runner
    options: a second, unchanged run (the next night) runs nothing."""
    from kedro_prefect.deploy import kedro_pipeline

    def nightly(params: dict | None = None) -> set[str]:
        state = kedro_pipeline(
            project_path=str(project),
            params=params,
            runner_options={"skip_unchanged": True},
            return_state=True,
        )
        assert state.is_completed(), state
        return ran(take_events(project))

    monkeypatch.chdir(project)
    assert nightly() == ALL
    assert nightly() == set()
    assert nightly(params={"suffix": "?"}) == {"stamp", "final"}


def test_credentials_never_reach_the_cache(tmp_path, monkeypatch):
    """A dataset holding a credential (reliability project): nothing in the cache contains it."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from tests.reliability_project import SECRET
    from tests.reliability_project import write_prefect_yml as write_reliability_yml
    from tests.reliability_project import write_project as write_reliability_project

    root = write_reliability_project(tmp_path / "reliability_demo")
    cache = tmp_path / "cache"
    write_reliability_yml(root, f"cache:\n  path: {cache}\nrunner:\n  skip_unchanged: true\n")
    monkeypatch.chdir(root)
    bootstrap_project(root)
    for _ in range(2):
        with KedroSession.create(project_path=root) as session:
            session.run(pipeline_names=["secrets_ok"], runner=PrefectRunner())
    assert (root / "data" / "secret_copy.txt").read_text() == "some data\n"
    stored = [path for path in cache.rglob("*") if path.is_file()]
    assert stored  # the run did record fingerprints and results
    assert not [path for path in stored if SECRET.encode() in path.read_bytes()]


def test_cache_in_a_prefect_storage_block(project, session_run, prefect_server, tmp_path):
    from prefect.filesystems import LocalFileSystem
    from prefect.settings import PREFECT_API_URL, temporary_settings

    shared = tmp_path / "block-cache"
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        LocalFileSystem(basepath=str(shared)).save("skip-demo-cache", overwrite=True)
    write_prefect_yml(project, "cache:\n  block: local-file-system/skip-demo-cache\n")

    assert ran(session_run(api_url=prefect_server.api_url)) == ALL
    assert (shared / "kedro-prefect" / "nodes").is_dir()
    assert ran(session_run(api_url=prefect_server.api_url, params={"factor": 4})) == {
        "scale",
        "report",
        "final",
    }
    assert (project / "data" / "final.txt").read_text() == "4,8,12 stamp!"

    write_prefect_yml(project, "cache:\n  block: local-file-system/no-such-block\n")
    with pytest.raises(CacheStorageError, match="cannot load the cache storage block"):
        session_run(api_url=prefect_server.api_url)
    assert session_run.events == []


# --- with group_by: a group is skipped as a whole ----------------------------------------------


def test_memory_groups_are_skipped_whole_and_rerun_whole_when_a_node_changed(project, session_run):
    """group_by=memory groups `scale` -> `report` (linked by `scaled`, in memory)."""
    assert ran(session_run(group_by="memory")) == ALL
    first = outputs(project)

    assert session_run(group_by="memory") == []  # no hook fired: every unit was skipped
    assert outputs(project) == first
    skipped = [m for m in session_run.records.messages() if m.startswith("Skipped node: ")]
    assert sorted(m.split()[2] for m in skipped) == sorted(NODES)

    # factor is read by `scale` only: its group runs whole, and `final` after it
    assert ran(session_run(params={"factor": 3}, group_by="memory")) == {"scale", "report", "final"}
    assert (project / "data" / "final.txt").read_text() == "3,6,9 stamp!"
    assert ran(session_run(params={"factor": 3}, group_by="memory")) == set()
    assert not session_run.records.messages(logging.WARNING)
    # a missing output of `report` runs its whole group (`scale` too: one task run)
    (project / "data" / "report.txt").unlink()
    assert ran(session_run(params={"factor": 3}, group_by="memory")) == {"scale", "report"}


def _nodes(output: str, verb: str) -> set[str]:
    """Node names of the ``<verb> node: <name>`` lines of a ``kedro run``."""
    import re

    return set(re.findall(rf"{verb} node: ([\w.]+)", output))


@pytest.mark.timeout(900)
def test_namespace_groups_skip_unchanged_and_a_changed_parameter_reruns_its_group(tmp_path):
    """The example project with group_by=namespace (groups `ingest` and `regions`): outputs as
    SequentialRunner's, an unchanged re-run skips every group, a parameter read in `regions`
    runs that group and `combine_regions` after it, nothing else."""
    from tests.helpers import copy_example_project

    reports = ("region_report.csv", "top_products.csv")

    def run(project: Path, *args: str) -> tuple[str, dict[str, str]]:
        result = run_kedro(project, "run", *args)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        folder = project / "data" / "08_reporting"
        return output, {name: (folder / name).read_text() for name in reports}

    changed = "--params=regions.north.name=south"
    sequential = copy_example_project(tmp_path / "sequential")
    _, expected = run(sequential)
    _, expected_changed = run(sequential, changed)
    project = copy_example_project(tmp_path / "sales_demo")
    write_prefect_yml(project, f"cache:\n  path: {tmp_path / 'cache'}\n")
    grouped = (RUNNER, "--runner-params=group_by=namespace,skip_unchanged=true")
    every = {"ingest.clean_orders", "ingest.clean_products", "ingest.join_lines",
             "combine_regions", "rank_products",
             *(f"regions.{r}.{s}" for r in ("north", "south", "east", "west")
               for s in ("select", "summarize"))}  # fmt: skip

    output, files = run(project, *grouped)
    assert files == expected and _nodes(output, "Completed") == every, output

    output, files = run(project, *grouped)
    assert files == expected
    assert _nodes(output, "Skipped") == every and not _nodes(output, "Completed")

    output, files = run(project, *grouped, changed)
    assert files == expected_changed
    regions = {name for name in every if name.startswith("regions.")}
    assert _nodes(output, "Completed") == regions | {"combine_regions"}
    assert _nodes(output, "Skipped") == every - regions - {"combine_regions"}
