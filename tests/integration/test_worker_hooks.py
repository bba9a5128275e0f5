"""Which Kedro hook fires where: docs/dask.md's table, checked against real runs.

The project (``tests/hooks_project.py``) records every hook with the process it fired in. One
run each with ``SequentialRunner``, PrefectRunner on threads, on two worker processes
(``task_runner=process``) and on a local Dask cluster of two worker processes; the observed
places and counts must read exactly as the table's cells. On process and Dask, each worker
process that ran nodes also has the run's context (the run's parameters) and catalog (the run's
save version), and a kedro-viz-style hook keeping the catalog from ``after_catalog_created``
finds it there (no "Unable to create statistics" warning); with the methods of
``kedro_prefect.workers.hook_state``, what it decided in the driver's ``before_pipeline_run``
reaches the workers, and what it gathered there reaches the driver's ``after_pipeline_run``.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest

from kedro_prefect import PrefectRunner
from tests.hooks_project import NODES, take_hook_lines, write_project

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs" / "dask.md"
COLUMNS = {
    "SequentialRunner": "sequential",
    "threads": "threads",
    "process": "process",
    "Dask": "dask",
}


def documented_table() -> dict[str, dict[str, str]]:
    """hook -> backend -> cell, from the table under "Which hook fires where" in docs/dask.md."""
    text = DOCS.read_text()
    section = text[text.index("### Which hook fires where") :]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    backends = [next(v for k, v in COLUMNS.items() if k in cell) for cell in header[1:]]
    table: dict[str, dict[str, str]] = {}
    for row in rows[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        for hook in re.findall(r"`(\w+)`", cells[0]):
            table[hook] = dict(zip(backends, cells[1:], strict=True))
    return table


def observed(lines, reference: Counter) -> dict[str, str]:
    """hook -> cell, in the table's words, from one run's records."""
    driver = os.getpid()
    node_pids = {pid for hook, pid, _ in lines if hook == "before_node_run" and pid != driver}
    cells = {}
    for hook in {hook for hook, _, _ in lines}:
        pids = Counter(pid for h, pid, _ in lines if h == hook)
        parts = []
        in_driver = pids.pop(driver, 0)
        if in_driver == 1 and reference[hook] == 1:
            parts.append("driver (1)")
        elif in_driver and in_driver == reference[hook]:
            parts.append("driver (n)")
        elif in_driver:
            parts.append(f"driver ({in_driver})?")
        if pids and set(pids) == node_pids and set(pids.values()) == {1} and reference[hook] == 1:
            parts.append("each worker (1)")
        elif pids and sum(pids.values()) == reference[hook]:
            parts.append("worker (n)")
        elif pids:
            parts.append(f"workers {dict(pids)}?")
        cells[hook] = ", ".join(parts)
    return cells


@pytest.fixture
def session_run(tmp_path, monkeypatch):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    project = write_project(tmp_path / "hooks_demo")
    monkeypatch.chdir(project)
    bootstrap_project(project)

    def run(runner, params=None):
        with KedroSession.create(project_path=project, runtime_params=params) as session:
            session.run(runner=runner)
        return take_hook_lines(project)

    return run


def test_hooks_fire_where_the_docs_table_says(session_run):
    from kedro.runner import SequentialRunner

    table = documented_table()
    runs = {"sequential": session_run(SequentialRunner(), {"factor": 3})}
    reference = Counter(hook for hook, _, _ in runs["sequential"])
    assert reference["before_node_run"] == len(NODES)
    runs["threads"] = session_run(PrefectRunner(), {"factor": 3})
    runs["process"] = session_run(
        PrefectRunner(task_runner="process", max_workers=2), {"factor": 3}
    )
    runs["dask"] = session_run(
        PrefectRunner(task_runner="dask", n_workers=2, threads_per_worker=1), {"factor": 3}
    )

    # The kedro-viz-style hook's statistics, written by the driver in after_pipeline_run:
    # gathered on the workers with the label its before_pipeline_run chose in the driver.
    stats = {
        backend: [d for h, p, d in lines if h == "stats" and p == os.getpid()]
        for backend, lines in runs.items()
    }
    assert stats["sequential"] == [
        '{"joined":[3,true],"left":[1,true],"numbers":[6,true],"right":[1,true]}'
    ]
    assert stats == {backend: stats["sequential"] for backend in runs}

    for backend, lines in runs.items():
        seen = observed([line for line in lines if line[0] != "stats"], reference)
        assert "stats_failed" not in seen, (backend, lines)  # the kedro-viz-style hook
        assert seen == {hook: table[hook][backend] for hook in seen}, backend

    for backend in ("process", "dask"):
        lines = runs[backend]
        driver_save = {d for h, p, d in lines if h == "after_catalog_created" and p == os.getpid()}
        workers = {p for h, p, _ in lines if h == "before_node_run"}
        assert workers and os.getpid() not in workers
        for hook, _, detail in lines:
            if hook == "after_context_created":
                assert detail == "3"  # the run's runtime parameters, on the workers too
            if hook == "after_catalog_created":
                assert {detail} == driver_save  # the run's save version
