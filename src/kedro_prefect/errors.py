"""Every error kedro-prefect raises for the user to fix, under one base class.

:class:`KedroPrefectError` is a ``click.ClickException``: ``kedro run`` and ``kedro prefect ...``
print ``Error: <message>`` and exit with :attr:`exit_code` (1 unless set) instead of a traceback.
Where a Kedro runner raises a built-in type for the same problem, the error also derives from that
type (``ValueError``, ``TimeoutError``, ``ConnectionError``), so ``except ValueError`` written
against Kedro's runners keeps working.

This module imports nothing of kedro-prefect: any module may import it.
"""

from __future__ import annotations

import signal

import click


class KedroPrefectError(click.ClickException):
    """A problem the user must fix (bad option, bad prefect.yml, unreachable API, timeout...)."""

    def __str__(self) -> str:
        return self.message


# --- configuration -------------------------------------------------------------------------------


class PrefectRunnerConfigError(KedroPrefectError, ValueError):
    """A runner option is unknown or has a bad value.

    Raised by ``PrefectRunner(...)`` before anything runs; the message names the option, the
    value and what is allowed.
    """


class UnknownNameError(KedroPrefectError, AttributeError):
    """``kedro_prefect.<name>`` for a name close to a public one, e.g. a misspelt
    ``--runner=kedro_prefect.PrefectRuner``: one line with the name meant, not a traceback."""


class ProjectConfigError(KedroPrefectError, ValueError):
    """``prefect.yml`` has an unknown key or a bad value; the message names both."""


# --- before any node runs ------------------------------------------------------------------------


class PrefectApiUnreachableError(KedroPrefectError):
    """``PREFECT_API_URL`` points to a server that does not answer."""


class MissingPipelineInputError(KedroPrefectError, ValueError):
    """A free input of the pipeline is neither in the catalog nor produced by a node."""


class DaskSchedulerUnreachableError(KedroPrefectError, ConnectionError):
    """The Dask scheduler at ``address=`` did not answer; raised before any node runs."""


class DaskClusterError(PrefectRunnerConfigError):
    """The Dask cluster of the run cannot be built as configured (``cluster_class`` does not
    import, the class or ``cluster.adapt`` rejects its keyword arguments); raised before any
    node runs, naming the option and the value."""


class WorkerDatasetError(KedroPrefectError, ValueError):
    """A dataset of the pipeline cannot be used across processes (``task_runner=process`` or
    ``dask``); raised before any node runs."""


class DaskDatasetError(WorkerDatasetError):
    """A dataset of the pipeline cannot be used across processes on Dask."""


class NodeGroupingError(PrefectRunnerConfigError):
    """``group_by`` makes groups that cannot run (a cycle between groups, mixed Dask resources,
    a group option conflict); raised before any node runs, naming the group and its nodes."""


class InfrastructureError(KedroPrefectError, ValueError):
    """``infrastructure:`` cannot be run: in-memory data crossing into or out of a group on a
    work pool, a node in two mapped groups, no Prefect server, or a work pool that does not
    exist; raised before any node runs."""


class CacheStorageError(KedroPrefectError, ValueError):
    """``skip_unchanged``: the cache location (``prefect.yml`` ``cache:``) cannot be used."""


# --- during a run --------------------------------------------------------------------------------


class WorkerRunStateError(KedroPrefectError, RuntimeError):
    """A worker cannot reach run state the driver has (e.g. its MLflow run's tracking store)."""


class ChildFlowRunError(KedroPrefectError, RuntimeError):
    """A group run on a work pool (a child flow run) did not complete; the message names the
    node that failed there, the child flow run and its work pool."""


class NodeTimeoutError(KedroPrefectError, TimeoutError):
    """A node ran longer than its ``timeout_seconds``."""


class RunCancelledError(KedroPrefectError):
    """The run was stopped by SIGINT or SIGTERM; ``kedro run`` exits with 128 + signal."""

    def __init__(self, signum: int, running: int = 0, completed: int | None = None, total: int = 0):
        name = signal.Signals(signum).name
        done = f" {completed} of {total} nodes completed;" if completed is not None else ""
        super().__init__(
            f"Run cancelled by {name}:{done} no new node was started after it"
            + (f"; the {running} running node(s) were allowed to finish" if running else "")
            + ". Outputs of completed nodes are saved; see the resume hint above."
        )
        self.signum = signum
        self.exit_code = 128 + signum  # type: ignore[misc]  # click: a ClassVar, set per signal here


class RunStoppedError(KedroPrefectError):
    """A second SIGINT or SIGTERM stopped the run at once; the process exits with 128 + signal."""

    def __init__(self, signum: int, abandoned: int):
        name = signal.Signals(signum).name
        super().__init__(
            f"Run stopped by a second {name}: {abandoned} running node(s) abandoned (their task "
            "runs are marked Crashed in Prefect; their outputs may be partial). Outputs of "
            "completed nodes are saved."
        )
        self.signum = signum
        self.exit_code = 128 + signum  # type: ignore[misc]  # click: a ClassVar, set per signal here


# --- deployments ---------------------------------------------------------------------------------


class DeployError(KedroPrefectError):
    """A deployment cannot be created or served; the message says what to fix."""


class ProjectNotFoundError(KedroPrefectError, FileNotFoundError):
    """A deployment's ``project_path`` holds no Kedro project on the machine running the flow."""


__all__ = [
    "CacheStorageError",
    "ChildFlowRunError",
    "DaskClusterError",
    "DaskDatasetError",
    "DaskSchedulerUnreachableError",
    "DeployError",
    "InfrastructureError",
    "KedroPrefectError",
    "MissingPipelineInputError",
    "NodeTimeoutError",
    "PrefectApiUnreachableError",
    "PrefectRunnerConfigError",
    "ProjectConfigError",
    "ProjectNotFoundError",
    "RunCancelledError",
    "RunStoppedError",
]
