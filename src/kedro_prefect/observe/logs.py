"""Sending log records emitted inside node tasks to the node's task run logs in Prefect.

Prefect only ships its own loggers to the API; ``PREFECT_LOGGING_EXTRA_LOGGERS`` does not
survive Kedro re-applying the project's ``logging.yml``. So for the duration of a run an
``APILogHandler`` is attached to the root logger (and to ``kedro`` and the project package
logger when they do not propagate), passing only records emitted inside a Prefect run.
The project's ``logging.yml`` stays untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class _InsidePrefectRun(logging.Filter):
    """Pass records emitted in a task or flow run, except Prefect's own (already shipped)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "prefect" or record.name.startswith("prefect."):
            return False
        from prefect.context import FlowRunContext, TaskRunContext

        return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def _target_loggers(package_name: str | None) -> list[logging.Logger]:
    loggers = [logging.getLogger()]
    for name in ("kedro", package_name):
        if name and not logging.getLogger(name).propagate:
            loggers.append(logging.getLogger(name))
    return loggers


def keep_project_log_handlers() -> None:
    """Let Prefect set up its logging once without replacing the project's root handlers.

    Prefect configures logging from its own ``logging.yml`` the first time it is set up in a
    process, and keeps the root handlers only if one of them has a formatter: Kedro's
    ``RichHandler`` has none, so the project's console output would turn into Prefect's. Call
    this before the first ``from prefect import ...`` of a run; later calls do nothing.
    """
    from kedro_prefect._upstream.prefect import set_up_prefect_logging_once

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    if not set_up_prefect_logging_once() or not handlers:
        return
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@contextmanager
def node_logs_to_prefect(package_name: str | None) -> Iterator[None]:
    """Attach Prefect's ``APILogHandler`` to the project's loggers while the block runs."""
    from prefect.logging.handlers import APILogHandler

    handler = APILogHandler()
    handler.setLevel(logging.NOTSET)
    handler.addFilter(_InsidePrefectRun())
    targets = _target_loggers(package_name)
    for logger in targets:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in targets:
            logger.removeHandler(handler)
