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


#: The quiet copies this process wrote, by content digest: one path for one configuration, so
#: that a fork server started before the run (:mod:`kedro_prefect.dask.forkserver`) and the
#: run's workers name the same file.
_copies: dict[str, Path] = {}
_runs_using: dict[Path, int] = {}  # runs using each copy (removed when the last one ends)


def worker_logging_environ() -> dict[str, str]:
    """``{KEDRO_LOGGING_CONFIG: <the quiet copy>}`` for worker processes (written if needed);
    ``{}`` when Kedro has no logging configuration. Removed at exit if no run removed it."""
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
    path = Path(environ[ENV])
    _runs_using[path] = _runs_using.get(path, 0) + 1
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
        _runs_using[path] -= 1
        if not _runs_using[path]:
            del _runs_using[path]
            for digest, copy_path in list(_copies.items()):
                if copy_path == path:
                    del _copies[digest]
            shutil.rmtree(path.parent, ignore_errors=True)
