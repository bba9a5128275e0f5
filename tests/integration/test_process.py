"""``task_runner=process``: node tasks in a pool of worker processes (Prefect's
``ProcessPoolTaskRunner``), in-memory data through the driver, the project's hooks in the workers.
"""

from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner

from kedro_prefect import PrefectRunner
from kedro_prefect.errors import WorkerDatasetError
from tests.helpers import EXAMPLE_PROJECT, run_kedro
from tests.integration.test_dask import LockedDataset, fan_out_fan_in, generator
from tests.integration.test_skip_unchanged import (  # the skip_unchanged project and its runs
    ALL,
    project,  # noqa: F401 (a fixture)
    ran,
    session_run,  # noqa: F401 (a fixture)
)
from tests.pipelines import TextFileDataset, namespaced

pytestmark = pytest.mark.integration

OUTPUTS = [
    "data/02_intermediate/orders.parquet",
    "data/02_intermediate/products.parquet",
    "data/03_primary/order_lines.parquet",
    "data/08_reporting/region_report.csv",
    "data/08_reporting/top_products.csv",
]
NODES = 13


def _read(path):
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def _example(tmp_path, name):
    copy = tmp_path / name / "sales_demo"
    shutil.copytree(EXAMPLE_PROJECT, copy, ignore=shutil.ignore_patterns("*.parquet"))
    return copy


def test_example_on_processes_gives_sequential_outputs_with_hooks_once_per_node(tmp_path):
    sequential = _example(tmp_path, "seq")
    assert run_kedro(sequential, "run").returncode == 0
    on_processes = _example(tmp_path, "process")
    result = run_kedro(
        on_processes,
        "run",
        "--runner=kedro_prefect.PrefectRunner",
        "--runner-params=task_runner=process,max_workers=2",
        timeout=600,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    for name in OUTPUTS:
        pd.testing.assert_frame_equal(_read(on_processes / name), _read(sequential / name))
    assert f"Completed {NODES} out of {NODES} tasks" in log
    # The project's after_node_run hook, fired in the worker processes: once per node.
    timed = re.findall(r"sales_demo hook: node (\S+) took", log)
    assert len(timed) == NODES and len(set(timed)) == NODES, timed
    # The workers report to the run's API: none starts a temporary server of its own.
    assert "Starting temporary server" not in log


def _catalog(tmp_path):
    return DataCatalog(
        {
            "source": MemoryDataset(1),
            "params:bonus": MemoryDataset(1000),
            "base": TextFileDataset(str(tmp_path / "base.txt")),
        }
    )


def _run(runner, pipeline, catalog):
    return {name: ds.load() for name, ds in runner.run(pipeline, catalog).items()}


@pytest.mark.parametrize("task_runner", ["process", "prefect.task_runners.ProcessPoolTaskRunner"])
@pytest.mark.parametrize("make_pipeline", [fan_out_fan_in, namespaced, generator])
def test_outputs_match_sequential_runner(make_pipeline, task_runner, tmp_path):
    pipeline = make_pipeline()
    (tmp_path / "seq").mkdir()
    (tmp_path / "process").mkdir()
    expected = _run(SequentialRunner(), pipeline, _catalog(tmp_path / "seq"))
    got = _run(
        PrefectRunner(task_runner=task_runner, max_workers=2),
        pipeline,
        _catalog(tmp_path / "process"),
    )
    assert got == expected
    assert got  # the free outputs came back to the driver
    persisted = sorted(p.name for p in (tmp_path / "seq").iterdir())
    assert sorted(p.name for p in (tmp_path / "process").iterdir()) == persisted
    for name in persisted:  # saved by the worker processes
        assert (tmp_path / "process" / name).read_text() == (tmp_path / "seq" / name).read_text()


def test_a_dataset_that_cannot_cross_processes_is_refused_before_any_node(tmp_path):
    catalog = _catalog(tmp_path)
    catalog["left"] = LockedDataset(str(tmp_path / "left.txt"))
    with pytest.raises(WorkerDatasetError, match="task_runner=process") as error:
        PrefectRunner(task_runner="process").run(fan_out_fan_in(), catalog)
    assert "left (LockedDataset)" in str(error.value)
    assert not (tmp_path / "base.txt").exists()


def test_a_node_error_is_raised_as_on_sequential_runner(tmp_path):
    from tests.pipelines import boom

    pipeline = Pipeline([node(boom, "source", "out", name="boom")])
    with pytest.raises(ValueError, match="boom") as expected:
        SequentialRunner().run(pipeline, _catalog(tmp_path))
    with pytest.raises(type(expected.value), match=str(expected.value)):
        PrefectRunner(task_runner="process").run(pipeline, _catalog(tmp_path))


def test_process_skips_unchanged_nodes_and_ships_cached_outputs(project, session_run):  # noqa: F811
    process = {"task_runner": "process", "max_workers": 2}
    assert ran(session_run(**process)) == ALL

    assert ran(session_run(params={"factor": 3}, **process)) == {"scale", "report", "final"}
    assert (project / "data" / "final.txt").read_text() == "3,6,9 stamp!"
    assert ran(session_run(params={"factor": 3}, **process)) == set()
