"""Choosing the Prefect task runner that executes node tasks."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from kedro.utils import load_obj

from kedro_prefect.errors import PrefectRunnerConfigError

if TYPE_CHECKING:
    from kedro.pipeline import Pipeline
    from prefect.task_runners import TaskRunner

    from kedro_prefect.config.options import RunnerOptions


def default_thread_count(pipeline: Pipeline, max_workers: int | None) -> int:
    """Threads for a pipeline: never more than the nodes that could ever run side by side.

    Like Kedro's ``ThreadRunner``, the upper bound is ``nodes - layers + 1``; the default
    ceiling is the one of Python's ``ThreadPoolExecutor`` (``min(32, cpu_count + 4)``), because
    node tasks often wait on I/O.
    """
    ceiling = max_workers or min(32, (os.cpu_count() or 1) + 4)
    required = len(pipeline.nodes) - len(pipeline.grouped_nodes) + 1
    return max(1, min(required, ceiling))


def resolve_task_runner_class(options: RunnerOptions) -> type[TaskRunner] | None:
    """Import the class named by ``task_runner``; ``None`` stands for the built-in ``thread``.

    Called by the runner's constructor so that a typo fails before the session starts.
    """
    name = options.task_runner
    if name == "thread":
        return None
    from prefect.task_runners import TaskRunner

    if name == "dask":
        from kedro_prefect.dask.task_runner import require_prefect_dask

        return require_prefect_dask()
    try:
        cls = load_obj(name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise PrefectRunnerConfigError(
            f"PrefectRunner option task_runner={name!r}: cannot import it ({exc}); use thread, "
            "dask or the import path of a prefect TaskRunner class"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, TaskRunner)):
        raise PrefectRunnerConfigError(
            f"PrefectRunner option task_runner={name!r}: {cls!r} is not a subclass of "
            "prefect.task_runners.TaskRunner"
        )
    return cls


def build_task_runner(
    cls: type[TaskRunner] | None, options: RunnerOptions, pipeline: Pipeline
) -> TaskRunner:
    """A fresh task runner instance for one pipeline run."""
    from prefect.task_runners import ThreadPoolTaskRunner

    if cls is None or cls is ThreadPoolTaskRunner:
        return ThreadPoolTaskRunner(max_workers=default_thread_count(pipeline, options.max_workers))
    if options.task_runner == "dask":
        from kedro_prefect.dask.task_runner import dask_task_runner

        return dask_task_runner(options)
    if options.max_workers is not None:
        try:
            return cls(max_workers=options.max_workers)  # type: ignore[call-arg]
        except TypeError:
            raise PrefectRunnerConfigError(
                f"PrefectRunner option max_workers: the task runner {cls.__name__} does not "
                "take max_workers"
            ) from None
    return cls()
