"""Sending log records emitted inside node tasks to the node's task run logs in Prefect.

Prefect only ships its own loggers to the API; ``PREFECT_LOGGING_EXTRA_LOGGERS`` does not
survive Kedro re-applying the project's ``logging.yml``. So for the duration of a run an
``APILogHandler`` is attached to the root logger (and to ``kedro`` and the project package
logger when they do not propagate), passing only records emitted inside a Prefect run.
The project's ``logging.yml`` stays untouched.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
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
    """Attach Prefect's ``APILogHandler`` to the project's loggers while the block runs.

    The handler builds each line's API payload without Prefect's pydantic model
    (:mod:`kedro_prefect._upstream.prefect_logs`): a 1,000-node run sends ~5,000 such lines.
    """
    from kedro_prefect._upstream.prefect_logs import node_log_handler
    from kedro_prefect.local_api import flush_node_lines, spool_node_line

    handler = node_log_handler(spool_node_line)
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
        flush_node_lines()


# --- what reaches the terminal -------------------------------------------------------------------

#: Prefect's loggers of flow and task runs: their records always go to the run's logs in the API.
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
#: Prefect's loggers of task runners (prefect-dask's "Creating a new Dask cluster...").
TASK_RUNNER_LOGGER = "prefect.task_runner"


def terminal_shows_everything() -> bool:
    """Whether the user asked for DEBUG (``kedro`` or ``kedro_prefect`` at DEBUG in logging.yml)."""
    return logging.getLogger("kedro_prefect").isEnabledFor(logging.DEBUG)


def news_on_terminal(record: logging.LogRecord) -> bool:
    """Whether a record of Prefect's flow or task run loggers is also printed on the terminal.

    At INFO, Kedro's own lines already tell the story ("Running node", "Completed node", the
    node's error, the resume hint): Prefect's "Beginning flow run", "Finished in state
    Completed()" and its copy of a node's traceback go to the run's logs in the API only.
    Retries (Kedro has none) and Prefect's own warnings and errors are printed.
    """
    if terminal_shows_everything():
        return True
    message = record.msg if isinstance(record.msg, str) else ""
    if "Retry %s/%s will start" in message:
        return True
    if message.startswith(("Task run failed with", "Finished in state")):
        return False
    return record.levelno >= logging.WARNING


class _TerminalGate(logging.Handler):
    """Hands a run logger's record to the terminal handlers above it if it is news there."""

    def handle(self, record: logging.LogRecord) -> bool:
        if news_on_terminal(record):
            logging.getLogger("prefect").callHandlers(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover (handle() is used)
        pass


def gate_run_lines() -> Callable[[], None]:
    """Send Prefect's flow/task run records to the API and only the news to the terminal.

    Returns the function undoing it. Idempotent while in force.
    """
    undo: list[Callable[[], None]] = []
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if any(isinstance(handler, _TerminalGate) for handler in logger.handlers):
            continue
        gate, propagate = _TerminalGate(), logger.propagate
        logger.addHandler(gate)
        logger.propagate = False
        undo.append(functools.partial(_ungate, logger, gate, propagate))

    def restore() -> None:
        for step in reversed(undo):
            step()

    return restore


def _ungate(logger: logging.Logger, gate: logging.Handler, propagate: bool) -> None:
    logger.removeHandler(gate)
    logger.propagate = propagate


@contextmanager
def quiet_terminal(dask: bool = False) -> Iterator[None]:
    """A run's terminal: Kedro's lines and kedro-prefect's, not Prefect's or Dask's chatter.

    * Prefect's flow/task run lines go to the API only (:func:`news_on_terminal`).
    * ``dask``: :func:`quiet_dask_logs`.

    With ``kedro``/``kedro_prefect`` at DEBUG everything is shown as before.
    """
    restore = gate_run_lines()
    try:
        with quiet_dask_logs() if dask else contextlib.nullcontext():
            yield
    finally:
        restore()


@contextmanager
def quiet_dask_logs() -> Iterator[None]:
    """The cluster's lifecycle (scheduler, nanny and worker start/stop, "event loop was
    unresponsive") and prefect-dask's "Creating a new Dask cluster" are not shown at INFO, in
    this process and in the worker processes the cluster starts (through
    ``DASK_LOGGING__DISTRIBUTED``, read when a worker process imports ``distributed``), nor the
    :data:`DASK_NOISE` warnings about the cluster the run starts and stops. Entered by the run
    (:func:`quiet_terminal`) and, before it, where a local cluster starts early
    (:mod:`kedro_prefect.dask.early`); with ``kedro``/``kedro_prefect`` at DEBUG it shows all.
    """
    import os

    levels: dict[str, int] = {}
    environ = dask_logging_environ()
    quiet_dask = not terminal_shows_everything()
    noise = _DropMessages(DASK_NOISE)
    if quiet_dask:
        for name in ("distributed", TASK_RUNNER_LOGGER):
            logger = logging.getLogger(name)
            if logger.getEffectiveLevel() < logging.WARNING:
                levels[name] = logger.level
                logger.setLevel(logging.WARNING)
        for name in DASK_NOISE:
            logging.getLogger(name).addFilter(noise)
        os.environ.update(environ)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for name in DASK_NOISE:
            logging.getLogger(name).removeFilter(noise)
        for name in environ:
            os.environ.pop(name, None)


def dask_logging_environ() -> dict[str, str]:
    """What :func:`quiet_dask_logs` sets for the worker processes a cluster starts: Dask's
    cluster lifecycle at WARNING, unless the user asked for DEBUG or set it."""
    import os

    if terminal_shows_everything() or "DASK_LOGGING__DISTRIBUTED" in os.environ:
        return {}
    return {"DASK_LOGGING__DISTRIBUTED": "warning"}


#: Warnings about the local cluster the run starts and stops itself, by logger: the port of its
#: dashboard (the "Dask dashboard:" line gives the one in use), and workers killed when the
#: cluster closes after the last node.
DASK_NOISE: dict[str, tuple[str, ...]] = {
    "py.warnings": ("is already in use", "Hosting the HTTP server on port"),
    "distributed.nanny": ("still alive after", "was killed by signal"),
}


class _DropMessages(logging.Filter):
    def __init__(self, texts_by_logger: dict[str, tuple[str, ...]]):
        super().__init__()
        self.texts_by_logger = texts_by_logger

    def filter(self, record: logging.LogRecord) -> bool:
        texts = self.texts_by_logger.get(record.name, ())
        return not (texts and any(text in record.getMessage() for text in texts))


def keep_project_logging_in_worker() -> None:
    """In a (Dask worker) process: the project's logging, also once Prefect is set up there.

    Kedro applied the project's ``logging.yml`` when the worker imported it; Prefect, set up
    next, keeps the project's handlers (:func:`keep_project_log_handlers`), so node lines from
    workers look like the driver's instead of coming out in Prefect's format.
    """
    import kedro.framework.project  # noqa: F401  (applies the project's logging.yml once)

    keep_project_log_handlers()
