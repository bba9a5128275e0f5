"""Ctrl-C (SIGINT) and SIGTERM during ``kedro run``, and the outcome of the flow run.

* First signal: no new node starts; the nodes already running finish (so every output they
  save is complete), the Dask cluster the run started is closed as usual, the flow run ends
  ``Cancelled`` in Prefect, and ``kedro run`` exits with ``128 + signal number`` (130 for Ctrl-C)
  after logging Kedro's resume hint.
* Second signal: stop at once. The progress bar (on a terminal) is closed, the flow run and the
  task runs of the nodes still running are marked ``Crashed`` in the API, child processes the
  run started (Dask workers, Prefect's temporary API server) are sent SIGTERM without waiting
  for them, one ``Error:`` line is printed and the process exits with ``128 + signal number``
  without waiting for running nodes (their outputs may be partial; outputs of completed nodes
  are untouched). Nothing on that path waits for another process: the states are written by
  direct API calls (recorded before the call returns), not by events.

The handlers are installed inside the flow body (replacing, for its duration, the SIGTERM bridge
Prefect's flow engine installs) and only in the main thread.

Prefect's temporary API server (``kedro_prefect.local_api``) is started in its own session:
a Ctrl-C in the terminal reaches the whole foreground process group, and the server must
survive it to record the ``Cancelled`` state. It stops by itself when ``kedro run`` dies.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from kedro_prefect.errors import RunCancelledError, RunStoppedError
from kedro_prefect.execution.redaction import redact

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.client.schemas.objects import State

logger = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: While the main thread waits for a node, it wakes up this often to run a pending signal's
#: handler (see :meth:`Cancellation.wait_for`).
SIGNAL_CHECK_SECONDS = 0.25

T = TypeVar("T")


class Cancellation:
    """Signal handling for one run, shared by the flow body and the driver loop."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.flow_run_id: Any = None
        self._wakers: list[Callable[[], None]] = []
        self._before_exit: list[Callable[[], None]] = []
        self._running: Callable[[], list[Any]] = list

    def __getstate__(self) -> dict[str, Any]:
        # The flow function refers to the runner, which refers to this object, and Prefect's
        # Dask task runner pickles the flow run context: leave the (driver-only) callbacks out.
        return {**self.__dict__, "_wakers": [], "_before_exit": [], "_running": list}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def on_request(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the signal handler: reentrant-safe code only) on cancel."""
        self._wakers.append(callback)

    def before_exit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` first when a second signal stops the process (e.g. close the bar)."""
        self._before_exit.append(callback)

    def track_running(self, running: Callable[[], list[Any]]) -> None:
        """``running()`` gives the ids of the task runs submitted and not finished yet."""
        self._running = running

    def wait_for(self, items: queue.SimpleQueue[T]) -> T:
        """The next item of ``items``, waiting in short slices so that a signal is handled.

        Python runs signal handlers in the main thread only, between bytecodes. The kernel may
        hand a process's signal to any of its threads (a node's, an HTTP client's); then a main
        thread blocked on a lock (``get()`` without a timeout) is not interrupted, and the
        handler would wait for the next item: forever when the only unit still running is a
        child flow run waiting for a worker of its pool.
        """
        while True:
            try:
                return items.get(timeout=SIGNAL_CHECK_SECONDS)
            except queue.Empty:
                continue

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[None]:
        """Install the SIGINT/SIGTERM handlers while the block runs (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        if context and context.flow_run:
            self.flow_run_id = context.flow_run.id
        previous = {signum: signal.getsignal(signum) for signum in HANDLED_SIGNALS}
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self._handle)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            logger.warning(
                "Received %s: no new node will start; waiting for running nodes to finish. "
                "Send it again to stop at once.",
                signal.Signals(signum).name,
            )
            for wake in self._wakers:
                wake()
            return
        self._stop_now(signum)

    def _stop_now(self, signum: int) -> None:
        name = signal.Signals(signum).name
        for callback in self._before_exit:
            with contextlib.suppress(Exception):
                callback()
        logger.error("Received %s again: stopping now, running nodes are abandoned.", name)
        abandoned: list[Any] = []
        with contextlib.suppress(Exception):
            abandoned = list(self._running())
        mark_crashed(self.flow_run_id, abandoned, f"Stopped by a second {name}")
        stop_child_processes()
        with contextlib.suppress(Exception):
            RunStoppedError(signum, len(abandoned)).show()  # click's one "Error: ..." line
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signum)


def run_flow_body(
    body: Callable[[], None], cancellation: Cancellation, secrets: frozenset[str]
) -> tuple[State | None, BaseException | None]:
    """Run the flow body; return the flow run's final state (None: Completed) and the error.

    The flow body must not raise: Prefect writes the exception of a failing flow to result
    storage even with persistence off. The caller re-raises the error after the flow run ended.
    """
    from prefect.states import Cancelled, Failed

    with cancellation.handling_signals():
        try:
            body()
        except RunCancelledError as exc:
            return Cancelled(message=str(exc)), exc
        except Exception as exc:
            message = redact(f"{type(exc).__name__}: {exc}", secrets).splitlines()[0]
            return Failed(message=message[:1000]), exc
    return None, None


def mark_crashed(flow_run_id: UUID, task_run_ids: list[UUID], message: str) -> None:
    """Best effort: set the flow run and the abandoned task runs ``Crashed`` in the Prefect API.

    The task runs' own states travel as events: those still queued in this process are sent
    first (briefly), so that every abandoned task run exists in the API before it is marked.
    """
    if flow_run_id is None:
        return
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    events = getattr(sys.modules.get("prefect.events.worker"), "EventsWorker", None)
    if events is not None and task_run_ids:
        with contextlib.suppress(Exception):
            events.drain_all(timeout=0.3, at_exit=False)
    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)
            for task_run_id in task_run_ids:
                try:
                    client.set_task_run_state(task_run_id, Crashed(message=message), force=True)
                except Exception as exc:
                    logger.debug("Could not mark task run %s Crashed: %s", task_run_id, exc)
    except Exception as exc:
        logger.error("Could not mark flow run %s Crashed: %s", flow_run_id, exc)


def stop_child_processes() -> None:
    """Send SIGTERM to the processes this run started (Dask workers, Prefect's API server).

    Nothing waits for them: each stops by itself (the API server has recorded every state sent
    to it by then; it shuts down on its own and would also stop when this process is gone).
    """
    for child in multiprocessing.active_children():
        with contextlib.suppress(Exception):
            child.terminate()
    from kedro_prefect.local_api import EPHEMERAL_API

    with contextlib.suppress(Exception):
        EPHEMERAL_API.stop_without_waiting()
