"""Running node tasks on a Dask cluster (``task_runner=dask``), driver side and worker side.

What happens, in order:

1. :class:`.backend.DaskBackend` is the run's backend
   (:class:`kedro_prefect.execution.protocol.Backend`). :mod:`.task_runner` builds the Dask task
   runner: a ``distributed.LocalCluster`` of worker processes for the run, or ``address=`` of an
   existing scheduler (checked by :mod:`.network` before any node runs).
2. :class:`.driver.DaskNodeExecution` starts the cluster (one clear error) and checks the
   pipeline's datasets before the first node is submitted (a dataset that cannot cross
   processes is refused, naming it), and registers the project on every worker.
3. Each node runs in :func:`kedro_prefect.workers.bootstrap.run_node_on_worker` on a worker,
   with the project's hooks; in-memory outputs are the task's result and travel worker to
   worker, never through the driver (:mod:`kedro_prefect.workers.transfer`).
   :mod:`.resources` turns ``dask-<RESOURCE>-<n>`` node tags into worker resources.

The engine glue (subclasses of prefect-dask's task runner and future) is in
:mod:`kedro_prefect._upstream.prefect_dask`.
"""
