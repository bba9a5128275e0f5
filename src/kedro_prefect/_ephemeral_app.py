"""The app served by the ephemeral API process that :mod:`kedro_prefect.prefect_api` launches.

It is Prefect's own server app (``prefect.server.api.server:create_app``, what Prefect's
``SubprocessASGIServer`` serves), with one change, applied only in that process:

Every Prefect task run that has tags asks the API for slots of its ``tag:<tag>`` concurrency
limits. The server reads the limits and then runs an ``UPDATE`` on them in the same transaction,
even when no limit exists (the usual case). On SQLite that turns a read into a write: under a few
concurrent task runs the upgrade fails with ``SQLITE_BUSY_SNAPSHOT``, the API answers 503, and the
client retries after 2 s, then 4 s -- the multi-second stalls between Kedro nodes seen with the
ephemeral API. Here an increment of *no* limits returns at once, which is exactly what the
``UPDATE`` would have returned (0 rows == 0 limits); increments of real limits are unchanged.

Its start-up is cheaper than Prefect's own. Building the app leaves ~420,000 objects tracked by
CPython's collector (Prefect's modules, models and routes), and the allocations trigger four to
six full collections on the way, each traversing all that exist by then; Prefect runs one more
(``gc.collect()``, for a memory saving that FastAPI >= 0.137 no longer allows), and the first
flow run waits for the next. Here the collector is paused while the app is built, the app's
objects are frozen (``gc.freeze``: later collections skip them) and Prefect's collection is
skipped where it frees nothing: on a 2-core machine the server answered after 2.3 s instead of
3.1 s, and its first flow run took 0.03 s instead of 0.22 s. The routers that a run calls are
put first (:func:`_run_routers_first`), which spares the client's first request ~0.2 s.

It also stops itself when the process that launched it is gone (``kill -9`` of ``kedro run``),
instead of running on as an orphan; and when launched before the driver knew whether the run
needs it (:data:`SPECULATIVE_ENV`), it exits with :data:`NOT_NEEDED_EXIT_CODE` before touching the
database if Prefect's settings name an API URL (a profile, ``prefect.toml``).
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from contextlib import asynccontextmanager
from typing import Any

#: Set by :mod:`kedro_prefect.prefect_api`: the process that launched this server.
PARENT_PID_ENV = "KEDRO_PREFECT_EPHEMERAL_PARENT_PID"
#: Set when the server was launched before the driver imported Prefect's settings.
SPECULATIVE_ENV = "KEDRO_PREFECT_EPHEMERAL_SPECULATIVE"
#: Exit code of a speculative launch whose settings name an API URL: no ephemeral API needed.
NOT_NEEDED_EXIT_CODE = 4


def _skip_empty_slot_increments() -> None:
    from prefect.server.models import concurrency_limits_v2

    original = getattr(concurrency_limits_v2, "bulk_increment_active_slots", None)
    if original is None:  # another Prefect version: leave its server as it is
        return
    if getattr(original, "_kedro_prefect_skips_empty", False):
        return

    async def bulk_increment_active_slots(*args: Any, **kwargs: Any) -> bool:
        if not kwargs.get("concurrency_limit_ids", True):
            return True
        return await original(*args, **kwargs)

    bulk_increment_active_slots._kedro_prefect_skips_empty = True  # type: ignore[attr-defined]
    concurrency_limits_v2.bulk_increment_active_slots = bulk_increment_active_slots


def _immediate_sqlite_write_transactions() -> None:
    """Open the server's SQLite transactions with ``BEGIN IMMEDIATE``.

    Prefect opens them ``DEFERRED``: a transaction that reads, then writes after another
    connection committed, fails with ``SQLITE_BUSY_SNAPSHOT`` at once (waiting cannot help), the
    API answers 503 and the client sleeps 2 s, then 4 s. That happens whenever a run starts while
    the server is still recording the previous run's task run states. ``IMMEDIATE`` takes the
    write lock up front, so such a transaction waits its turn (SQLite's busy timeout) instead;
    the fix Prefect's own comment on its SQLite set-up names.
    """
    from prefect.server.database import configurations

    config = getattr(configurations, "AioSqliteConfiguration", None)
    original = getattr(config, "begin_transaction", None)
    if original is None or getattr(original, "_kedro_prefect_immediate", False):
        return

    @asynccontextmanager
    async def begin_transaction(self: Any, session: Any, with_for_update: bool = False) -> Any:
        async with original(self, session, with_for_update=True) as transaction:
            yield transaction

    begin_transaction._kedro_prefect_immediate = True  # type: ignore[attr-defined]
    config.begin_transaction = begin_transaction  # type: ignore[union-attr]


#: The routers of Prefect's API that a pipeline run calls, by attribute of ``prefect.server.api``.
RUN_ROUTERS = (
    "admin",  # the client's version check
    "flows",
    "flow_runs",
    "task_runs",
    "logs",
    "concurrency_limits_v2",  # slots of tag concurrency limits
    "artifacts",
    "events",  # task run states arrive as events
)


def _run_routers_first() -> None:
    """Put the routers a run calls first in Prefect's list of API routers.

    FastAPI (>= 0.137) prepares an included router's routes on the first request that reaches
    it, and a request is matched against the routers in order: the client's first request, its
    version check (``/admin``, the 29th of 30 routers), prepared almost every route, ~0.2 s.
    The routers' prefixes are distinct, so the order decides nothing else.
    """
    from prefect.server import api
    from prefect.server.api import server

    routers = getattr(server, "API_ROUTERS", None)
    first = tuple(getattr(getattr(api, name, None), "router", None) for name in RUN_ROUTERS)
    if not isinstance(routers, tuple) or not all(router in routers for router in first):
        return  # another Prefect version: leave its order as it is
    server.API_ROUTERS = first + tuple(router for router in routers if router not in first)


def _exit_with_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Stop this server (as on Ctrl+C) once the process that launched it is gone.

    The launcher stops the server when it exits normally; this covers the cases where it
    cannot (``kill -9``, a crash), so no orphaned server keeps the port and the database.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="kedro-prefect-parent-watch", daemon=True).start()


def create_app() -> Any:
    """uvicorn factory: Prefect's API app for an ephemeral server (see the module docstring)."""
    if os.environ.get(SPECULATIVE_ENV):
        from prefect.settings import get_current_settings

        if get_current_settings().api.url:
            raise SystemExit(NOT_NEEDED_EXIT_CODE)
    parent = os.environ.get(PARENT_PID_ENV)
    if parent and parent.isdigit():
        _exit_with_parent(int(parent))
    gc.disable()
    try:
        _skip_empty_slot_increments()
        _immediate_sqlite_write_transactions()
        _run_routers_first()
        from prefect.server.api import server

        # `final` deletes the routers' original routes and collects them, which only frees
        # memory where FastAPI copied the routes on include (before 0.137).
        final = getattr(server, "_FASTAPI_COPIES_ROUTES_ON_INCLUDE", True)
        return server.create_app(final=final)
    finally:
        gc.freeze()
        gc.enable()
