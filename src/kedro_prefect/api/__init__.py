"""Which Prefect API a run reports to: the client side.

* :mod:`.health`: the one health check of an API (before a run, before deploying);
* :mod:`.settings`: the API a run reports to (``PREFECT_API_URL``, else the local API of
  :mod:`kedro_prefect.local_api`, started early), the Prefect settings and API client of one run.

The local server itself (launching, lingering, its app) is :mod:`kedro_prefect.local_api`, below
this package.
"""
