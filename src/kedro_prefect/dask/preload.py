"""What each worker process of a local cluster started by a run imports as it starts.

A Dask *preload* module (``LocalCluster(preload=[...])``, passed on to each worker): the worker
imports it while the worker process starts, i.e. while the driver is still setting up the run
(the cluster starts in the background, :mod:`kedro_prefect.dask.early`). Without it each worker
imported Prefect, Kedro and kedro-prefect's worker side only when the project's worker plugin
and then the first node task arrived, with the driver waiting (~2-5 s per worker on a small
machine).

Then, as the ``process`` backend's workers do (:func:`kedro_prefect.backends.process.
settle_worker`), the objects of these imports are left to reference counting
(``gc.freeze``: later collections, and the one at exit, no longer traverse them), and the
process's exit collects once then freezes (:mod:`kedro_prefect.process_exit`): closing the
cluster at the end of the run waited for each worker's exit-time collections.

Nothing here depends on the project: the project's ``src`` goes on ``sys.path`` and its
hooks are built later, by the project's worker plugin and the node tasks.
"""

from __future__ import annotations

import gc
import importlib
import threading

from kedro_prefect.dask.forkserver import WORKER_MODULES
from kedro_prefect.process_exit import collect_then_freeze_at_exit


def _warm_up() -> None:
    """Set this worker up for the run's project (a cluster started early by a run,
    :func:`kedro_prefect.dask.early.warm_up`); whatever fails here fails again, and is
    reported, where the node task needs it."""
    import contextlib
    import json
    import os

    from kedro_prefect.workers.bootstrap import bootstrap_worker, worker_hook_manager

    raw = os.environ.get("KEDRO_PREFECT_DASK_WARM_UP")
    if not raw:
        return
    try:
        plan = json.loads(raw)
        bootstrap_worker(plan["package_name"], plan["source_dir"], plan["log_levels"])
    except Exception:
        return
    for module in plan.get("modules", []):
        try:
            importlib.import_module(module)
        except Exception:  # the node task reports it
            continue
    with contextlib.suppress(Exception):  # the node task reports it
        worker_hook_manager(plan["package_name"])


for _module in WORKER_MODULES:  # already there in a worker forked from the fork server
    importlib.import_module(_module)
# In a thread of its own: outside the frames of the import of this module. Kedro loads the
# project's settings with dynaconf, which calls ``inspect.stack()``, and each importlib frame
# (no source file) makes ``inspect`` look through every module of the process again.
_warming = threading.Thread(target=_warm_up, name="kedro-prefect-warm-up")
_warming.start()
_warming.join()
gc.freeze()
collect_then_freeze_at_exit()
