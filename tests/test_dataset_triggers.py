"""``on_dataset_saved`` in prefect.yml: what is accepted, how names resolve, the Prefect triggers.

The end-to-end behaviour (events on a real server, served deployments triggered by upstream runs,
the self-trigger refusal) is in ``tests/integration/test_data_driven.py``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from prefect.events import DeploymentCompoundTrigger, DeploymentEventTrigger

from kedro_prefect.config import ProjectConfigError, validate_project_config
from kedro_prefect.deploy.triggers import dataset_triggers, resolve_dataset_name


def _deployment(raw: dict):
    return validate_project_config({"deployments": {"d": raw}}).deployments["d"]


def test_dataset_names_and_window_are_accepted():
    deployment = _deployment(
        {"on_dataset_saved": ["a", "b", "a"], "on_dataset_saved_all_within": "PT6H"}
    )
    assert deployment.on_dataset_saved == ["a", "b"]  # duplicates dropped, order kept
    assert deployment.on_dataset_saved_all_within == timedelta(hours=6)
    assert _deployment({}).on_dataset_saved == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"on_dataset_saved": ["a", " "]}, "dataset names must not be empty"),
        ({"on_dataset_saved": "a"}, "deployments.d.on_dataset_saved: Input should be a valid list"),
        (
            {"on_dataset_saved": ["a"], "on_dataset_saved_all_within": 60},
            "on_dataset_saved_all_within needs two or more on_dataset_saved datasets (got ['a'])",
        ),
        (
            {"on_dataset_saved": ["a", "b"], "on_dataset_saved_all_within": 0},
            "on_dataset_saved_all_within must be positive",
        ),
    ],
)
def test_bad_trigger_config_names_the_key(raw, expected):
    with pytest.raises(ProjectConfigError) as info:
        validate_project_config({"deployments": {"d": raw}})
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("order_lines", ("sales_demo", "order_lines")),
        # A namespaced dataset of this project stays one, dots and all.
        ("ingest.orders", ("sales_demo", "ingest.orders")),
        ("sales_demo.ingest.orders", ("sales_demo", "ingest.orders")),
        # Another project's dataset: <package>.<dataset>.
        ("features.table", ("features", "table")),
        ("features.ns.table", ("features", "ns.table")),
        ("typo", ("sales_demo", "typo")),
    ],
)
def test_trigger_names_resolve_to_project_and_dataset(name, expected):
    known = {"order_lines", "ingest.orders"}
    assert resolve_dataset_name(name, "sales_demo", known) == expected


def test_any_of_is_one_event_trigger_and_all_within_a_compound_trigger():
    (any_of,) = dataset_triggers(["a", "other.b"], "proj", {"a"})
    assert isinstance(any_of, DeploymentEventTrigger)
    assert any_of.expect == {"kedro.dataset.saved"}
    assert any_of.match.model_dump()["prefect.resource.id"] == [
        "kedro.dataset.proj.a",
        "kedro.dataset.other.b",
    ]
    assert set(any_of.parameters["trigger"]) >= {"dataset", "version", "flow_run", "project"}

    (all_of,) = dataset_triggers(["a", "other.b"], "proj", {"a"}, timedelta(hours=1))
    assert isinstance(all_of, DeploymentCompoundTrigger)
    assert all_of.require == "all"
    assert all_of.within == timedelta(hours=1)
    assert [t.match.model_dump()["prefect.resource.id"] for t in all_of.triggers] == [
        "kedro.dataset.proj.a",
        "kedro.dataset.other.b",
    ]
    assert dataset_triggers([], "proj") == []
