"""How one node runs: its Prefect task, its options, the task runner, the node-execution protocol.

* :mod:`.protocol`: :class:`~.protocol.NodeExecution`, what the scheduling loop asks of the place
  node tasks run; :mod:`.local` implements it for threads (:mod:`kedro_prefect.dask` for Dask);
* :mod:`.tasks`: the Prefect task built for a node; :mod:`.task_options`: its retries, timeout,
  tags; :mod:`.records`: the engine's record of each task run;
* :mod:`.task_runners`: choosing and building the Prefect task runner;
* :mod:`.cancellation`: Ctrl-C and SIGTERM; :mod:`.redaction`: credentials kept out of Prefect.
"""
