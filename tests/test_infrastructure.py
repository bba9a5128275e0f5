"""Groups on work pools (``infrastructure:``): which nodes go where, and what is refused before
a run. Pure pipeline and configuration logic; the runs themselves are in
``tests/integration/test_workpools.py`` (a real server, real workers)."""

from __future__ import annotations

import pytest
from kedro.io import AbstractDataset, DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node

from kedro_prefect import PrefectRunner
from kedro_prefect.config import parse_runner_options, validate_project_config
from kedro_prefect.config.infrastructure import parse_infrastructure
from kedro_prefect.errors import (
    InfrastructureError,
    NodeGroupingError,
    PrefectRunnerConfigError,
    ProjectConfigError,
)
from kedro_prefect.execution.grouping import group_nodes
from kedro_prefect.execution.units import nodes_on_pools, plan_units, pool_places
from tests import pipelines as p


def _pools(**groups: str):
    return parse_infrastructure({key: {"work_pool": pool} for key, pool in groups.items()})


def _units(grouping):
    return {unit.name: (unit.kind, [n.name for n in unit.nodes]) for unit in grouping.units}


def test_a_key_names_the_nodes_of_a_namespace_or_with_a_tag():
    pipeline = p.namespaced()
    by_namespace = nodes_on_pools(pipeline, _pools(alpha="gpu"))
    assert {k: [n.name for n in v] for k, v in by_namespace.items()} == {
        "alpha": ["alpha.inc", "alpha.dbl"]
    }
    by_tag = nodes_on_pools(pipeline, _pools(light="small"))
    assert sorted(n.name for n in by_tag["light"]) == ["alpha.inc", "beta.inc"]
    assert nodes_on_pools(pipeline, _pools(nothing="gpu")) == {}  # maps no node of this run


def test_a_key_may_name_a_registered_pipeline_as_spaceflights_has_data_science():
    pipeline = p.namespaced()
    registered = {"joining": {"join"}}
    found = nodes_on_pools(pipeline, _pools(joining="big-memory"), registered)
    assert [n.name for n in found["joining"]] == ["join"]


def test_a_node_in_two_mapped_groups_is_refused_naming_it():
    with pytest.raises(InfrastructureError, match=r"node 'alpha.inc' belongs to two groups"):
        nodes_on_pools(p.namespaced(), _pools(alpha="gpu", light="small"))


def test_mapped_groups_are_units_of_their_own_and_the_rest_follows_group_by():
    grouping = plan_units(p.namespaced(), "namespace", lambda name: False, _pools(alpha="gpu"))
    assert _units(grouping) == {
        "alpha": ("pool", ["alpha.inc", "alpha.dbl"]),
        "beta": ("namespace", ["beta.inc", "beta.dbl"]),
        "join": ("node", ["join"]),
    }
    assert grouping.pools["alpha"].work_pool == "gpu"
    assert pool_places(grouping) == {"alpha.inc": "work pool 'gpu'", "alpha.dbl": "work pool 'gpu'"}
    # Without a mapping: exactly group_by's units.
    plain = plan_units(p.namespaced(), "namespace", lambda name: False, {})
    assert _units(plain) == _units(group_nodes(p.namespaced(), "namespace"))
    assert not plain.pools


def test_in_memory_data_into_or_out_of_a_mapped_group_is_refused_naming_it():
    in_memory = {"source", "alpha.z"}.__contains__
    with pytest.raises(InfrastructureError) as refused:
        plan_units(p.namespaced(), "none", in_memory, _pools(alpha="gpu"))
    message = str(refused.value)
    assert "group 'alpha' (work pool 'gpu')" in message
    assert "source (the run's inputs -> alpha.inc)" in message
    assert "alpha.z (alpha.dbl -> join)" in message
    assert "Declare alpha.z, source in conf/<env>/catalog.yml" in message
    assert "\n" not in message
    # Persisted data crosses; in-memory data inside the group stays (alpha.y).
    inside_only = {"alpha.y", "beta.y", "beta.z"}.__contains__
    plan_units(p.namespaced(), "none", inside_only, _pools(alpha="gpu"))


def test_parameters_never_cross_the_child_reads_them_from_conf():
    pipeline = Pipeline(
        [
            node(p.total, ["a", "params:step"], "b", name="first", namespace="train"),
            node(p.total, ["b", "parameters"], "c", name="second", namespace="train"),
        ]
    )
    grouping = plan_units(pipeline, "none", lambda name: name != "a", _pools(train="gpu"))
    assert list(grouping.pools) == ["train"]


def test_a_mapping_that_makes_a_cycle_between_groups_is_refused():
    pipeline = Pipeline(
        [
            node(p.add_one, "a", "b", name="prepare", tags=["gpu"]),
            node(p.double, "b", "c", name="between"),
            node(p.add_one, "c", "d", name="finish", tags=["gpu"]),
        ]
    )
    with pytest.raises(NodeGroupingError, match=r"cycle between groups.*infrastructure:"):
        plan_units(pipeline, "none", lambda name: False, _pools(gpu="gpu-pool"))


def test_prefect_yml_infrastructure_mistakes_are_one_line_naming_the_key():
    with pytest.raises(ProjectConfigError) as typo:
        validate_project_config({"infrastructure": {"training": {"work_pol": "gpu"}}})
    assert "did you mean 'work_pool'" in str(typo.value)
    with pytest.raises(ProjectConfigError, match=r"training.runner: unknown PrefectRunner option"):
        validate_project_config(
            {"infrastructure": {"training": {"work_pool": "gpu", "runner": {"task_runer": "x"}}}}
        )
    with pytest.raises(ProjectConfigError, match=r"must be an absolute path"):
        validate_project_config(
            {"infrastructure": {"training": {"work_pool": "gpu", "project_path": "rel/path"}}}
        )
    with pytest.raises(ProjectConfigError, match=r"infrastructure cannot be set for a child"):
        validate_project_config(
            {
                "deployments": {
                    "nightly": {
                        "infrastructure": {
                            "training": {"work_pool": "gpu", "runner": {"infrastructure": False}}
                        }
                    }
                }
            }
        )


def test_the_runner_option_is_a_mapping_or_false():
    options = parse_runner_options(
        {"infrastructure": {"training": {"work_pool": "gpu", "runner": {"task_runner": "dask"}}}}
    )
    assert options.infrastructure["training"].runner == {"task_runner": "dask"}
    assert parse_runner_options({"infrastructure": False}).infrastructure is False
    with pytest.raises(PrefectRunnerConfigError, match=r"training.work_pool"):
        parse_runner_options({"infrastructure": {"training": {"job_variables": {}}}})


def test_without_a_server_a_mapped_run_stops_before_any_node(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    ran = []
    pipeline = Pipeline(
        [
            node(lambda x: ran.append("prep") or x, "a", "b", name="prep"),
            node(lambda x: ran.append("train") or x, "b", "c", name="train", tags=["gpu"]),
        ]
    )
    catalog = DataCatalog({"a": MemoryDataset(1), "b": _Persisted(), "c": _Persisted()})
    runner = PrefectRunner(infrastructure={"gpu": {"work_pool": "gpu-pool"}})
    with pytest.raises(InfrastructureError, match=r"need a Prefect server .* PREFECT_API_URL"):
        runner.run(pipeline, catalog)
    assert ran == []
    # infrastructure=false: every node runs here.
    PrefectRunner(infrastructure=False).run(pipeline, catalog)
    assert ran == ["prep", "train"]


class _Persisted(AbstractDataset):
    """Stands for a file on disk (not in memory), as a catalog entry would."""

    def __init__(self):
        self._data = None

    def load(self):
        return self._data

    def save(self, data):
        self._data = data

    def _exists(self):
        return self._data is not None

    def _describe(self):
        return {}
