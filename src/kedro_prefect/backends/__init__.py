"""Where node tasks run: the one place a run's backend is chosen (:func:`choose_backend`).

* :mod:`.thread`: ``thread``, node tasks in threads of the ``kedro run`` process (the default);
* :mod:`.process`: ``process``, node tasks in a pool of worker processes of this machine;
* :mod:`kedro_prefect.dask`: ``dask``, node tasks on a Dask cluster.

Each implements :class:`~kedro_prefect.execution.protocol.Backend`; nothing outside this module
asks which backend a run uses.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from kedro_prefect.errors import PrefectRunnerConfigError

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

    from kedro_prefect.config.options import RunnerOptions
    from kedro_prefect.execution.protocol import Backend

#: What ``task_runner`` accepts, for the error lines below.
CHOICES = (
    "thread, process, dask (prefect_dask.DaskTaskRunner), or the import path of a subclass of "
    "prefect.task_runners.ThreadPoolTaskRunner or prefect.task_runners.ProcessPoolTaskRunner"
)


def choose_backend(options: RunnerOptions) -> Backend:
    """The run's backend, from ``task_runner``: a name, or the import path of a task runner class.

    A class is classified once, by what it subclasses: ``ThreadPoolTaskRunner`` -> ``thread``,
    ``ProcessPoolTaskRunner`` -> ``process`` (both built from that class), prefect-dask's
    ``DaskTaskRunner`` itself -> ``dask``. Any other class is refused: the nodes' data path
    depends on where tasks run, and a task runner kedro-prefect does not know (e.g. Prefect's
    ``PrefectTaskRunner``, which hands tasks to task workers that this run does not start)
    would run nothing, or run nodes without their inputs. Called by the runner's constructor,
    so that a typo fails before the session starts.

    Raises:
        PrefectRunnerConfigError: One line naming the option, the value and the choices.
    """
    from kedro_prefect.backends.process import ProcessBackend
    from kedro_prefect.backends.thread import ThreadBackend

    name = options.task_runner
    if name == "thread":
        return ThreadBackend(options)
    if name == "process":
        return ProcessBackend(options)
    if name == "dask":
        from kedro_prefect.dask.backend import DaskBackend

        return DaskBackend(options)
    cls = _task_runner_class(name)
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    if issubclass(cls, ThreadPoolTaskRunner):
        return ThreadBackend(options, cls)
    if issubclass(cls, ProcessPoolTaskRunner):
        return ProcessBackend(options, cls)
    if _is_dask_task_runner(cls):
        from kedro_prefect.dask.backend import DaskBackend

        return DaskBackend(options)
    raise PrefectRunnerConfigError(
        f"PrefectRunner option task_runner={name!r}: kedro-prefect cannot run nodes on "
        f"{cls.__module__}.{cls.__qualname__}; use {CHOICES}"
    )


def _task_runner_class(name: str) -> type[TaskRunner[Any]]:
    from kedro.utils import load_obj
    from prefect.task_runners import TaskRunner

    try:
        cls = load_obj(name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise PrefectRunnerConfigError(
            f"PrefectRunner option task_runner={name!r}: cannot import it ({exc}); use {CHOICES}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, TaskRunner)):
        raise PrefectRunnerConfigError(
            f"PrefectRunner option task_runner={name!r}: {cls!r} is not a subclass of "
            f"prefect.task_runners.TaskRunner; use {CHOICES}"
        )
    return cls


def _is_dask_task_runner(cls: type) -> bool:
    """prefect-dask's ``DaskTaskRunner`` itself (a subclass would be run as that class, its own
    behaviour ignored: refused instead). A class loaded from prefect-dask means it is imported."""
    module = sys.modules.get("prefect_dask.task_runners")
    return module is not None and cls is getattr(module, "DaskTaskRunner", None)
