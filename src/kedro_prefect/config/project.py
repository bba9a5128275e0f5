"""The project's ``conf/<env>/prefect.yml``, read through Kedro's config loader and validated.

``prefect.yml`` is read through the project's config loader (so environments and ``${...}``
resolvers work) and validated by :class:`ProjectConfig`; its ``runner:`` section gives defaults
that ``--runner-params`` override.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kedro.config import MissingConfigException
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    ValidationError,
    field_validator,
    model_validator,
)

from kedro_prefect.config.deployments import DeploymentConfig, DeploymentName
from kedro_prefect.config.infrastructure import Infrastructure
from kedro_prefect.config.options import check_child_runner_options, parse_runner_options
from kedro_prefect.config.tasks import TasksConfig
from kedro_prefect.errors import ProjectConfigError

#: Where the config loader looks for ``prefect.yml`` in each environment (like kedro-airflow's).
PREFECT_CONFIG_PATTERNS = ["prefect*", "prefect*/**"]


class CacheConfig(BaseModel):
    """``cache:`` of prefect.yml: where ``skip_unchanged`` keeps fingerprints and results."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(
        default=None,
        description=(
            "A directory (default: $PREFECT_HOME/storage/kedro-prefect); on a shared file "
            "system, Dask workers and deployment runs on other machines share it."
        ),
    )
    block: str | None = Field(
        default=None,
        description=(
            "A Prefect storage block, `<block-type-slug>/<name>` (e.g. `s3-bucket/kedro-cache`), "
            "instead of a directory."
        ),
    )
    expiration_seconds: PositiveFloat | None = Field(
        default=None,
        description="Cached results older than this are not used (the node runs). Default: never.",
    )

    @field_validator("path", "block")
    @classmethod
    def _non_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("block")
    @classmethod
    def _block_slug(cls, value: str | None) -> str | None:
        if value is not None and len(value.split("/")) != 2:
            raise ValueError("must be `<block-type-slug>/<block-name>`, e.g. s3-bucket/kedro-cache")
        return value

    @model_validator(mode="after")
    def _one_place(self) -> CacheConfig:
        if self.path and self.block:
            raise ValueError("set either path or block, not both")
        return self


class ProjectConfig(BaseModel):
    """The content of ``conf/<env>/prefect.yml``."""

    model_config = ConfigDict(extra="forbid")

    runner: dict[str, Any] = Field(
        default_factory=dict,
        description="Default PrefectRunner options; `--runner-params` override them.",
    )
    deployments: dict[DeploymentName, DeploymentConfig] = Field(
        default_factory=dict, description="Deployments created by `kedro prefect deploy`."
    )
    cache: CacheConfig = Field(
        default_factory=CacheConfig,
        description="Where `skip_unchanged` keeps fingerprints and cached results.",
    )
    tasks: TasksConfig = Field(
        default_factory=TasksConfig,
        description="Prefect task options per node (retries, timeouts, tags, concurrency).",
    )

    infrastructure: Infrastructure = Field(
        default_factory=dict,
        description=(
            "Groups of nodes (a top-level namespace, a node tag or a registered pipeline) run "
            "on Prefect work pools, as child flow runs (docs/beyond-one-machine.md)."
        ),
    )

    @field_validator("runner")
    @classmethod
    def _valid_runner_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        parse_runner_options(value)
        return value

    @field_validator("infrastructure")
    @classmethod
    def _valid_child_runner_options(cls, value: Infrastructure) -> Infrastructure:
        check_child_runner_options(value)
        return value


def load_project_config(config_loader: Any, deployments: bool = True) -> ProjectConfig:
    """Read and validate ``prefect.yml`` from the project's config loader (empty if absent).

    With ``deployments=False`` (``kedro run``, which does not use them), the ``deployments:``
    section is left unread: a mistake there does not stop a run. An error names the file and
    the line of the key (:mod:`.locate`).
    """
    from kedro_prefect.config.locate import locate, prefect_yml_files

    if config_loader is None:
        return ProjectConfig()
    config_loader.config_patterns.setdefault("prefect", PREFECT_CONFIG_PATTERNS)
    try:
        raw = _read_prefect_yml(config_loader)
    except MissingConfigException:
        return ProjectConfig()
    raw = dict(raw or {})
    if not deployments:
        raw.pop("deployments", None)
    else:
        base = _read_prefect_yml(config_loader, base_only=True) or {}
        if "deployments" in raw or "deployments" in base:
            raw["deployments"] = merge_deployments(base.get("deployments"), raw.get("deployments"))
    files = prefect_yml_files(config_loader)
    return validate_project_config(raw, where=lambda loc: locate(files, loc))


def _read_prefect_yml(config_loader: Any, base_only: bool = False) -> Any:
    """``prefect.yml`` as the loader merges it (or of base alone); a YAML syntax error as one
    :class:`ProjectConfigError` line naming the file and the line."""
    from kedro_prefect.config.locate import yaml_syntax_error

    try:
        return _base_only(config_loader) if base_only else read_config(config_loader, "prefect")
    except MissingConfigException:
        raise
    except Exception as exc:
        message = yaml_syntax_error(exc)
        if message is None:
            raise
        raise ProjectConfigError(message) from None


def merge_deployments(base: Any, env: Any) -> dict[str, Any]:
    """``deployments:`` of base with those of the run environment merged in, per deployment.

    A deployment only in base is kept; one only in the environment is added; one in both is base's
    entry with the environment's keys replacing base's (a key's whole value: ``schedule:`` in the
    environment replaces base's schedule). ``name: null`` in the environment removes it there.
    """
    merged: dict[str, Any] = {}
    for name, entry in (base or {}).items():
        merged[name] = dict(entry) if isinstance(entry, dict) else entry
    for name, entry in (env or {}).items():
        if entry is None:
            merged.pop(name, None)
        elif isinstance(entry, dict) and isinstance(merged.get(name), dict):
            merged[name] = {**merged[name], **entry}
        else:
            merged[name] = entry
    return {name: entry for name, entry in merged.items() if entry is not None}


def _base_only(config_loader: Any) -> dict[str, Any] | None:
    """``prefect.yml`` of the base environment alone (None if the loader cannot say).

    Kedro's config loader merges environments by top-level key: a ``deployments:`` section in
    ``conf/<env>`` replaces base's whole section. Reading base alone lets
    :func:`merge_deployments` merge per deployment instead.
    """
    import copy

    base_env = getattr(config_loader, "base_env", None)
    run_env = getattr(config_loader, "env", None) or getattr(config_loader, "default_run_env", None)
    if not base_env or not hasattr(config_loader, "env") or run_env == base_env:
        return None
    base_loader = copy.copy(config_loader)
    base_loader.env = base_env
    try:
        return dict(read_config(base_loader, "prefect") or {})
    except MissingConfigException:
        return {}


def read_config(config_loader: Any, key: str) -> Any:
    """``config_loader[key]``, without a second copy of Kedro's own deprecation warnings.

    Kedro's ``OmegaConfigLoader`` registers its resolvers with OmegaConf's deprecated
    ``register_new_resolver`` on every read. Python shows such a warning once per place, but
    importing Prefect resets that memory: a read by kedro-prefect would print the warning
    ``kedro run`` already printed (6 terminal lines each time).
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated")
        return config_loader[key]


def validate_project_config(
    raw: dict[str, Any], where: Callable[[tuple[Any, ...]], str | None] | None = None
) -> ProjectConfig:
    """``raw`` as a :class:`ProjectConfig`, or one :class:`ProjectConfigError` line.

    ``where`` maps a key path to ``<file>, line <n>`` (when known) for the message: the first
    problem is named with its place, key and fix, any others counted after it.
    """
    try:
        return ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [_problem(error) for error in exc.errors()]
        place = where(_key_path(exc.errors()[0])) if where else None
        head = f"Invalid {place}: " if place else "Invalid prefect.yml: "
        more = f" (and {len(problems) - 1} more: " + "; ".join(problems[1:]) + ")"
        raise ProjectConfigError(head + problems[0] + (more if len(problems) > 1 else "")) from None


def _key_path(error: Any) -> tuple[Any, ...]:
    """The key path of a validation error, down to the unknown key a validator names."""
    import re

    unknown = re.match(r"(?:Value error, )?unknown \w+ key '([^']+)'", error["msg"])
    return (*error["loc"], unknown.group(1)) if unknown else tuple(error["loc"])


def _problem(error: Any) -> str:
    """One validation error as ``<key>: <message>``, with the fix where one is known."""
    import difflib

    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        allowed = list(_model_at(error["loc"][:-1]).model_fields)
        close = difflib.get_close_matches(str(error["loc"][-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key {key!r}; {hint}allowed keys: {', '.join(allowed)}"
    message = " ".join(error["msg"].removeprefix("Value error, ").split())  # one line
    got = "" if error["type"] == "value_error" else f" (got {error['input']!r})"
    return f"{key}: {message}{got}"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel]:
    """The pydantic model validating the mapping at ``loc`` of ``prefect.yml``."""
    import typing

    model: type[BaseModel] = ProjectConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:  # a list index or a mapping key (a deployment name)
            continue
        for candidate in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
    return model
