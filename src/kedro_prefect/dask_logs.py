"""Node log records on Dask workers go to their task runs too.

In the ``kedro run`` process :func:`kedro_prefect.logs.node_logs_to_prefect` sends the records
emitted inside a node to the node's task run. Dask workers are other processes, where Prefect's
logging ships only Prefect's own records; this worker plugin attaches the same filtered
``APILogHandler`` to each worker's root logger and gives the ``kedro`` and project loggers the
levels they have in the ``kedro run`` process. Imported only when the task runner is Dask.
"""

from __future__ import annotations

import logging
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from kedro_prefect.logs import _InsidePrefectRun

_MARK = "_kedro_prefect_node_logs"


class DaskWorkerLogs(WorkerPlugin):
    """Ship log records emitted in node tasks on this worker to Prefect's API."""

    name = "kedro-prefect-node-logs"
    idempotent = True

    def __init__(self, levels: dict[str, int]):
        self.levels = levels

    def setup(self, worker: Any) -> None:
        from prefect.logging.configuration import ensure_logging_setup
        from prefect.logging.handlers import APILogHandler

        ensure_logging_setup()  # before adding ours: Prefect's set-up replaces root handlers
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)
        root = logging.getLogger()
        if not any(getattr(handler, _MARK, False) for handler in root.handlers):
            handler = APILogHandler()
            handler.setLevel(logging.NOTSET)
            handler.addFilter(_InsidePrefectRun())
            setattr(handler, _MARK, True)
            root.addHandler(handler)

    def teardown(self, worker: Any) -> None:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, _MARK, False)]:
            root.removeHandler(handler)


def forward_dask_worker_logs(task_runner: Any, package_name: str | None) -> bool:
    """Install :class:`DaskWorkerLogs` on the workers of a started ``DaskTaskRunner``."""
    from prefect_dask import DaskTaskRunner

    if not isinstance(task_runner, DaskTaskRunner):
        return False
    client = task_runner.client
    names = [name for name in ("kedro", package_name) if name]
    levels = {name: logging.getLogger(name).getEffectiveLevel() for name in names}
    client.register_plugin(DaskWorkerLogs(levels), name=DaskWorkerLogs.name)
    return True
