"""What the fork server of a local cluster's workers imports (:mod:`.forkserver`).

Imported once, in the server process, before it forks any worker: Dask's packages (what
distributed preloads in a fork server of its own), then what every node task needs
(:data:`~kedro_prefect.dask.forkserver.WORKER_MODULES`). A module that fails to import here is
imported again, and its error reported, where a worker needs it; nothing may raise here (an
exception would end the server, and every worker start with it).

Nothing of the project: its modules and hooks are imported by each worker (:mod:`.preload`).
Done once here rather than in each worker, as a spawned worker would do it first thing:

* Prefect's logging set up, keeping Kedro's (``keep_project_logging_in_worker``: the
  server's environment names the workers' logging configuration);
* ``inspect``'s map of module files, which Kedro's loading of a project's settings fills
  (dynaconf calls ``inspect.stack()``): mapping the thousands of modules imported here to their
  files takes ~0.3-1 s the first time in a process.

The objects of these imports are frozen (``gc.freeze``): the forked workers share their memory
pages with the server instead of copying them on the first collection.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import os


def _import_for_workers() -> None:
    try:
        from kedro_prefect._upstream.dask_processes import distributed_packages
        from kedro_prefect.dask.forkserver import WORKER_MODULES

        modules = [*distributed_packages(), *WORKER_MODULES]
    except Exception:
        return
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # imported again, and reported, where a worker needs it
            continue
    try:  # what a Nanny sets before starting a worker (the server started without it)
        from kedro_prefect._upstream.dask_processes import pre_spawn_environ

        os.environ.update(pre_spawn_environ())
    except Exception:  # then the cluster finds the environment changed, and spawns
        pass
    try:
        from kedro_prefect.observe.logs import keep_project_logging_in_worker

        keep_project_logging_in_worker()
    except Exception:  # done again, and reported, in each worker
        pass
    inspect.getmodule(inspect.currentframe())  # maps every module imported so far to its file


_import_for_workers()
gc.freeze()
