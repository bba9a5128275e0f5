"""Keeping the project's credentials out of Prefect.

Values from ``conf/<env>/credentials*`` (read through the project's config loader, so
environment variables and resolvers are applied) never reach Prefect:

* node tasks get no parameters that Prefect stores (task runs record only upstream references)
  and are neither cached nor persisted: Prefect computes no cache key from the catalog;
* a node's exception whose message or traceback contains a credential is replaced, before
  Prefect sees it (state message, task run logs), by :class:`RedactedNodeError` with every
  credential value masked; while the node runs, log handlers of the process running it (a Dask
  worker too) mask credential values;
* log records emitted during a run have credential values masked in every handler: those sent
  to the Prefect API (Prefect's own ``APILogHandler`` included) and the terminal;
* the flow body never raises: a failure ends the flow run with a ``Failed`` state built from the
  masked message, because Prefect writes a failing flow's exception to result storage
  (``$PREFECT_HOME/storage``) even with persistence off.
"""

from __future__ import annotations

import functools
import inspect
import logging
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kedro.config import AbstractConfigLoader

#: Credential values shorter than this are not masked (they would mangle every log line).
MIN_SECRET_LENGTH = 4
MASK = "***"


def project_secrets(config_loader: AbstractConfigLoader | None) -> frozenset[str]:
    """Every string value of the project's credentials (empty outside a Kedro session)."""
    if config_loader is None:
        return frozenset()
    from kedro_prefect.config.project import read_config

    try:
        credentials = read_config(config_loader, "credentials")
    except Exception:  # MissingConfigException, or no credentials pattern at all
        return frozenset()
    return frozenset(value for value in _leaves(credentials) if len(value) >= MIN_SECRET_LENGTH)


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, str):
        yield value


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***`` (longest first)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def contains_secret(text: str, secrets: Iterable[str]) -> bool:
    return any(secret in text for secret in secrets)


class RedactedNodeError(Exception):
    """A node failed with an error whose text contained credential values, masked here.

    The error raised is also an instance of the original error's nearest built-in type
    (``ConnectionError``, ``ValueError``...), as Kedro's runners would raise the original:
    ``except ConnectionError`` written against them keeps working.
    """


def redacted_error(original: BaseException, message: str) -> RedactedNodeError:
    """A :class:`RedactedNodeError` that is also an instance of ``original``'s built-in type."""
    builtin = next(c for c in type(original).__mro__ if c.__module__ == "builtins")
    return _redacted_class(builtin.__name__)(message)


@functools.cache
def _redacted_class(builtin_name: str) -> type[RedactedNodeError]:
    import builtins

    builtin = getattr(builtins, builtin_name)
    if builtin in (Exception, BaseException):
        return RedactedNodeError
    return type(
        f"Redacted{builtin_name}",
        (RedactedNodeError, builtin),
        {
            "__module__": __name__,
            "__str__": lambda self: str(self.args[0]) if self.args else "",
            # pickled by reference (a Dask worker sends it to the driver)
            "__reduce__": lambda self: (_rebuild, (builtin_name, *self.args[:1])),
        },
    )


def _rebuild(builtin_name: str, message: str = "") -> RedactedNodeError:
    return _redacted_class(builtin_name)(message)


def protect_secrets(fn: Callable[..., Any], secrets: frozenset[str]) -> Callable[..., Any]:
    """Wrap a node task body so that its exceptions never carry a credential value."""
    return MaskingTaskBody(fn, secrets) if secrets else fn


class MaskingTaskBody:
    """A task body calling ``fn``; an exception mentioning a credential is masked.

    A module-level class, so that it pickles by reference (Dask) like the function it wraps;
    it exposes ``fn``'s signature, which Prefect binds the task parameters to.
    """

    def __init__(self, fn: Callable[..., Any], secrets: frozenset[str]):
        self.fn = fn
        self.secrets = secrets
        self.__name__ = getattr(fn, "__name__", "node")
        self.__doc__ = fn.__doc__
        self.__signature__ = inspect.signature(fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            # Also in Dask worker processes, which ship node log records to Prefect themselves.
            with redacted_logs(self.secrets):
                return self.fn(*args, **kwargs)
        except Exception as exc:
            full = "".join(traceback.format_exception(exc))
            if not contains_secret(full, self.secrets):
                raise
            summary = redact(f"{type(exc).__name__}: {exc}", self.secrets)
            raise redacted_error(
                exc,
                f"{summary}\n(credential values masked; original traceback, masked:)\n"
                f"{redact(full, self.secrets)}",
            ) from None


class _RedactSecrets(logging.Filter):
    def __init__(self, secrets: frozenset[str]):
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if contains_secret(message, self._secrets):
            record.msg, record.args = redact(message, self._secrets), None
        if record.exc_info:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
            if contains_secret(text, self._secrets):
                # Rich and Prefect format exc_info themselves: replace it by masked text.
                message = redact(record.getMessage(), self._secrets)
                record.msg, record.args = f"{message}\n{redact(text, self._secrets)}", None
                record.exc_info, record.exc_text = None, None
        return True


@contextmanager
def redacted_logs(secrets: frozenset[str]) -> Iterator[None]:
    """Mask credential values in what every log handler emits while the block runs.

    That covers the ``APILogHandler`` instances sending logs to Prefect (Prefect's own and the
    one for node logs) and, as a bonus, the terminal and log files of ``kedro run``.
    """
    if not secrets:
        yield
        return
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    handlers = {id(handler): handler for logger in loggers for handler in logger.handlers}
    redactor = _RedactSecrets(secrets)
    for handler in handlers.values():
        handler.addFilter(redactor)
    try:
        yield
    finally:
        for handler in handlers.values():
            handler.removeFilter(redactor)
