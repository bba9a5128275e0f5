"""The deployment form's schema from a project's parameters (no server): types, comments, keys."""

from __future__ import annotations

from dataclasses import dataclass

from kedro.pipeline import node, pipeline

from kedro_prefect.deploy import schema


def _form(**overrides):
    arguments = {
        "project_path": "/srv/p",
        "pipeline": "__default__",
        "pipelines": ["__default__", "train"],
        "env": None,
        "params": {},
        "runner_options": {},
        "conf_params": {
            "model_options": {"test_size": 0.2, "random_state": 3, "features": ["a", "b"]},
            "flag": True,
            "name": "x",
            "nothing": None,
            "unused": 1,
        },
        "used": {"model_options", "flag", "name", "nothing"},
        "descriptions": {},
    }
    return schema.parameter_schema(**{**arguments, **overrides})


def test_each_used_parameter_is_a_typed_field_with_its_value_as_default():
    fields = _form()["properties"]["params"]["properties"]
    assert set(fields) == {"model_options", "flag", "name", "nothing"}  # not `unused`
    options = fields["model_options"]
    assert options["type"] == "object" and options["additionalProperties"] is False
    assert options["properties"]["test_size"] == {
        "title": "test_size",
        "type": "number",
        "default": 0.2,
    }
    assert options["properties"]["random_state"]["type"] == "integer"
    assert options["properties"]["features"]["items"] == {"type": "string"}
    assert fields["flag"]["type"] == "boolean" and fields["name"]["type"] == "string"
    assert "type" not in fields["nothing"]  # any value


def test_the_deployments_own_parameters_are_the_defaults_over_conf():
    form = _form(params={"model_options": {"random_state": 7}, "extra": "y"})
    fields = form["properties"]["params"]["properties"]
    assert fields["model_options"]["properties"]["random_state"]["default"] == 7
    assert fields["model_options"]["properties"]["test_size"]["default"] == 0.2
    assert fields["extra"]["default"] == "y"


def test_pipeline_choices_runner_options_and_unknown_keys():
    form = _form(runner_options={"task_runner": "my.Runner", "retries": 2})
    assert form["additionalProperties"] is False
    assert form["properties"]["pipeline"]["enum"] == ["__default__", "train"]
    runner = form["properties"]["runner_options"]["properties"]
    assert runner["task_runner"]["enum"] == ["thread", "dask", "my.Runner"]
    assert runner["task_runner"]["default"] == "my.Runner"
    assert "description" in runner["max_workers"] and runner["retries"]["default"] == 2
    assert form["properties"]["project_path"]["readOnly"] is True


def test_comments_describe_parameters(tmp_path):
    base = tmp_path / "base"
    (base / "parameters").mkdir(parents=True)
    (base / "parameters.yml").write_text(
        "# How many products the report ranks\n"
        "top_n: 3\n"
        "\n"
        "model_options:\n"
        "  test_size: 0.2   # share held out\n"
        "  label: 'a # not a comment'\n"
    )
    (base / "catalog.yml").write_text("x: 1  # not a parameter file\n")
    local = tmp_path / "local"
    local.mkdir()
    (local / "parameters.yml").write_text("top_n: 5  # overridden locally\n")
    found = schema.comment_descriptions([base, local])
    assert found == {
        ("top_n",): "overridden locally",
        ("model_options", "test_size"): "share held out",
    }


def test_used_parameters_are_top_level_keys_or_all():
    def f(a, b):
        return a

    p = pipeline([node(f, ["params:model_options.test_size", "params:flag"], "out")])
    assert schema.used_parameters(p) == {"model_options", "flag"}
    assert schema.used_parameters(pipeline([node(f, ["parameters", "x"], "y")])) is None


@dataclass
class Split:
    """How the data is split."""

    test_size: float = 0.2


def test_a_typed_parameter_gives_its_own_schema():
    form = _form(typed={"model_options": Split})
    field = form["properties"]["params"]["properties"]["model_options"]
    assert field["properties"]["test_size"]["type"] == "number"
    assert field["default"]["test_size"] == 0.2
