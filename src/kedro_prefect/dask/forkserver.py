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
was started with, or differs only by variables added since that nothing reads at start (each
forked worker sets them as it starts), else that cluster's workers are spawned as before.
Nothing changes for ``address=``, other cluster classes, a
``distributed.worker.multiprocessing-method`` configured to something else than the default
``spawn``, or platforms without ``forkserver`` (Windows).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kedro_prefect.config.options import RunnerOptions

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
#: Whether that server was started as a runner was built and no cluster has used it yet.
_unused_early = False


@contextmanager
def forked_workers() -> Iterator[dict[str, str]]:
    """Within it, distributed starts the local cluster's worker processes from the fork server
    (started now if it is not running), or spawns them as before when it cannot be used.

    Yields the variables each forked worker must set as it starts (give them to the Nanny as
    its ``env``): those the run added since the server started (:func:`_added_since`); ``{}``
    when nothing is to add or the workers are spawned."""
    from kedro_prefect._upstream.dask_processes import (
        mark_forkserver_preload_set,
        use_start_method,
    )

    added = _server_usable()
    if added is None:
        yield {}
        return
    mark_forkserver_preload_set()  # distributed keeps the server's preload list
    with use_start_method("forkserver"):
        yield added


#: Variables read as an interpreter starts or as the server's modules are imported: Python's,
#: the loader's and the allocator's, the BLAS and OpenMP thread pools numpy sets up on its
#: import, Dask's, Prefect's and Kedro's settings, the locale and time zone. A run that added
#: one of them needs a server started with it.
STARTUP_VARIABLES = (
    "PYTHON",
    "LD_",
    "MALLOC_",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "NUMEXPR_",
    "VECLIB_",
    "DASK_",
    "PREFECT_",
    "KEDRO_",
    "TZ",
    "LANG",
    "LC_",
)


def _added_since(now: dict[str, str], started: dict[str, str]) -> dict[str, str] | None:
    """The variables of ``now`` that ``started`` did not have, if that is the whole difference
    and none of them is read at start (:data:`STARTUP_VARIABLES`); else ``None``.

    A forked worker sets them first thing, as a Nanny sets its ``env`` (before the worker's
    preload imports the project): e.g. ``KMP_DUPLICATE_LIB_OK``/``KMP_INIT_AT_FORK``, which
    scikit-learn sets when the project's pipelines import it, or a hook's credentials."""
    if any(now.get(name) != value for name, value in started.items()):
        return None
    added = {name: value for name, value in now.items() if name not in started}
    if any(name.startswith(STARTUP_VARIABLES) for name in added):
        return None
    return added


def _server_usable() -> dict[str, str] | None:
    """Start the fork server if needed; whether this cluster's workers can be forked from it
    (``None``: spawn them), and the variables to give each of them (:func:`_added_since`)."""
    from kedro_prefect._upstream import dask_processes as upstream

    if not upstream.forkserver_available() or upstream.configured_start_method() != "spawn":
        return None
    global _server, _unused_early
    with _lock:
        pre_spawn = upstream.pre_spawn_environ()
        os.environ.update(pre_spawn)  # as the Nanny does before each worker
        running = upstream.forkserver_pid()
        if _server is not None and running == _server[0]:
            # the server's environment: what it started with, and pre_spawn it set on itself
            added = _added_since(
                upstream.without_parent_marker(dict(os.environ)),
                upstream.without_parent_marker({**_server[1], **pre_spawn}),
            )
            if added is not None:
                _unused_early = False
                return added
            if not _unused_early:
                return None  # it forked workers in another environment: spawn this cluster's
            # started as the runner was built, then the run changed the environment (a hook)
            upstream.stop_forkserver(running)
            _server, running = None, None
        _unused_early = False
        if _server is None and running is None:
            _server = _start_server()
            return {} if _server is not None else None
        return None  # a server this module did not start (unknown environment and modules)


def start_server_early(options: RunnerOptions) -> None:
    """Start the fork server as the runner is built, when its options describe a local cluster
    of processes: it imports while Kedro's session is set up, in the environment the cluster's
    workers are expected to start with (the process's, distributed's ``pre-spawn-environ`` and
    the variables the run sets for its workers: :func:`~kedro_prefect.observe.logs.
    dask_logging_environ`, :func:`~kedro_prefect.workers.logging_line.worker_logging_environ`).
    The cluster forks from it only if that is exactly their environment when it starts
    (:func:`forked_workers`); the process's own environment is left as it was."""
    if not _local_processes(options):
        return
    try:
        from kedro_prefect._upstream import dask_processes as upstream
        from kedro_prefect.observe.logs import dask_logging_environ
        from kedro_prefect.workers.logging_line import worker_logging_environ

        if (
            not upstream.forkserver_available()
            or upstream.configured_start_method(with_defaults=False) != "spawn"
        ):
            return
    except ImportError:  # the [dask] extra is missing: the runner says so itself
        return
    global _server, _unused_early
    with _lock:
        if _server is not None or upstream.forkserver_pid() is not None:
            return
        environ = {
            **upstream.launch_environ(),  # the server sets distributed's pre-spawn-environ
            **dask_logging_environ(),
            **worker_logging_environ(),
        }
        _server = _start_server(environ)
        _unused_early = _server is not None


def _local_processes(options: RunnerOptions) -> bool:
    """Whether the options describe a ``LocalCluster`` of worker processes started by the run.

    Decided without importing Prefect or the cluster class for distributed's own
    ``LocalCluster`` (the default), so that the server starts before this process imports
    Prefect (the two import side by side); another class is imported to see whether it is one.
    Options the task runner refuses start a server that no cluster uses (the run stops before
    any node, saying why; the server ends with the process)."""
    if options.address:
        return False
    from kedro_prefect.config.options import DEFAULT_CLUSTER_CLASS

    # distributed's LocalCluster, the default, by either of its import paths
    if options.cluster_class in (None, DEFAULT_CLUSTER_CLASS, "dask.distributed.LocalCluster"):
        return bool((options.cluster_kwargs or {}).get("processes", True))
    from kedro_prefect.dask.task_runner import local_cluster_spec

    try:
        spec = local_cluster_spec(options)
    except Exception:  # refused: the run says so itself, when it starts
        return False
    return spec is not None and bool(spec[1].get("processes"))


def _start_server(environ: dict[str, str] | None = None) -> tuple[int, dict[str, str]] | None:
    """Start the server with ``environ`` added to this process's environment (for it only)."""
    import multiprocessing.forkserver

    from kedro_prefect._upstream import dask_processes as upstream

    # "__main__": the server imports the process's main module once (a spawned or forked worker
    # imports it to unpickle what it runs, e.g. the `kedro` command), then the workers' code.
    multiprocessing.forkserver.set_forkserver_preload(["__main__", SERVER_PRELOAD])
    before = {name: os.environ.get(name) for name in environ or {}}
    os.environ.update(environ or {})
    try:
        multiprocessing.forkserver.ensure_running()
        pid = upstream.forkserver_pid()
        started = dict(os.environ)
    except OSError:
        return None
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return None if pid is None else (pid, started)
