"""Which Prefect API a run reports to, and the processes and settings behind it.

* :mod:`.health`: the one health check of an API (before a run, before deploying);
* :mod:`.ephemeral`: Prefect's ephemeral API server process (no ``PREFECT_API_URL`` set);
* :mod:`.lingering`: one server per ``PREFECT_HOME``, reused by the next runs until idle;
* :mod:`.launch`: the server process's environment and command line;
* :mod:`.server_app`: the app factory that process serves;
* :mod:`.server_watch`: when that server stops itself;
* :mod:`.settings`: the Prefect settings and API client of one run;
* :mod:`.records`: reading task runs back once the API has recorded them;
* :mod:`.exit`: a quicker interpreter exit once the run is over.

Kept light on import: the ephemeral server process imports this package.
"""
