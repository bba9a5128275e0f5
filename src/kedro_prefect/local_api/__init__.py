"""The local API: Prefect's API server on this machine, for runs with no ``PREFECT_API_URL``.

Its own subsystem: the server process it launches imports this subpackage, and nothing else of
kedro-prefect but :mod:`kedro_prefect.errors` and :mod:`kedro_prefect._upstream` (the server app
and its patches).

* :mod:`.ephemeral`: :class:`EphemeralAPI`, the server a process uses, in one :class:`Mode`
  (started by this run, launched speculatively before Prefect is imported, or adopted);
* :mod:`.launch`: the server process's environment, command line and health check;
* :mod:`.lingering`: one server per ``PREFECT_HOME``, reused by the next runs until idle, and
  the fingerprint that decides whether a run may reuse it;
* :mod:`.state`: the files under ``PREFECT_HOME/kedro-prefect-api`` (lock, ``server.json``,
  clients, pending records);
* :mod:`.server_app`: the app factory the server process serves (``python -m uvicorn``);
* :mod:`.server_watch`: when that server stops itself;
* :mod:`.log_spool`: log lines handed to the server as files;
* :mod:`.records`: reading task runs back once the API has recorded them (the server process
  does too, for the states runs left it).

The names below are what the rest of the package (and its tests) may use; the modules' other
names are this subpackage's own. Kept light on import: no Prefect, no Kedro.
"""

from __future__ import annotations

from kedro_prefect.local_api.ephemeral import EPHEMERAL_API, EphemeralAPI, Mode
from kedro_prefect.local_api.hibernate import HIBERNATE_ENV, hibernate_seconds
from kedro_prefect.local_api.launch import LOG_FILE_NAME, drain_prefect_workers
from kedro_prefect.local_api.lingering import (
    DEFAULT_IDLE_SECONDS,
    IDLE_ENV,
    SERVER_MODULES,
    fingerprint,
    idle_seconds,
    server_code_files,
    server_status,
    stop_server,
)
from kedro_prefect.local_api.log_spool import (
    flush_node_lines,
    hand_logs_to_server,
    spool_call,
    spool_node_line,
    spooled,
    spooled_request,
    stop_handing_logs,
    write_batch,
)
from kedro_prefect.local_api.records import read_recorded_task_runs
from kedro_prefect.local_api.state import APP_FACTORY, StateDir, pid_alive, try_lock_file

__all__ = [
    "APP_FACTORY",
    "DEFAULT_IDLE_SECONDS",
    "EPHEMERAL_API",
    "HIBERNATE_ENV",
    "IDLE_ENV",
    "LOG_FILE_NAME",
    "SERVER_MODULES",
    "EphemeralAPI",
    "Mode",
    "StateDir",
    "drain_prefect_workers",
    "fingerprint",
    "flush_node_lines",
    "hand_logs_to_server",
    "hibernate_seconds",
    "idle_seconds",
    "pid_alive",
    "read_recorded_task_runs",
    "server_code_files",
    "server_status",
    "spool_call",
    "spool_node_line",
    "spooled",
    "spooled_request",
    "stop_handing_logs",
    "stop_server",
    "try_lock_file",
    "write_batch",
]
