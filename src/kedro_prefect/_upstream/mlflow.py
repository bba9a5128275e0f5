"""MLflow (when a plugin such as kedro-mlflow uses it): the driver's run, active on a worker.

Relies on:

* ``mlflow.tracking.fluent._active_run_stack``: MLflow 3 keeps the active runs per thread. A
  Dask worker's threads outlive a ``kedro run``: a run made active in one for a node would
  still be active there when a node of the *next* ``kedro run`` comes, and ``start_run`` of
  that run would fail ("Run ... is already active"); ending it instead (``end_run``) would mark
  the earlier run FINISHED again on the tracking server. After each node the thread's stack is
  emptied without a call to the server: the run stays as the driver leaves it.

``mlflow.active_run``, ``get_tracking_uri``, ``set_tracking_uri`` and ``start_run(run_id=...)``
are MLflow's public API.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from kedro_prefect._upstream import Contract, installed_version

CONTRACTS = (
    Contract(
        "mlflow.tracking.fluent:_active_run_stack",
        "a node on a Dask worker runs with the driver's MLflow run active in its thread only",
        expected=lambda: bool(installed_version("mlflow")),
        check=lambda stack: callable(getattr(stack, "get", None)),
    ),
)


def active_run() -> tuple[str, str] | None:
    """``(tracking URI, run id)`` of the MLflow run active in this thread, if any."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return None
    return mlflow.get_tracking_uri(), run.info.run_id


@contextlib.contextmanager
def run_active_in_thread(tracking_uri: str, run_id: str) -> Iterator[None]:
    """The run ``run_id`` active in this thread while the block runs, and no run after it."""
    import mlflow
    from mlflow.tracking.fluent import _active_run_stack

    stack = _active_run_stack.get()
    stack.clear()  # left by an earlier node of another run: not this run's
    if mlflow.get_tracking_uri() != tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    mlflow.start_run(run_id=run_id)
    try:
        yield
    finally:
        _active_run_stack.get().clear()
