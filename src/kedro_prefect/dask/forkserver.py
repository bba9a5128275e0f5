"""A local cluster's worker processes forked from a server that has already imported their code.

By default distributed *spawns* each worker process of a ``LocalCluster``: a new interpreter
that imports Dask, then (:mod:`.preload`) Prefect, Kedro and kedro-prefect's worker side,
~1.5-2 CPU-s per worker on a small machine, all of it before the worker can take a node.
Kedro's ``ParallelRunner`` forks its workers from the ``kedro run`` process instead.

For the local cluster a run starts (:mod:`.early`), the workers are started with Python's
``forkserver`` method instead: one server process, started with the cluster, imports those
modules once (:mod:`.fork_parent`), and each worker is a fork of it. A fork server is a
fresh interpreter started with the environment the workers would have been spawned with
(the run's environment and distributed's ``pre-spawn-environ``), never a fork of the
``kedro run`` process with its threads; the worker then prepares itself for the project as a
spawned worker does (:mod:`.preload`): its ``src`` on ``sys.path``, the project's modules and
hook manager, never imported in the server (a later run in the same process may have changed
them).

The server belongs to the process (Python has one per process): it ends when the process ends,
and a later run's cluster in the same process reuses it if the environment is still the one it
was started with, else that cluster's workers are spawned as before. Nothing changes for
``address=``, other cluster classes, a ``distributed.worker.multiprocessing-method`` configured
to something else than the default ``spawn``, or platforms without ``forkserver`` (Windows).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: What every node task on a worker imports, whatever the project (the server imports them,
#: and so does each worker that is spawned rather than forked, :mod:`.preload`).
WORKER_MODULES = (
    "prefect.task_engine",  # each node task runs in Prefect's task engine
    "kedro.framework.session",  # the node task builds the run's session there
    "kedro_prefect._upstream.prefect",  # the task engine with per-worker caches
    "kedro_prefect.dask.worker",  # the task wrapper and the worker plugin
    "kedro_prefect.execution.tasks",  # the node task's body
    "kedro_prefect.workers.session",  # the run's session on the worker
)

#: The module the fork server imports (its code imports the rest).
SERVER_PRELOAD = "kedro_prefect.dask.fork_parent"

_lock = threading.Lock()
#: The fork server this process started: its PID and the environment it was started with.
_server: tuple[int, dict[str, str]] | None = None


@contextmanager
def forked_workers() -> Iterator[None]:
    """Within it, distributed starts the local cluster's worker processes from the fork server
    (started now if it is not running), or spawns them as before when it cannot be used."""
    from kedro_prefect._upstream.dask_processes import use_start_method

    if not _server_usable():
        yield
        return
    with use_start_method("forkserver"):
        yield


def _server_usable() -> bool:
    """Start the fork server if needed; whether this cluster's workers can be forked from it."""
    from kedro_prefect._upstream import dask_processes as upstream

    if not upstream.forkserver_available() or upstream.configured_start_method() != "spawn":
        return False
    global _server
    with _lock:
        os.environ.update(upstream.pre_spawn_environ())  # as the Nanny does before each worker
        running = upstream.forkserver_pid()
        if _server is None and running is None:
            _server = _start_server()
            return _server is not None
        if _server is None or running != _server[0]:
            return False  # a server this module did not start: unknown environment and modules
        return dict(os.environ) == _server[1]


def _start_server() -> tuple[int, dict[str, str]] | None:
    import multiprocessing.forkserver

    from kedro_prefect._upstream import dask_processes as upstream

    upstream.mark_forkserver_preload_set()
    # "__main__": the server imports the process's main module once (a spawned or forked worker
    # imports it to unpickle what it runs, e.g. the `kedro` command), then the workers' code.
    multiprocessing.forkserver.set_forkserver_preload(["__main__", SERVER_PRELOAD])
    try:
        multiprocessing.forkserver.ensure_running()
    except OSError:
        return None
    pid = upstream.forkserver_pid()
    return None if pid is None else (pid, dict(os.environ))
