"""Kedro: the hook manager of a project's settings, a no-op hook manager, ``--params`` parsing.

Relies on:

* ``kedro.framework.hooks.manager._create_hook_manager``, ``_register_hooks`` and
  ``_register_hooks_entry_points``: what ``KedroSession`` uses to build the project's hook
  manager. A Dask worker builds one from the project's settings (a pluggy ``PluginManager``
  cannot be pickled), as Kedro's own ``ParallelRunner`` does in its subprocesses; this buys
  the project's hooks firing on the workers exactly as in ``kedro run``.
* ``kedro.framework.project._ProjectSettings``: a project's settings (``HOOKS``, ...) built from
  its ``settings`` module on a Dask worker without configuring Kedro's process-wide
  ``settings``: runs of several projects may share one worker process.
* ``KedroContext._package_name``: the package of the session's project (the driver tells the
  workers which project a node belongs to, rather than reading Kedro's global ``PACKAGE_NAME``).
* ``kedro.framework.hooks.manager._NullPluginManager``: what ``AbstractRunner.run`` uses when
  no hook manager is given (``PrefectRunner().run(pipeline, catalog)`` from a notebook).
* ``kedro.framework.cli.utils._split_params``: how ``kedro run --params`` parses
  ``key=value,...``; ``kedro prefect deploy --params`` parses them the same way.
* ``MemoryDataset._copy_mode``: on Dask, a node's in-memory inputs are rebuilt on the worker
  with the copy mode the catalog gave them (``copy``, ``deepcopy``, ``assign``).
* ``AbstractDataset._SINGLE_PROCESS``: the flag Kedro's ``ParallelRunner`` refuses datasets by;
  ``task_runner=dask`` refuses them the same way, before any node runs.
* ``AbstractDataset._EPHEMERAL``: the flag Kedro's runners tell in-memory datasets by
  (``MemoryDataset``, ``SharedMemoryDataset``, ``CachedDataset``): :func:`is_in_memory`, the one
  answer to "is this dataset in memory?" (a ``CachedDataset`` is not: it writes through).
* ``_filepath``, ``_fs`` and ``_protocol`` of file datasets (kedro-datasets' convention) and
  ``AbstractVersionedDataset._get_load_path``: ``skip_unchanged`` fingerprints the file a dataset
  reads (the exact version for a versioned one) instead of loading its data.
* ``AbstractVersionedDataset._version`` (the ``Version(load, save)`` the catalog gave it) and
  ``_copy``: a node on another process gets a copy of a versioned dataset with the versions
  resolved for this run pinned, never the load version the driver's object cached earlier
  (an ``exists()`` before the producer saved a new version); ``release()`` drops that cache
  (Kedro 1.0-1.7 clear it there), so the version resolved is the latest one now.
* ``KedroContext._get_catalog(save_version=, load_versions=)``: what the session calls to create
  the run's catalog, firing ``after_catalog_created``; a worker creates the run's context
  (``settings.CONTEXT_CLASS`` and ``CONFIG_LOADER_CLASS``, as ``KedroSession.load_context``) and
  catalog the same way, so that the project's hooks there hold the run's state.
* ``AbstractRunner``'s protected interface for subclasses (``_run``, ``_get_executor``,
  ``_suggest_resume_scenario``, ``_logger``, ``_is_async``): what ``PrefectRunner`` implements
  and calls, like Kedro's own runners.
* ``kedro.validation.type_extractor.TypeExtractor`` (Kedro 1.3+): the Pydantic models and
  dataclasses that nodes annotate ``params:`` inputs with; a deployment's parameter form takes
  their schema (:func:`typed_parameters`).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from kedro_prefect._upstream import Contract, version_at_least

if TYPE_CHECKING:
    from kedro.io import AbstractDataset, CatalogProtocol
    from kedro.pipeline import Pipeline

CONTRACTS = (
    Contract(
        "kedro.framework.hooks.manager:_create_hook_manager",
        "build the project's hook manager on a Dask worker",
    ),
    Contract(
        "kedro.framework.hooks.manager:_register_hooks",
        "register the project's settings.HOOKS on a Dask worker",
    ),
    Contract(
        "kedro.framework.hooks.manager:_register_hooks_entry_points",
        "register plugin hooks (minus DISABLE_HOOKS_FOR_PLUGINS) on a Dask worker",
    ),
    Contract(
        "kedro.framework.project:_ProjectSettings",
        "a project's settings on a Dask worker, without the process-wide configure_project",
        check=lambda cls: hasattr(cls(), "configure") and hasattr(cls(), "HOOKS"),
    ),
    Contract(
        "kedro.framework.context:KedroContext",
        "_package_name: the package of the session's project",
        check=lambda cls: "_package_name" in {a.name for a in __import__("attrs").fields(cls)},
    ),
    Contract(
        "kedro.framework.context:KedroContext._get_catalog",
        "a worker creates the run's catalog as the session does (after_catalog_created)",
        check=lambda fn: (
            {"save_version", "load_versions"} <= set(__import__("inspect").signature(fn).parameters)
        ),
    ),
    Contract(
        "kedro.framework.hooks.manager:_NullPluginManager",
        "the hook manager of a run given none, as AbstractRunner.run uses",
    ),
    Contract(
        "kedro.framework.cli.utils:_split_params",
        "parse `kedro prefect deploy --params` exactly like `kedro run --params`",
    ),
    Contract(
        "kedro.runner:SequentialRunner._run",
        "log Kedro's own synchronous-mode line, word for word as the installed Kedro has it",
        check=lambda fn: _logs_the_sync_line_read_from_its_source(),
    ),
    Contract(
        "kedro.io:MemoryDataset",
        "rebuild in-memory inputs on a Dask worker with the catalog's copy mode",
        check=lambda cls: hasattr(cls(copy_mode="assign"), "_copy_mode"),
    ),
    Contract(
        "kedro.io:CachedDataset._SINGLE_PROCESS",
        "refuse single-process datasets on Dask, as ParallelRunner does",
        check=lambda flag: flag is True,
    ),
    Contract(
        "kedro.io:MemoryDataset",
        "tell in-memory datasets by _EPHEMERAL (no dataset event for them), as Kedro's runners do",
        check=lambda cls: is_in_memory(cls()),
    ),
    Contract(
        "kedro.io:AbstractDataset._EPHEMERAL",
        "persisted datasets have _EPHEMERAL False (their saves emit dataset events)",
        check=lambda flag: flag is False,
    ),
    Contract(
        "kedro.io.core:AbstractVersionedDataset._get_load_path",
        "skip_unchanged: the file a versioned dataset loads",
    ),
    Contract(
        "kedro.io.core:AbstractVersionedDataset._copy",
        "a versioned dataset shipped to a worker with this run's versions pinned",
    ),
    Contract(
        "kedro.io.core:AbstractVersionedDataset._release",
        "release() drops the load version a versioned dataset cached (resolved afresh)",
        check=lambda fn: "version_cache" in __import__("inspect").getsource(fn),
    ),
    Contract(
        "kedro.io.core:get_filepath_str",
        "skip_unchanged: a dataset's path as its fsspec filesystem names it",
    ),
    *(
        Contract(
            f"kedro.runner:AbstractRunner.{name}",
            "the interface PrefectRunner implements and uses, like Kedro's own runners",
        )
        for name in ("_run", "_get_executor", "_suggest_resume_scenario", "_logger")
    ),
    Contract(
        "kedro.runner:AbstractRunner.__init__",
        "Kedro's is_async, kept on the runner as _is_async",
        check=lambda init: _keeps_is_async(),
    ),
    Contract(
        "kedro.validation.type_extractor:TypeExtractor.extract_types_from_pipelines",
        "typed parameters (Pydantic models, dataclasses) give their schema to the deploy form",
        expected=lambda: version_at_least("kedro", 1, 3),
    ),
)


def _keeps_is_async() -> bool:
    from kedro.runner import SequentialRunner

    return SequentialRunner(is_async=True)._is_async is True


def _logs_the_sync_line_read_from_its_source() -> bool:
    """A ``SequentialRunner`` run logs the line :func:`sequential_runner_sync_message` finds."""
    import logging

    from kedro.io import DataCatalog, MemoryDataset
    from kedro.pipeline import Pipeline, node
    from kedro.runner import SequentialRunner

    lines: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    runner = SequentialRunner()
    logger, handler = runner._logger, _Keep(logging.INFO)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        catalog = DataCatalog({"a": MemoryDataset(1)})
        runner.run(Pipeline([node(abs, "a", "b", name="probe")]), catalog)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    found = sequential_runner_sync_message("")
    return bool(found) and found in lines


@functools.cache
def sequential_runner_sync_message(default: str) -> str:
    """The line ``SequentialRunner`` logs in synchronous mode, as the installed Kedro words it.

    Its link changed between Kedro releases; people and tools grep for the exact line. Read from
    the source of ``SequentialRunner._run`` (the first string mentioning synchronous mode).
    """
    import ast
    import inspect
    import textwrap

    try:
        from kedro.runner import SequentialRunner

        tree = ast.parse(textwrap.dedent(inspect.getsource(SequentialRunner._run)))
    except (OSError, TypeError, SyntaxError):
        return default
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "info":
            try:
                text = "".join(ast.literal_eval(arg) for arg in node.args[:1])
            except ValueError:
                continue
            if "synchronous mode" in text:
                return text
    return default


# --- Kedro 1.0-1.2: how a run's parameters are named --------------------------------------------


def session_run_pipeline(pipeline: str) -> dict[str, Any]:
    """Keyword arguments of ``KedroSession.run`` that run the registered pipeline ``pipeline``.

    Kedro >= 1.2 takes ``pipeline_names=[...]`` (and deprecates ``pipeline_name``); Kedro 1.0 and
    1.1 take only ``pipeline_name=`` and raise ``TypeError`` for ``pipeline_names``.
    """
    from kedro_prefect._upstream import version_at_least

    if version_at_least("kedro", 1, 2):
        return {"pipeline_names": [pipeline]}
    return {"pipeline_name": pipeline}


def run_params_run_id(run_params: dict[str, Any]) -> str | None:
    """The run id in a Kedro run's ``run_params`` (what ``runner.run`` gets as ``run_id``).

    Kedro >= 1.3 records it as ``run_id``; Kedro 1.0 to 1.2 record the same value (the session
    id) as ``session_id`` only.
    """
    return run_params.get("run_id") or run_params.get("session_id")


def run_pipeline_names(run_params: dict[str, Any]) -> list[str] | None:
    """The pipelines a Kedro run runs, from its ``run_params`` (``None``: the default pipeline).

    Kedro >= 1.2 records ``pipeline_names`` (a list); Kedro 1.0 and 1.1 record only
    ``pipeline_name`` (``kedro run --pipeline NAME``).
    """
    names = run_params.get("pipeline_names")
    if names:
        return list(names)
    name = run_params.get("pipeline_name")
    return [name] if name else None


def memory_copy_mode(dataset: Any) -> str | None:
    """The copy mode of a ``MemoryDataset`` (``None``: Kedro's default for its data)."""
    return getattr(dataset, "_copy_mode", None)


def single_process(dataset: Any) -> bool:
    """Whether a dataset says it only works in one process (Kedro's ``_SINGLE_PROCESS``)."""
    return bool(getattr(dataset, "_SINGLE_PROCESS", False))


def pipeline_dataset(catalog: CatalogProtocol, name: str) -> AbstractDataset[Any, Any]:
    """The catalog's dataset ``name`` as Kedro's runners get it: made from the catalog's
    patterns, or a ``MemoryDataset`` from the runtime pattern when nothing declares it."""
    dataset = catalog.get(name, fallback_to_runtime_pattern=True)
    if dataset is None:  # the runtime pattern matches every name: not with Kedro's catalogs
        raise KeyError(f"Dataset {name!r} not found in the catalog")
    return dataset


def is_in_memory(dataset: Any) -> bool:
    """Whether a pipeline's dataset keeps its data in memory only: the one answer for the
    runner, the process and Dask backends, ``skip_unchanged``, the run's record, dataset events
    and deployment triggers.

    ``None`` (a dataset the catalog does not declare: Kedro makes it a ``MemoryDataset``) and
    datasets Kedro's runners call ephemeral (``_EPHEMERAL``: ``MemoryDataset``,
    ``SharedMemoryDataset``) are in memory. A ``CachedDataset`` is not, although Kedro flags it
    ephemeral: it writes through to the dataset it wraps, so its data is persisted (its saves
    emit dataset events and trigger deployments; the process and Dask backends refuse it as
    single-process, as ``ParallelRunner`` does).
    """
    if dataset is None:
        return True
    from kedro.io import CachedDataset

    return bool(getattr(dataset, "_EPHEMERAL", False)) and not isinstance(dataset, CachedDataset)


def project_hook_manager(settings: Any) -> Any:
    """The hook manager of a project with these ``settings``, as ``KedroSession`` builds it."""
    from kedro.framework.hooks.manager import (
        _create_hook_manager,
        _register_hooks,
        _register_hooks_entry_points,
    )

    manager = _create_hook_manager()
    _register_hooks(manager, settings.HOOKS)
    _register_hooks_entry_points(manager, settings.DISABLE_HOOKS_FOR_PLUGINS)
    return manager


def project_settings(package_name: str | None) -> Any:
    """The settings of the project ``package_name`` (Kedro's defaults for ``None`` or a project
    without ``settings.py``), as ``configure_project`` would load them, in a new object."""
    from importlib.util import find_spec

    from kedro.framework.project import _ProjectSettings

    settings = _ProjectSettings()
    module = f"{package_name}.settings" if package_name else None
    if module and find_spec(module) is not None:
        settings.configure(module)
    return settings


def context_package_name(context: Any) -> str | None:
    """The package name of a ``KedroContext`` (``None`` for anything else)."""
    return getattr(context, "_package_name", None)


def null_hook_manager() -> Any:
    """The hook manager Kedro's runners use when none is given (calls no hook)."""
    from kedro.framework.hooks.manager import _NullPluginManager

    return _NullPluginManager()


def split_params(ctx: Any, param: Any, value: str) -> dict[str, Any]:
    """``--params`` as ``kedro run`` parses it: ``a=1,b.c=x`` -> ``{"a": 1, "b": {"c": "x"}}``."""
    from kedro.framework.cli.utils import _split_params

    return _split_params(ctx, param, value)


def dataset_file(dataset: Any) -> tuple[Any, str] | None:
    """The fsspec filesystem and path a dataset loads from; ``None`` if it has no file.

    kedro-datasets keep ``_filepath`` (a ``PurePosixPath`` without protocol), ``_protocol`` and
    ``_fs``; a versioned dataset loads ``_get_load_path()``. A dataset with a ``_filepath`` and
    no ``_fs`` is read as a local file.
    """
    filepath = getattr(dataset, "_filepath", None)
    if filepath is None or isinstance(filepath, bool | int | float):
        return None
    from kedro.io.core import get_filepath_str

    filesystem = getattr(dataset, "_fs", None)
    protocol = getattr(dataset, "_protocol", None) or "file"
    if is_versioned(dataset):
        filepath = dataset._get_load_path()
    if filesystem is None:
        import fsspec

        return fsspec.filesystem("file"), str(filepath)
    return filesystem, get_filepath_str(filepath, protocol)


def is_versioned(dataset: Any) -> bool:
    """Whether ``dataset`` is a versioned dataset with versioning on (``versioned: true``)."""
    from kedro.io.core import AbstractVersionedDataset

    versioned = isinstance(dataset, AbstractVersionedDataset)
    return versioned and bool(getattr(dataset, "_version", None))


def typed_parameters(pipeline: Pipeline) -> dict[str, type]:
    """``{parameter key: annotated type}`` of a pipeline's typed ``params:`` inputs (Kedro 1.3+).

    Keys are Kedro's (``model_options`` or ``a.b``); empty where Kedro has no typed parameters.
    """
    try:
        from kedro.validation.type_extractor import TypeExtractor
    except ImportError:
        return {}
    try:
        return dict(TypeExtractor({"deployed": pipeline}).extract_types_from_pipelines())
    except Exception:  # a node's annotations that cannot be read: typed from values instead
        return {}


def configured_versions(dataset: Any) -> tuple[str | None, str | None]:
    """The ``(load, save)`` versions the catalog gave a versioned dataset (``None``: not pinned:
    the latest version loads, a new timestamp saves)."""
    version = getattr(dataset, "_version", None)
    return getattr(version, "load", None), getattr(version, "save", None)


def latest_load_version(dataset: Any) -> str | None:
    """The version a versioned dataset loads now, read from its storage (not from a version it
    cached earlier); ``None`` when it has none yet. The dataset then holds that version."""
    dataset.release()  # Kedro clears the dataset's version cache there
    try:
        return dataset.resolve_load_version()
    except Exception:  # VersionNotFoundError, or storage errors: the load will say it
        return None


def with_versions(dataset: Any, load: str | None, save: str | None) -> Any:
    """A copy of a versioned dataset loading ``load`` and saving ``save`` (what
    ``DataCatalog.get(name, version=...)`` returns), whatever versions the original cached."""
    from kedro.io.core import Version

    return dataset._copy(_version=Version(load, save))


def create_run_context(
    settings: Any,  # the project's settings (project_settings)
    package_name: str | None,
    project_path: str,
    conf_source: str | None,
    env: str | None,
    runtime_params: dict[str, Any],
    hook_manager: Any,  # a PluginManager, or a worker's stand-in with the same hook calls
) -> Any:
    """The project's ``KedroContext`` for a run, as ``KedroSession.load_context`` creates it
    (the project's ``CONTEXT_CLASS`` and ``CONFIG_LOADER_CLASS``), without firing a hook."""
    from pathlib import Path

    config_loader = settings.CONFIG_LOADER_CLASS(
        conf_source=conf_source or str(Path(project_path) / settings.CONF_SOURCE),
        env=env,
        runtime_params=runtime_params,
        **settings.CONFIG_LOADER_ARGS,
    )
    return settings.CONTEXT_CLASS(
        package_name=package_name,
        project_path=Path(project_path),
        config_loader=config_loader,
        env=env,
        runtime_params=runtime_params,
        hook_manager=hook_manager,
    )


def create_run_catalog(
    context: Any, save_version: str | None, load_versions: dict[str, str]
) -> Any:
    """The run's catalog, as ``KedroSession.run`` creates it (fires ``after_catalog_created``)."""
    return context._get_catalog(save_version=save_version, load_versions=load_versions)
