"""Node tasks in worker processes, not the runner's (the ``process`` and ``dask`` backends).

* :mod:`.bootstrap`: the worker side: the project on ``sys.path``, its log levels and hooks in
  the worker process, and :func:`~.bootstrap.run_node_on_worker`, the body of a node task there;
* :mod:`.session`: Kedro's session-level state there: the run's context and catalog, seen by
  the project's hooks (``after_context_created``, ``after_catalog_created``) once per run, and
  the driver's MLflow run active while a node runs;
* :mod:`.transfer`: the driver side: :class:`~.transfer.TransferNodeExecution`, in-memory outputs
  as task results passed to their consumers, and the check of datasets that cannot cross
  processes.
"""
