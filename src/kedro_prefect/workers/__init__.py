"""Node tasks in worker processes (not the runner's): what a worker process sets up for a Kedro
project and how a node runs there.

* :mod:`.bootstrap`: the project on ``sys.path``, its log levels and hooks in the worker process,
  and :func:`~.bootstrap.run_node_on_worker`, the body of a node task there.
* :mod:`.session`: Kedro's session-level state there: the run's context and catalog, seen by
  the project's hooks (``after_context_created``, ``after_catalog_created``) once per run.
"""
