"""How one node runs: its Prefect task, its options, and the seam to the backends.

* :mod:`.protocol`: :class:`~.protocol.Backend` (where a run's node tasks run, chosen once by
  :func:`kedro_prefect.backends.choose_backend`) and :class:`~.protocol.NodeExecution`, what the
  scheduling loop asks of it; :mod:`.local` implements the latter for threads (shared catalog);
* :mod:`.tasks`: the Prefect task built for a node; :mod:`.task_options`: its retries, timeout,
  tags; :mod:`.records`: the engine's record of each task run; :mod:`.outputs`: a node's
  in-memory outputs as a task result;
* :mod:`.cancellation`: Ctrl-C and SIGTERM; :mod:`.redaction`: credentials kept out of Prefect.
"""
