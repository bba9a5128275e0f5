"""Node tasks in worker processes, not the runner's (the ``process`` and ``dask`` backends).

* :mod:`.bootstrap`: the worker side: the project on ``sys.path``, its log levels and hooks in
  the worker process, and :func:`~.bootstrap.run_node_on_worker`, the body of a node task there;
* :mod:`.transfer`: the driver side: :class:`~.transfer.TransferNodeExecution`, in-memory outputs
  as task results passed to their consumers, and the check of datasets that cannot cross
  processes.
"""
