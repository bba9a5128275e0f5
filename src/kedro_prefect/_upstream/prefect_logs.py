"""Prefect's API log handler, without a pydantic model per log line.

``APILogHandler.prepare`` turns each record into a ``LogCreate`` (a pydantic model with a
pendulum timestamp), dumps it to JSON and serializes it again to measure it: ~0.15 ms a
record, as long as Kedro's terminal handler takes to render the same line. A 1,000-node run
sends ~5,000 node lines ("Running node", "Loading data", "Saving data", "Completed node"...)
from the threads running its nodes, so this was the largest cost a run adds to what
``SequentialRunner`` does, and it is spent holding the handler's lock.

``NodeLogHandler`` builds the same JSON dict directly, from the same run context, and
hands it to the same log worker as ``emit_api_log`` (Prefect's batching ``APILogWorker``),
found once instead of for every line: ``APILogWorker.instance()`` reads three settings to
find it (a few tens of microseconds each). Where Prefect diverts log lines (``_api_log_sink``,
set in a process pool's worker processes), they go through ``emit_api_log`` as before.

What it relies on is the shape of ``prepare``'s result: ``LogCreate``'s fields as JSON plus
``__payload_size__``, the length of that JSON, which the log worker batches by. Anything
else (a record naming its own flow run or worker, a message over
``PREFECT_LOGGING_TO_API_MAX_LOG_SIZE``, no run context) goes through Prefect's own
``prepare``, which truncates or refuses it as before.
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

from kedro_prefect._upstream import Contract

CONTRACTS = (
    Contract(
        "prefect.logging.handlers:APILogHandler.prepare",
        "send node log lines to the API as prepare's dict (LogCreate's JSON fields plus "
        "__payload_size__) built without a pydantic model per line",
        check=lambda fn: list(__import__("inspect").signature(fn).parameters) == ["self", "record"],
    ),
    Contract(
        "prefect.logging.handlers:APILogHandler._get_payload_size",
        "measure a node log line as the installed Prefect does (its log worker batches by it)",
    ),
    Contract(
        "prefect.logging.handlers:_api_log_sink",
        "send through emit_api_log where Prefect diverts logs (a process pool's worker), else "
        "straight to the log worker found once (APILogWorker.instance reads 3 settings a line)",
        expected=lambda: hasattr(
            __import__("prefect.logging.handlers").logging.handlers, "set_api_log_sink"
        ),
    ),
    Contract(
        "prefect.client.schemas.actions:LogCreate",
        "the fields of a log line sent to the API, built as JSON by NodeLogHandler",
        check=lambda cls: (
            set(cls.model_fields)
            == {"name", "level", "message", "timestamp", "flow_run_id", "task_run_id", "worker_id"}
        ),
    ),
)


def node_log_handler(spool: Callable[[str, dict[str, Any]], bool] | None = None) -> logging.Handler:
    """A new ``NodeLogHandler`` (an ``APILogHandler``).

    ``spool(api_url, line)``, if given, is offered each line first (with the URL of the API of
    the settings in force) and returns whether it took it; lines it refuses go to Prefect's log
    worker.
    """
    handler_class: Any = _handler_class()
    return handler_class(spool)


@functools.cache
def _handler_class() -> type[logging.Handler]:
    from prefect.logging.handlers import APILogHandler

    class NodeLogHandler(APILogHandler):
        """Prefect's ``APILogHandler`` whose ``prepare`` builds the log's JSON dict directly."""

        def __init__(self, spool: Callable[[str, dict[str, Any]], bool] | None = None) -> None:
            super().__init__()
            self._spool = spool
            from prefect.settings import PREFECT_LOGGING_TO_API_MAX_LOG_SIZE

            self._max_size = PREFECT_LOGGING_TO_API_MAX_LOG_SIZE.value()

            self._workers: dict[tuple[Any, ...], Any] = {}

        def prepare(self, record: logging.LogRecord) -> dict[str, Any]:
            log = _prepared(self, record, self._max_size)
            return log if log is not None else super().prepare(record)

        def emit(self, record: logging.LogRecord) -> None:
            """``APILogHandler.emit``, sending to the log worker of the settings in force,
            looked up again only when they change (a Dask worker serving runs of two APIs)."""
            try:
                if not getattr(record, "send_to_api", True):
                    return
                from prefect.context import get_settings_context

                settings = get_settings_context().settings
                if not settings.logging.to_api.enabled:
                    return
                log = self.prepare(record)
                if self._spool is not None and self._spool(settings.api.url or "", log):
                    return
                self._send(log, _worker_key(settings))
            except Exception:
                self.handleError(record)

        def _send(self, log: dict[str, Any], key: tuple[Any, ...]) -> None:
            from prefect.logging import handlers

            if getattr(handlers, "_api_log_sink", None) is not None:  # a process pool's worker
                handlers.emit_api_log(log)
                return
            worker = self._workers.get(key)
            if worker is not None:
                try:
                    worker.send(log)
                    return
                except RuntimeError:  # stopped (drained): take the current instance
                    pass
            self._workers[key] = worker = handlers.APILogWorker.instance()
            worker.send(log)

    return NodeLogHandler


def _worker_key(settings: Any) -> tuple[Any, ...]:
    """What ``APILogWorker.instance()`` tells its workers apart by, read from ``settings``."""
    to_api = settings.logging.to_api
    return (to_api.batch_size, settings.api.url, to_api.max_log_size)


def _prepared(handler: logging.Handler, record: logging.LogRecord, max_size: int) -> Any:
    """``APILogHandler.prepare(record)``'s dict for a record inside a run, or ``None`` where
    Prefect's own ``prepare`` has to decide (see the module's docstring)."""
    if getattr(record, "flow_run_id", None) or getattr(record, "worker_id", None):
        return None
    from prefect.context import get_run_context
    from prefect.exceptions import MissingContextError

    try:
        context = get_run_context()
    except MissingContextError:
        return None
    task_run_id = getattr(record, "task_run_id", None)
    flow_run = getattr(context, "flow_run", None)
    if flow_run is not None:
        flow_run_id = flow_run.id
    else:
        task_run = getattr(context, "task_run", None)
        if task_run is None:
            return None
        flow_run_id, task_run_id = task_run.flow_run_id, task_run_id or task_run.id
    created = datetime.fromtimestamp(record.created, UTC)
    log = {
        "name": record.name,
        "level": record.levelno,
        "message": handler.format(record),
        "timestamp": created.isoformat().replace("+00:00", "Z"),
        "flow_run_id": str(flow_run_id) if flow_run_id else None,
        "task_run_id": str(task_run_id) if task_run_id else None,
    }
    # The installed Prefect's own measure (orjson from 3.5, ``json.dumps`` before).
    size = handler._get_payload_size(log)  # type: ignore[attr-defined]
    if size > max_size:
        return None  # Prefect's prepare truncates it
    log["__payload_size__"] = size
    return log
