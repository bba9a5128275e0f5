"""Worker processes start without repeating Kedro's "Using 'conf/logging.yml' as logging
configuration" line.

Kedro logs that line (logger ``kedro.framework.project``, INFO) when a process first imports
``kedro.framework.project``: a spawned worker process does so before any kedro-prefect code runs
(it re-imports the ``kedro`` command that started the run). Which file Kedro reads there is
keyed on the ``KEDRO_LOGGING_CONFIG`` environment variable, so for the life of a run's worker
processes it names a copy of the driver's logging configuration in which that one logger is
at WARNING: the workers set up the same handlers and levels as before, and the line is printed
once, by the driver, as under Kedro's own runners.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

ENV = "KEDRO_LOGGING_CONFIG"
LOGGER = "kedro.framework.project"  # the logger of Kedro's "Using ... as logging" line

T = TypeVar("T")


def worker_logging_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a ``logging.config.dictConfig`` dict) with Kedro's line at WARNING."""
    quiet = copy.deepcopy(config)
    loggers = quiet.setdefault("loggers", {}) or {}
    quiet["loggers"] = loggers
    loggers[LOGGER] = {**(loggers.get(LOGGER) or {}), "level": "WARNING"}
    return quiet


@contextmanager
def workers_without_logging_line(runner: AbstractContextManager[T]) -> Iterator[T]:
    """Enter ``runner`` (a task runner starting worker processes) with ``KEDRO_LOGGING_CONFIG``
    naming the quiet copy of the driver's logging configuration; restored after it."""
    import yaml
    from kedro.framework.project import LOGGING

    config = getattr(LOGGING, "data", None)
    if not config:
        with runner as entered:
            yield entered
        return
    folder = Path(tempfile.mkdtemp(prefix="kedro-prefect-logging-"))
    path = folder / "logging.yml"
    path.write_text(yaml.safe_dump(worker_logging_config(config), sort_keys=False))
    before = os.environ.get(ENV)
    os.environ[ENV] = str(path)
    try:
        with runner as entered:
            yield entered
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before
        shutil.rmtree(folder, ignore_errors=True)
