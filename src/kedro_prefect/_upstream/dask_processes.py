"""distributed's worker processes: how a Nanny starts them, and Python's fork server.

Relies on, and buys (:mod:`kedro_prefect.dask.forkserver`: a local cluster's workers forked
from a server process that has already imported Dask, Prefect and Kedro, instead of each
spawned worker importing them, ~1.5-2 CPU-s per worker on a small machine):

* ``distributed.utils.get_mp_context``: the multiprocessing context a Nanny starts its worker
  process with, read from the ``distributed.worker.multiprocessing-method`` setting each time a
  worker starts (set for the run, :func:`use_start_method`). On its first ``forkserver`` use it
  imports Dask's required and optional packages (numpy, pandas...) in the calling process to
  build the fork server's preload list, and sets ``_forkserver_preload_set``;
  :func:`mark_forkserver_preload_set` sets that flag first, so that the driver does not import
  them (the server does, :func:`distributed_packages` names them without importing them).
* ``distributed.nanny._get_env_variables``: the ``distributed.nanny.pre-spawn-environ``
  variables (``OMP_NUM_THREADS``, ``MALLOC_TRIM_THRESHOLD_``...) a Nanny sets in its own
  process before starting a worker, for the worker to start with them. A forked worker starts
  with the fork server's environment instead: :func:`pre_spawn_environ` is what the Nanny would
  set, which the server is started with (as are its workers).
* ``distributed.proctitle.enable_proctitle_on_children``: distributed marks a process that
  starts workers with a variable holding its PID (``__DASK_PARENT_PID``; ``DASK_PARENT`` before
  2024), for its children's process titles. It is no part of the environment the workers need,
  and it appears in the process with its first cluster: :func:`without_parent_marker` leaves it
  out when a later cluster compares its environment with the fork server's.
* ``multiprocessing.forkserver._forkserver._forkserver_pid``: whether the process's fork server
  is already running (a server kedro-prefect did not start, or one that was restarted, is not
  used: its environment and preloaded modules are unknown), and ``ForkServer._stop``: ends it
  (it closes the server's "alive" pipe, waits for it and removes its socket), so that a server
  started as the runner was built, in an environment the run then changed (a project hook
  setting a variable), is replaced by one in the run's environment (:func:`stop_forkserver`).
"""

from __future__ import annotations

import importlib.util
import inspect
import multiprocessing
import os
from typing import Any

from kedro_prefect._upstream import Contract, version_at_least

METHOD_KEY = "distributed.worker.multiprocessing-method"
#: What distributed sets in a process that starts workers (see the module's docstring).
PARENT_MARKERS = ("__DASK_PARENT_PID", "DASK_PARENT")


def _reads_the_method(fn: Any) -> bool:
    return "multiprocessing-method" in inspect.getsource(fn)


def _has_server_pid(server: Any) -> bool:
    return hasattr(server, "_forkserver_pid")


CONTRACTS = (
    Contract(
        "distributed.utils:get_mp_context",
        "start each worker process with the start method configured at that moment (forkserver)",
        check=_reads_the_method,
    ),
    Contract(
        "distributed.utils:_forkserver_preload_set",
        "keep distributed from importing numpy/pandas in the driver on its first forkserver use",
        check=lambda value: isinstance(value, bool),
    ),
    Contract(
        "distributed.versions:required_packages",
        "the packages distributed preloads in its fork server, preloaded in ours",
    ),
    Contract(
        "distributed.nanny:_get_env_variables",
        "the pre-spawn environment a Nanny gives its workers, given to the fork server",
        check=lambda fn: list(inspect.signature(fn).parameters) == ["config_key"],
    ),
    Contract(
        "distributed.proctitle:enable_proctitle_on_children",
        "reuse the fork server for a later cluster in the same process (a notebook, a script)",
        check=lambda fn: any(name in inspect.getsource(fn) for name in PARENT_MARKERS),
    ),
    Contract(
        "multiprocessing.forkserver:_forkserver",
        "_forkserver_pid: whether the process's fork server is already running",
        check=_has_server_pid,
    ),
    Contract(
        "multiprocessing.forkserver:ForkServer._stop",
        "replace a fork server started before the run changed its environment",
        check=lambda fn: list(inspect.signature(fn).parameters) == ["self"],
    ),
)


def without_parent_marker(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` without distributed's mark of a process that starts workers."""
    return {name: value for name, value in environ.items() if name not in PARENT_MARKERS}


def forkserver_available() -> bool:
    """Whether this platform has the ``forkserver`` start method (not on Windows)."""
    return "forkserver" in multiprocessing.get_all_start_methods()


def configured_start_method(with_defaults: bool = True) -> str:
    """The start method distributed would use for worker processes (``spawn`` by default).

    ``with_defaults=False``: read from the user's Dask configuration only, without importing
    distributed (whose own default is ``spawn``)."""
    import dask

    if with_defaults:
        import distributed  # noqa: F401  (registers distributed's defaults with dask.config)

    return str(dask.config.get(METHOD_KEY, default="spawn"))


def use_start_method(method: str) -> Any:
    """A context manager: distributed starts worker processes with ``method`` within it."""
    import dask

    return dask.config.set({METHOD_KEY: method})


def mark_forkserver_preload_set() -> None:
    """Tell distributed the fork server's preload list is set (ours, see module docstring)."""
    import distributed.utils

    distributed.utils._forkserver_preload_set = True


def distributed_packages() -> list[str]:
    """What distributed preloads in a fork server: itself and its required and optional
    packages that are installed (found, not imported)."""
    from distributed.versions import optional_packages, required_packages

    found = ["distributed"]
    for package in [*required_packages, *optional_packages]:
        name = package[0] if isinstance(package, tuple) else package  # (name, version getter)
        try:
            if importlib.util.find_spec(name) is not None:
                found.append(name)
        except (ImportError, ValueError):
            continue
    return found


def launch_environ() -> dict[str, str]:
    """What of :func:`pre_spawn_environ` a fork server must be started with, known without
    importing distributed: the workers' hash seed (distributed >= 2024.1), fixed as an
    interpreter starts. The server sets the rest on itself (:mod:`kedro_prefect.dask.
    fork_parent`); a cluster forks from it only if the result is its Nanny's environment."""
    if version_at_least("distributed", 2024, 1) and os.environ.get("PYTHONHASHSEED") in (
        None,
        "0",
    ):
        return {"PYTHONHASHSEED": "6640"}
    return {}


def pre_spawn_environ() -> dict[str, str]:
    """The variables a Nanny sets in its process before it starts a worker process."""
    from distributed.nanny import Nanny, _get_env_variables

    env = _get_env_variables("distributed.nanny.pre-spawn-environ")
    # distributed >= 2024.1 also fixes the workers' hash seed (consistent hashing across them)
    if "PYTHONHASHSEED" in inspect.getsource(Nanny.__init__) and env.get("PYTHONHASHSEED") in (
        None,
        "0",
    ):
        env["PYTHONHASHSEED"] = "6640"
    return env


def forkserver_pid() -> int | None:
    """The PID of this process's fork server, ``None`` if it is not running (yet)."""
    import multiprocessing.forkserver

    pid: int | None = getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)
    return pid


def stop_forkserver(pid: int) -> None:
    """End this process's fork server (``pid``: it has forked no worker): killed at once rather
    than waited for (it only reads its "alive" pipe once its imports are done)."""
    import contextlib
    import multiprocessing.forkserver
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]
