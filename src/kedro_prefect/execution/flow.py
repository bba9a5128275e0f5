"""The function of every ``PrefectRunner`` flow, in a module that imports nothing else.

Prefect sends the flow object along with every task it submits to another process (a Dask
worker, a worker process of ``task_runner=process``), where unpickling it imports the module of
the flow's function: the runner's module would import the run's configuration, the API client
and Kedro's config loader in every worker process before its first node (~0.1 s).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

#: What the flow run runs: set by the runner around the flow's call.
RUN_BODY: ContextVar[Callable[[], Any]] = ContextVar("kedro_prefect_run_body")


def pipeline_flow() -> Any:
    """The function of every PrefectRunner flow: runs the body its runner set in ``RUN_BODY``.

    It is module-level on purpose. Prefect sends the flow object along with every task it
    submits to another process: a closure would carry the runner, the pipeline, the catalog and
    the hook manager into each task; this function is pickled by reference.
    """
    return RUN_BODY.get()()  # the flow run's final state (None: Completed)
