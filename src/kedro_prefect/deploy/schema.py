"""The parameter form of a deployment: a JSON schema built from the project at deploy time.

Prefect draws a deployment's *Custom run* form from its ``parameter_openapi_schema`` and, with
``enforce_parameter_schema``, the server refuses a flow run whose parameters do not match it.
Every kedro-prefect deployment runs :func:`~kedro_prefect.deploy.flow.kedro_pipeline`, whose
``params`` and ``runner_options`` are plain dicts; the schema built here describes them:

* ``params``: one field per top-level Kedro parameter the deployed pipeline uses, with its value
  in ``conf/`` (for the deployment's env) as default and its JSON type; nested dicts are objects
  with their own fields; a typed parameter (a Pydantic model or dataclass annotation, Kedro 1.3+)
  gives its own schema. Descriptions come from the parameter files' comments. Unknown keys are
  refused, at every level where the project gives keys.
* ``pipeline``: one of the project's pipelines; ``env``: the Kedro environment;
* ``runner_options``: the PrefectRunner options a person changes at launch (``task_runner``,
  ``max_workers``, ``skip_unchanged``...), described by :class:`~kedro_prefect.RunnerOptions`.

The values the form sends reach the run as ``kedro run --params`` would give them: Kedro merges
runtime parameters into the project's, nested keys included.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kedro.pipeline import Pipeline

#: Runner options offered in the form (others set in prefect.yml are kept and shown too).
LAUNCH_OPTIONS = (
    "task_runner",
    "max_workers",
    "skip_unchanged",
    "dataset_events",
    "n_workers",
    "threads_per_worker",
    "address",
)
_TASK_RUNNERS = ["thread", "dask"]
_KEY = re.compile(r"^(\s*)(['\"]?)([^'\"#:\s][^'\"#:]*?)\2\s*:(?:\s|$)(.*)$")


def parameter_schema(
    *,
    project_path: str,
    pipeline: str,
    pipelines: list[str],
    env: str | None,
    params: dict[str, Any],
    runner_options: dict[str, Any],
    conf_params: dict[str, Any],
    used: set[str] | None,
    descriptions: dict[tuple[str, ...], str],
    typed: dict[str, type] | None = None,
) -> dict[str, Any]:
    """The deployment's parameter schema (a JSON schema of the flow's parameters).

    Args:
        project_path: The project path the deployment stores (read-only in the form).
        pipeline: The deployed pipeline (the default of ``pipeline``).
        pipelines: The project's pipelines (the choices of ``pipeline``).
        env: The deployment's Kedro environment.
        params: The deployment's own runtime parameters (``parameters:``), over ``conf/``'s.
        runner_options: The deployment's runner options.
        conf_params: The project's parameters for that env.
        used: Top-level parameter keys the pipeline uses (None: all of them).
        descriptions: Parameter descriptions by key path (from the files' comments).
        typed: Annotated types of typed parameters, by top-level key.
    """
    definitions: dict[str, Any] = {}
    values = _merge(conf_params, params)
    keys = [k for k in values if used is None or k in used]
    keys += [k for k in params if k not in keys]
    fields = {}
    for key in keys:
        field = _typed_schema((typed or {}).get(key), definitions)
        if field is None:
            field = value_schema(values.get(key), (key,), descriptions)
        else:
            field["default"] = _json(values.get(key))
        field.setdefault("title", key)
        if (key,) in descriptions:
            field["description"] = descriptions[(key,)]
        fields[key] = field
    return {
        "title": "Parameters",
        "type": "object",
        "properties": {
            "pipeline": {
                "title": "pipeline",
                "description": "The Kedro pipeline to run.",
                "enum": sorted(set(pipelines) | {pipeline}),
                "type": "string",
                "default": pipeline,
                "position": 0,
            },
            "params": {
                "title": "params",
                "description": "Kedro parameters of this run, as `kedro run --params`: "
                "defaults are the project's values when it was deployed; a value changed here "
                "replaces that key only (nested keys too).",
                "type": "object",
                "properties": fields,
                "additionalProperties": False,
                "default": {key: field.get("default") for key, field in fields.items()},
                "position": 1,
            },
            "runner_options": {
                "title": "runner_options",
                "description": "PrefectRunner options of this run, as `--runner-params`.",
                "type": "object",
                "properties": _runner_fields(runner_options),
                "additionalProperties": False,
                "default": {},
                "position": 2,
            },
            "env": {
                "title": "env",
                "description": "Kedro environment (conf/<env>) of the run; empty: Kedro's default.",
                "anyOf": [{"type": "string"}, {"type": "null"}],
                "default": env,
                "position": 3,
            },
            "project_path": {
                "title": "project_path",
                "description": "Where the Kedro project is on the machine that runs the flow.",
                "type": "string",
                "default": project_path,
                "readOnly": True,
                "position": 4,
            },
            "trigger": {
                "title": "trigger",
                "description": "Set by an on_dataset_saved trigger: the event that started "
                "the run (leave empty).",
                "anyOf": [{"type": "object"}, {"type": "null"}],
                "default": None,
                "position": 5,
            },
            "nodes": {
                "title": "nodes",
                "description": "Run only these nodes of the pipeline; set by a run for a group "
                "of its nodes on a work pool (leave empty).",
                "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                "default": None,
                "position": 6,
            },
        },
        "required": ["project_path"],
        "definitions": definitions,
        "additionalProperties": False,
    }


def value_schema(
    value: Any, path: tuple[str, ...], descriptions: dict[tuple[str, ...], str]
) -> dict[str, Any]:
    """The JSON schema of a parameter from its value: types from values, dicts as objects."""
    schema: dict[str, Any] = {"title": path[-1]}
    if isinstance(value, bool):
        schema["type"] = "boolean"
    elif isinstance(value, int):
        schema["type"] = "integer"
    elif isinstance(value, float):
        schema["type"] = "number"
    elif isinstance(value, str):
        schema["type"] = "string"
    elif isinstance(value, dict):
        schema["type"] = "object"
        if value:
            schema["properties"] = {
                str(k): value_schema(v, (*path, str(k)), descriptions) for k, v in value.items()
            }
            schema["additionalProperties"] = False
    elif isinstance(value, list | tuple):
        schema["type"] = "array"
        kinds = {value_schema(item, path, {}).get("type") for item in value}
        if len(kinds) == 1 and None not in kinds and kinds != {"object"}:
            schema["items"] = {"type": kinds.pop()}
    if path in descriptions:
        schema["description"] = descriptions[path]
    schema["default"] = _json(value)
    return schema


def _typed_schema(annotation: Any, definitions: dict[str, Any]) -> dict[str, Any] | None:
    """The schema of a typed parameter (Pydantic model or dataclass), its definitions hoisted."""
    if annotation is None:
        return None
    try:
        from pydantic import TypeAdapter

        schema = TypeAdapter(annotation).json_schema(ref_template="#/definitions/{model}")
    except Exception:  # not describable: typed from its value instead
        return None
    definitions.update(schema.pop("$defs", {}))
    return schema


def _runner_fields(runner_options: dict[str, Any]) -> dict[str, Any]:
    from kedro_prefect.config.options import RunnerOptions

    model = RunnerOptions.model_json_schema()["properties"]
    fields: dict[str, Any] = {}
    for name in [*LAUNCH_OPTIONS, *(k for k in runner_options if k not in LAUNCH_OPTIONS)]:
        spec = dict(model.get(name, {}))
        spec.pop("default", None)
        if name == "task_runner":
            choices = [*_TASK_RUNNERS]
            given = runner_options.get(name)
            if given and given not in choices:
                choices.append(given)
            spec = {**spec, "enum": choices, "type": "string"}
        if name == "infrastructure":  # a mapping, as in prefect.yml (validated by the run)
            spec = {"anyOf": [{"type": "object"}, {"type": "boolean"}, {"type": "null"}]}
        if name in runner_options:
            spec["default"] = _json(runner_options[name])
        spec["title"] = name
        fields[name] = spec
    return fields


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _json(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def used_parameters(pipeline: Pipeline) -> set[str] | None:
    """Top-level parameter keys a pipeline uses (``params:a.b`` -> ``a``); None: all of them."""
    names = pipeline.datasets()
    if "parameters" in names:
        return None
    return {n.removeprefix("params:").split(".", 1)[0] for n in names if n.startswith("params:")}


def comment_descriptions(conf_dirs: list[Path]) -> dict[tuple[str, ...], str]:
    """Descriptions of parameters from their files' comments: ``{("a", "b"): "text"}``.

    A key's description is the comment on its line (``test_size: 0.2  # share held out``), else
    the comment lines right above it. Files are read in order; later ones win (env over base).
    """
    found: dict[tuple[str, ...], str] = {}
    for conf in conf_dirs:
        if not conf.is_dir():
            continue
        for path in sorted(conf.rglob("*")):
            relative = path.relative_to(conf).as_posix()
            if path.suffix in (".yml", ".yaml") and "parameters" in relative:
                found.update(_file_comments(path.read_text(encoding="utf-8", errors="replace")))
    return found


def _file_comments(text: str) -> dict[tuple[str, ...], str]:
    found: dict[tuple[str, ...], str] = {}
    stack: list[tuple[int, str]] = []
    above: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        match = _KEY.match(line)
        if not stripped or match is None:
            above = []
            continue
        indent, key, rest = len(match.group(1)), match.group(3).strip(), match.group(4)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*(k for _, k in stack), key)
        inline = _inline_comment(rest)
        text_found = inline or " ".join(c for c in above if c)
        if text_found:
            found[path] = text_found
        stack.append((indent, key))
        above = []
    return found


def _inline_comment(rest: str) -> str:
    quote = None
    for i, char in enumerate(rest):
        if char in "'\"":
            quote = None if quote == char else (quote or char)
        elif char == "#" and quote is None and (i == 0 or rest[i - 1].isspace()):
            return rest[i + 1 :].strip()
    return ""
