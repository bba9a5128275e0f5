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


#: The quiet copies this process wrote, by content digest: one path for one configuration, for
#: the life of the process (removed at exit), so that a fork server started before the run
#: (:mod:`kedro_prefect.dask.forkserver`) and the workers of every run of the process name the
#: same file, and a later run's cluster forks from that server too.
_copies: dict[str, Path] = {}


def worker_logging_environ() -> dict[str, str]:
    """``{KEDRO_LOGGING_CONFIG: <the quiet copy>}`` for worker processes (written if needed);
    ``{}`` when Kedro has no logging configuration. Removed at exit."""
    import atexit
    import hashlib

    import yaml
    from kedro.framework.project import LOGGING

    config = getattr(LOGGING, "data", None)
    if not config:
        return {}
    text = yaml.safe_dump(worker_logging_config(config), sort_keys=False)
    digest = hashlib.sha256(text.encode()).hexdigest()
    path = _copies.get(digest)
    if path is None or not path.exists():
        folder = Path(tempfile.mkdtemp(prefix="kedro-prefect-logging-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        path = _copies[digest] = folder / "logging.yml"
        path.write_text(text)
    return {ENV: str(path)}


@contextmanager
def workers_without_logging_line(runner: AbstractContextManager[T]) -> Iterator[T]:
    """Enter ``runner`` (a task runner starting worker processes) with ``KEDRO_LOGGING_CONFIG``
    naming the quiet copy of the driver's logging configuration; restored after it."""
    environ = worker_logging_environ()
    if not environ:
        with runner as entered:
            yield entered
        return
    before = os.environ.get(ENV)
    os.environ[ENV] = environ[ENV]
    try:
        with runner as entered:
            yield entered
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before
