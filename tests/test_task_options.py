"""Per-node task options: precedence, warnings, and the errors for bad values (no processes)."""

from __future__ import annotations

import logging
import pickle

import pytest
from kedro.pipeline import Pipeline, node

from kedro_prefect import PrefectRunner, PrefectRunnerConfigError
from kedro_prefect.config import ProjectConfigError, validate_project_config
from kedro_prefect.execution.redaction import RedactedNodeError, protect_secrets, redact
from kedro_prefect.execution.task_options import resolve_task_options
from kedro_prefect.execution.tasks import node_task


def _identity(x):
    return x


PIPELINE = Pipeline(
    [
        node(_identity, "a", "b", name="load", tags=["io"]),
        node(_identity, "b", "c", name="select", namespace="regions.north", tags=["io"]),
        node(_identity, "c", "d", name="summarize", namespace="regions.south"),
    ]
)


def _resolve(defaults, tasks):
    config = validate_project_config({"tasks": tasks})
    return resolve_task_options(PIPELINE, defaults, config.tasks)


def test_precedence_runner_option_then_tag_then_namespace_then_node():
    resolved = _resolve(
        {"retries": 1, "timeout_seconds": 30},
        {
            "rules": [
                {"node": "regions.north.select", "retries": 5},
                {"namespace": "regions", "retries": 4, "timeout_seconds": 60},
                {"tag": "io", "retries": 3, "tags": ["disk"]},
                {"tag": "io", "retry_delay_seconds": 2, "concurrency_tags": ["db"]},
            ]
        },
    )
    load, select, summarize = (
        resolved[n].prefect_kwargs()
        for n in ("load", "regions.north.select", "regions.south.summarize")
    )
    # load: tag rules only (the later tag rule adds the delay), runner timeout kept
    assert load == {
        "retries": 3,
        "retry_delay_seconds": 2,
        "timeout_seconds": 30,
        "tags": {"disk", "db"},
    }
    # select: the node rule beats the namespace rule, which beats the tag rule
    assert select["retries"] == 5
    assert select["timeout_seconds"] == 60
    assert select["tags"] == {"disk", "db"}
    # summarize: namespace rule (prefix match on "regions"), no tags
    assert summarize == {"retries": 4, "timeout_seconds": 60}
    assert "tasks.rules[0] node: regions.north.select" in resolved["regions.north.select"].describe(
        "retries"
    )


def test_node_rules_accept_wildcards_and_namespace_is_not_a_plain_prefix():
    resolved = _resolve({}, {"rules": [{"node": "regions.*.s*", "retries": 2}]})
    assert resolved["regions.north.select"].options["retries"] == 2
    assert resolved["regions.south.summarize"].options["retries"] == 2
    assert resolved["load"].options["retries"] is None
    resolved = _resolve({}, {"rules": [{"namespace": "regions.nor", "retries": 2}]})
    assert resolved["regions.north.select"].options["retries"] is None


def test_rule_matching_no_node_is_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="kedro_prefect"):
        _resolve({}, {"rules": [{"tag": "io", "retries": 1}, {"node": "lod", "retries": 1}]})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "prefect.yml tasks.rules[1] (node: lod) matches no node of this pipeline; "
        "check the node name, namespace or tag"
    ]


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (
            {"rules": [{"node": "x", "retries": -1}]},
            "tasks.rules.0.retries: Input should be greater than or equal to 0 (got -1)",
        ),
        (
            {"rules": [{"node": "x", "timeout_seconds": -5}]},
            "tasks.rules.0.timeout_seconds: Input should be greater than 0 (got -5)",
        ),
        (
            {"rules": [{"node": "x", "retries": "many"}]},
            "tasks.rules.0.retries: Input should be a valid integer, unable to parse string "
            "as an integer (got 'many')",
        ),
        (
            {"rules": [{"node": "x", "retires": 2}]},
            "unknown key 'tasks.rules.0.retires'; did you mean 'retries'? allowed keys: retries,",
        ),
        (
            {"rules": [{"retries": 2}]},
            "tasks.rules.0: a rule needs exactly one of node, namespace or tag (got none)",
        ),
        (
            {"rules": [{"node": "x", "tag": "y"}]},
            "a rule needs exactly one of node, namespace or tag (got tag, node)",
        ),
        (
            {"concurrency_limits": {"db": 0}},
            "tasks.concurrency_limits.db: Input should be greater than 0 (got 0)",
        ),
        (
            {"rulez": []},
            "unknown key 'tasks.rulez'; did you mean 'rules'? "
            "allowed keys: rules, concurrency_limits",
        ),
    ],
)
def test_bad_tasks_section_names_key_and_value(tasks, message):
    with pytest.raises(ProjectConfigError) as error:
        validate_project_config({"tasks": tasks})
    assert message in str(error.value)
    assert str(error.value).startswith("Invalid prefect.yml:")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"retries": -1},
            "PrefectRunner option retries=-1: Input should be greater than or equal to 0",
        ),
        (
            {"timeout_seconds": 0},
            "PrefectRunner option timeout_seconds=0: Input should be greater than 0",
        ),
        (
            {"timeout_seconds": "soon"},
            "PrefectRunner option timeout_seconds='soon': Input should be a valid number",
        ),
        ({"retry_delay_seconds": -2}, "PrefectRunner option retry_delay_seconds=-2"),
        ({"retrys": 2}, "unknown PrefectRunner option 'retrys'; valid options are:"),
    ],
)
def test_bad_runner_task_option(options, message):
    with pytest.raises(PrefectRunnerConfigError) as error:
        PrefectRunner(**options)
    assert message in str(error.value)


def test_task_options_reach_the_prefect_task():
    options = _resolve(
        {
            "retries": 2,
            "retry_delay_seconds": 1.5,
            "retry_jitter_factor": 0.5,
            "timeout_seconds": 9,
        },
        {"rules": [{"tag": "io", "tags": ["extra"], "concurrency_tags": ["db"]}]},
    )["regions.north.select"]
    task = node_task(PIPELINE.nodes[1], **options.prefect_kwargs())
    assert task.retries == 2
    assert task.retry_delay_seconds == 1.5
    assert task.retry_jitter_factor == 0.5
    assert task.timeout_seconds == 9
    assert task.tags == {"io", "regions.north", "extra", "db"}
    assert task.persist_result is False


def test_exception_carrying_a_credential_is_masked():
    secrets = frozenset({"hunter2-password"})

    def connect():
        try:
            raise OSError("refused: postgres://me:hunter2-password@db")
        except OSError as exc:
            raise RuntimeError("could not load dataset") from exc

    with pytest.raises(RedactedNodeError) as error:
        protect_secrets(connect, secrets)()
    assert isinstance(error.value, RuntimeError)  # the type Kedro's runners would raise
    assert pickle.loads(pickle.dumps(error.value)).args == error.value.args  # Dask sends it
    text = str(error.value)
    assert "hunter2-password" not in text
    assert "postgres://me:***@db" in text  # the chained cause, masked
    assert text.startswith("RuntimeError: could not load dataset")
    assert error.value.__cause__ is None and error.value.__suppress_context__

    def refused():
        raise ConnectionError("refused: postgres://me:hunter2-password@db")

    with pytest.raises(ConnectionError, match=r"postgres://me:\*\*\*@db") as refusal:
        protect_secrets(refused, secrets)()
    assert isinstance(refusal.value, RedactedNodeError)

    def harmless():
        raise ValueError("no secret here")

    with pytest.raises(ValueError, match="no secret here"):
        protect_secrets(harmless, secrets)()
    assert redact("a hunter2-password b", secrets) == "a *** b"
