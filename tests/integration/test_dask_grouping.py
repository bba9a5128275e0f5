"""``group_by`` with ``task_runner=dask``: a group is one Dask task; its in-memory data stays in it.

Real scheduler and worker processes (the module cluster of ``test_dask``), runs reporting to the
session's ``prefect server``.
"""

from __future__ import annotations

import os

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner

from kedro_prefect import PrefectRunner
from tests.helpers import run_kedro
from tests.integration.test_dask import (
    _catalog,
    _outputs,
    _run,
    _task_runs,
    fan_out_fan_in,
)
from tests.integration.test_dask import api as api
from tests.integration.test_dask import cluster as cluster
from tests.integration.test_dask import sequential_outputs as sequential_outputs
from tests.pipelines import namespaced

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("group_by", ["namespace", "memory"])
@pytest.mark.parametrize("make_pipeline", [fan_out_fan_in, namespaced])
def test_grouped_outputs_match_sequential_runner(make_pipeline, group_by, cluster, api, tmp_path):
    pipeline = make_pipeline()
    (tmp_path / "seq").mkdir()
    (tmp_path / "dask").mkdir()
    expected = _run(SequentialRunner(), pipeline, _catalog(tmp_path / "seq"))
    got = _run(
        PrefectRunner(task_runner="dask", address=cluster.address, group_by=group_by),
        pipeline,
        _catalog(tmp_path / "dask"),
    )
    assert got == expected


class Unpicklable:
    """Data that cannot leave its process: Dask fails to move it or to store it as a result."""

    def __init__(self, value):
        self.value = value

    def __reduce_ex__(self, protocol):
        raise TypeError(f"a group's in-memory data was pickled (in process {os.getpid()})")

    def __deepcopy__(self, memo):
        return Unpicklable(self.value)


def wrap(x):
    return Unpicklable(x)


def unwrap(x):
    return x.value * 10


def _wrapping_pipeline() -> Pipeline:
    inner = Pipeline(
        [
            node(wrap, "source", "wrapped", name="wrap"),
            node(unwrap, "wrapped", "out", name="unwrap"),
        ]
    )
    return Pipeline(inner, namespace="ns", inputs={"source"}, outputs={"out"})


@pytest.mark.parametrize("group_by", ["namespace", "memory"])
def test_in_memory_data_inside_a_group_never_leaves_the_worker(group_by, cluster, api):
    """``ns.out`` is returned by the run, so the driver fetches the group's task result: were
    ``ns.wrapped`` in it (or moved between workers), pickling it would fail the run."""
    got = _run(
        PrefectRunner(task_runner="dask", address=cluster.address, group_by=group_by),
        _wrapping_pipeline(),
        DataCatalog({"source": MemoryDataset(4)}),
    )
    assert got == {"out": 40}


_HOOK_CALLS = """

import os as _os
from pathlib import Path as _Path

from kedro.framework.hooks import hook_impl as _hook_impl

_CALLS = _Path(__file__).resolve().parents[2] / "before_node_run.txt"


class _CallHooks:
    @_hook_impl
    def before_node_run(self, node):
        with open(_CALLS, "a") as calls:
            calls.write(f"{node.name} {_os.getpid()}\\n")


HOOKS = (*HOOKS, _CallHooks())
"""


@pytest.mark.parametrize(
    ("group_by", "task_runs"),
    [
        ("namespace", ["combine_regions", "ingest", "rank_products", "regions"]),
        ("memory", 9),
    ],
)
def test_example_project_grouped_on_a_local_cluster(
    group_by, task_runs, example_project, prefect_server, sequential_outputs
):
    settings = example_project / "src" / "sales_demo" / "settings.py"
    settings.write_text(settings.read_text() + _HOOK_CALLS)
    flow = f"dask-{group_by}"
    result = run_kedro(
        example_project,
        "run",
        "--runner=kedro_prefect.PrefectRunner",
        f"--runner-params=task_runner=dask,n_workers=2,threads_per_worker=1,"
        f"flow_name={flow},group_by={group_by}",
        env=prefect_server.env,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for got, expected in zip(_outputs(example_project), sequential_outputs, strict=True):
        pd.testing.assert_frame_equal(got, expected)
    calls = (example_project / "before_node_run.txt").read_text().split()
    names, pids = calls[::2], {int(pid) for pid in calls[1::2]}
    assert len(names) == 13 and len(set(names)) == 13  # once per node
    assert os.getpid() not in pids  # in the worker processes
    runs = _task_runs(prefect_server.api_url, flow)
    assert {run["state_type"] for run in runs} == {"COMPLETED"}
    if isinstance(task_runs, int):
        assert len(runs) == task_runs
    else:
        assert sorted(run["name"] for run in runs) == task_runs


# --- result sizes as Dask sees them -----------------------------------------------------------

#: A node's in-memory output large enough to matter to Dask's transfer costs and placement.
LARGE = 20_000_000


def large_payload(x):
    return bytes(LARGE)


def largest_result_here(payload):
    """On the Dask worker running this node: the largest result size the worker has noted."""
    from distributed import get_worker

    return max(task.nbytes or 0 for task in get_worker().state.tasks.values())


def test_a_large_in_memory_output_is_sized_as_large_by_the_dask_worker(cluster, api):
    """Dask sizes a node's task result (a Prefect state holding the node's outputs) by the
    data inside, so its transfer costs, memory limits and the placement rule see it."""
    pipeline = Pipeline(
        [
            node(large_payload, "source", "payload", name="produce"),
            node(largest_result_here, "payload", "seen", name="measure"),
        ]
    )
    catalog = DataCatalog({"source": MemoryDataset(1)})
    got = _run(PrefectRunner(task_runner="dask", address=cluster.address), pipeline, catalog)
    assert got["seen"] >= LARGE, got
