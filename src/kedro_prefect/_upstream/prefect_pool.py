"""Prefect's process pool (``task_runner=process``): what its worker processes run.

Relies on, and buys:

* ``ProcessPoolTaskRunner._executor``: the ``concurrent.futures`` pool the task runner creates
  when it is entered, and ``prefect.utilities.callables._run_serialized_call``: what the task
  runner hands it for each task run (``partial(_run_serialized_call, payload)``, the payload a
  ``cloudpickle`` of ``(prefect.task_runners._run_task_in_subprocess, (), kwargs)`` with the
  task's serialized ``context``). :func:`process_pool_in_run_context` hands the pool, instead,
  :func:`run_serialized_call_with_worker_caches` of the same payload: in the worker process it
  calls Prefect's function with this worker's settings and API client in place
  (:func:`kedro_prefect._upstream.prefect_tasks.worker_caches`), built once per process instead of
  once per task run (a settings model, ~80 ms, and two API clients, ~30 ms each). The pool's
  processes are started when the task runner is entered, each running ``start_worker`` (the
  backend's set-up: imports, exit handlers) rather than when the first node task is submitted.
* ``Block.get_block_class_from_key`` (a classmethod) and ``prefect.utilities.dispatch.lookup_type``:
  a task run's context holds the run's result storage, a block, which Prefect rebuilds in the
  worker by its slug after importing every installed Prefect collection (with prefect-dask
  installed: Dask's ``distributed`` and numpy, ~0.3 s per worker). In a worker process,
  :func:`blocks_from_registry_first` looks the slug up in the block classes already imported
  first (Prefect's own ``local-file-system``), and loads the collections only for a slug it
  does not find there.
* ``ProcessPoolTaskRunner._forward_subprocess_messages`` (newer Prefect): the thread that hands
  the worker processes' events and log lines to this process's events and log workers. A plain
  thread sees Prefect's process-wide settings, not the run's settings context (which holds the
  run's API URL), and would start a temporary API server to send them to:
  :func:`process_pool_in_run_context` runs it in the context the task runner was entered in.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from kedro_prefect._upstream import Contract, version_at_least


def _has_executor(cls: Any) -> bool:
    return hasattr(cls(max_workers=1), "_executor")


def _parameters(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


CONTRACTS = (
    Contract(
        "prefect.task_runners:ProcessPoolTaskRunner",
        "task_runner=process: hand the pool (its _executor) each task run with cached settings",
        check=_has_executor,
    ),
    Contract(
        "prefect.utilities.callables:_run_serialized_call",
        "task_runner=process: recognise a task run's call (its payload) to run it with caches",
        check=lambda fn: _parameters(fn) == ["payload"],
    ),
    Contract(
        "prefect.task_runners:_run_task_in_subprocess",
        "task_runner=process: the task run a payload names, run with the worker's caches",
        check=lambda fn: "env" in _parameters(fn),
    ),
    Contract(
        "prefect.blocks.core:Block.get_block_class_from_key",
        "a worker finds the run's result storage block without importing every collection",
        check=lambda fn: _parameters(fn) == ["key"],
    ),
    Contract(
        "prefect.utilities.dispatch:lookup_type",
        "a worker finds the run's result storage block in the classes already imported",
        check=lambda fn: _parameters(fn) == ["cls", "dispatch_key"],
    ),
    Contract(
        "prefect.task_runners:ProcessPoolTaskRunner._forward_subprocess_messages",
        "task_runner=process: forward the workers' events and logs to the run's API",
        expected=lambda: version_at_least("prefect", 3, 9),
        check=lambda fn: _parameters(fn) == ["self"],
    ),
)


def process_pool_in_run_context(cls: type, start_worker: Callable[[], None]) -> type:
    """``cls`` (a ``ProcessPoolTaskRunner`` class) whose worker processes start when it is
    entered, each calling ``start_worker`` first, run each task run with their cached settings
    and API client, and (newer Prefect) whose workers' events and log lines are forwarded in the
    context it was entered in (the run's settings), where Prefect forwards them from a thread of
    its own."""
    return _in_run_context(cls, start_worker)


@functools.cache
def _in_run_context(cls: Any, start_worker: Callable[[], None]) -> type:
    import contextvars

    def __enter__(self: Any) -> Any:
        self._kedro_prefect_context = contextvars.copy_context()
        entered = cls.__enter__(self)
        executor = getattr(self, "_executor", None)
        if executor is not None:
            self._executor = _WithWorkerCaches(executor)
            for _ in range(self._max_workers):  # one spawn per submit while none is idle
                executor.submit(start_worker)
        return entered

    namespace: dict[str, Any] = {
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__enter__": __enter__,
    }
    if hasattr(cls, "_forward_subprocess_messages"):

        def _forward_subprocess_messages(self: Any) -> None:
            context = getattr(self, "_kedro_prefect_context", None)
            if context is None:
                return cls._forward_subprocess_messages(self)
            return context.run(cls._forward_subprocess_messages, self)

        namespace["_forward_subprocess_messages"] = _forward_subprocess_messages
    return type(cls.__name__, (cls,), namespace)


class _WithWorkerCaches:
    """The task runner's process pool, handing it each task run's call to run with the
    worker's caches (:func:`run_serialized_call_with_worker_caches`)."""

    def __init__(self, executor: Any):
        self._pool = executor

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        from prefect.utilities.callables import _run_serialized_call

        if (
            isinstance(fn, functools.partial)
            and fn.func is _run_serialized_call
            and len(fn.args) == 1
            and not (args or kwargs or fn.keywords)
        ):
            from kedro_prefect._upstream.prefect_tasks import limited_tag_names

            fn = functools.partial(
                run_serialized_call_with_worker_caches, fn.args[0], limited_tag_names()
            )
        return self._pool.submit(fn, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def run_serialized_call_with_worker_caches(
    payload: bytes, limited: frozenset[str] | None = None
) -> bytes:
    """Prefect's ``_run_serialized_call(payload)`` in a worker process, a task run's call run
    with this worker's settings and API client in place (any other call as Prefect would),
    asking for concurrency slots of the run's ``limited`` tags only."""
    import cloudpickle
    from prefect.task_runners import _run_task_in_subprocess
    from prefect.utilities.callables import _run_serialized_call

    from kedro_prefect._upstream.prefect_tasks import worker_caches

    blocks_from_registry_first()
    fn, args, kwargs = cloudpickle.loads(payload)
    context = kwargs.get("context")
    if fn is not _run_task_in_subprocess or not isinstance(context, dict):
        return _run_serialized_call(payload)
    with worker_caches(context, limited=limited) as kwargs["context"]:
        return cloudpickle.dumps(fn(*args, **kwargs))


def blocks_from_registry_first() -> None:
    """In this (worker) process, Prefect finds a block class by its slug among the classes
    already imported before it imports every installed Prefect collection to find it."""
    from prefect.blocks.core import Block

    original = Block.__dict__["get_block_class_from_key"]
    if getattr(original, "_kedro_prefect", False):
        return

    def get_block_class_from_key(cls: Any, key: str) -> Any:
        from prefect.utilities.dispatch import lookup_type

        try:
            return lookup_type(cls, key)
        except KeyError:  # not imported yet: Prefect loads the collections, then looks again
            pass
        return original.__func__(cls, key)

    replacement = classmethod(get_block_class_from_key)
    replacement._kedro_prefect = True  # type: ignore[attr-defined]
    Block.get_block_class_from_key = replacement  # type: ignore[method-assign,assignment]
