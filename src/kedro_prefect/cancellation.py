"""Ctrl-C (SIGINT) and SIGTERM during ``kedro run``, and the outcome of the flow run.

* First signal: no new node starts; the nodes already running finish (so every output they
  save is complete), the Dask cluster the run started is closed as usual, the flow run ends
  ``Cancelled`` in Prefect, and ``kedro run`` exits with ``128 + signal number`` (130 for Ctrl-C)
  after logging Kedro's resume hint.
* Second signal: stop at once. The flow run is marked ``Crashed``, child processes the run
  started (Dask workers, Prefect's temporary API server) are terminated, and the process exits
  with ``128 + signal number`` without waiting for running nodes (their outputs may be partial;
  outputs of completed nodes are untouched).

The handlers are installed inside the flow body (replacing, for its duration, the SIGTERM bridge
Prefect's flow engine installs) and only in the main thread.

Prefect's temporary API server is started in its own session (see
:func:`start_ephemeral_server`): a Ctrl-C in the terminal reaches the whole foreground process
group, and the server must survive it to record the ``Cancelled`` state. On Linux it also gets
``PR_SET_PDEATHSIG`` so that it never outlives the ``kedro run`` process, even a killed one.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from kedro_prefect.errors import KedroPrefectError
from kedro_prefect.redaction import redact

if TYPE_CHECKING:
    from prefect.client.schemas.objects import State

logger = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunCancelledError(KedroPrefectError):
    """The run was stopped by SIGINT or SIGTERM; ``kedro run`` exits with 128 + signal."""

    def __init__(self, signum: int, running: int = 0):
        name = signal.Signals(signum).name
        super().__init__(
            f"Run cancelled by {name}: no new node was started after it"
            + (f"; the {running} running node(s) were allowed to finish" if running else "")
            + ". Outputs of completed nodes are saved; see the resume hint above."
        )
        self.signum = signum
        self.exit_code = 128 + signum


class Cancellation:
    """Signal handling for one run, shared by the flow body and the driver loop."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.flow_run_id: Any = None
        self._wakers: list[Callable[[], None]] = []

    def __getstate__(self) -> dict[str, Any]:
        # The flow function refers to the runner, which refers to this object, and Prefect's
        # Dask task runner pickles the flow run context: leave the (driver-only) wakers out.
        return {**self.__dict__, "_wakers": []}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def on_request(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the signal handler: reentrant-safe code only) on cancel."""
        self._wakers.append(callback)

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
        logger.error("Received %s again: stopping now, running nodes are abandoned.", name)
        mark_flow_run_crashed(self.flow_run_id, f"Stopped by a second {name}")
        stop_child_processes()
        logging.shutdown()
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


def mark_flow_run_crashed(flow_run_id: Any, message: str) -> None:
    """Best effort: set the flow run's state to Crashed in the Prefect API."""
    if flow_run_id is None:
        return
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)
    except Exception as exc:
        logger.error("Could not mark flow run %s Crashed: %s", flow_run_id, exc)


def stop_child_processes() -> None:
    """Terminate the processes this run started: Dask workers/nannies, Prefect's API server."""
    for child in multiprocessing.active_children():
        with contextlib.suppress(Exception):
            child.terminate()
    from prefect.server.api.server import SubprocessASGIServer

    for server in list(SubprocessASGIServer._instances.values()):
        with contextlib.suppress(Exception):
            server.stop()


def start_ephemeral_server() -> Any:
    """Start Prefect's temporary API server detached from the terminal's process group.

    Started as Prefect does (``SubprocessASGIServer``), plus: its own session, so that a Ctrl-C
    in the terminal does not kill it before the run has recorded its Cancelled state; on Linux,
    ``PR_SET_PDEATHSIG``, so that it dies with the ``kedro run`` process whatever the cause.
    """
    from prefect.server.api import server as server_module

    server = server_module.SubprocessASGIServer()
    if server.running:
        return server
    real_subprocess = server_module.subprocess
    server_module.subprocess = _DetachedSubprocess(real_subprocess)  # type: ignore[assignment]
    try:
        server.start()
    finally:
        server_module.subprocess = real_subprocess
    return server


class _DetachedSubprocess:
    """A stand-in for the ``subprocess`` module whose ``Popen`` detaches the child."""

    def __init__(self, real: Any):
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def Popen(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("start_new_session", True)
        if (
            sys.platform.startswith("linux")
            and threading.current_thread() is threading.main_thread()
        ):
            kwargs.setdefault("preexec_fn", _die_with_parent)
        return self._real.Popen(*args, **kwargs)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent process dies (Linux only)."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
