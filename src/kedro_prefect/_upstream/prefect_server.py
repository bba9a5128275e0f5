"""Prefect's API server, as the ephemeral API process serves it: four patches and the app.

Imported only in the server process (:mod:`kedro_prefect.local_api.server_app`), never by the
driver. Relies on, and buys:

* ``prefect.server.models.concurrency_limits_v2.bulk_increment_active_slots``: every Prefect
  task run that has tags asks the API for slots of its ``tag:<tag>`` limits; the server reads
  the limits and runs an ``UPDATE`` on them in the same transaction even when none exists. On
  SQLite that turns a read into a write: under a few concurrent task runs the upgrade fails
  with ``SQLITE_BUSY_SNAPSHOT``, the API answers 503 and the client retries after 2 s, then
  4 s -- multi-second stalls between nodes. An increment of *no* limits returns at once here,
  exactly what the ``UPDATE`` would have returned (0 rows == 0 limits).
* ``prefect.server.database.configurations.AioSqliteConfiguration.begin_transaction``: opened
  ``IMMEDIATE`` instead of ``DEFERRED``, so a transaction that reads and then writes waits its
  turn instead of failing with ``SQLITE_BUSY_SNAPSHOT`` (the fix Prefect's own comment names).
* ``prefect.server.api.server.API_ROUTERS``: the routers a run calls are put first. FastAPI
  (>= 0.137) prepares an included router's routes on the first request that reaches it, and
  tries routers in order: the client's version check (``/admin``, the 29th of 30 routers)
  prepared almost every route, ~0.2 s per run.
* ``prefect.server.api.server.create_app(final=...)``: ``final`` deletes the routers' original
  routes and collects them, which only frees memory where FastAPI copied the routes on include
  (before 0.137). With a newer FastAPI the routes are not copied and deleting them breaks every
  request (``'PrefectRouter' object has no attribute 'routes'``): Prefect >= 3.7.5 says which
  with ``_FASTAPI_COPIES_ROUTES_ON_INCLUDE``; older Prefect is told here from FastAPI's version.

* ``prefect.server.api.server.background_worker`` (Prefect >= 3.6): the docket worker that runs
  Prefect's perpetual services and the background tasks of API calls. A local API needs none
  of them (its ephemeral mode runs only the event vacuum there; the tasks follow deleting runs,
  workers and deployments, which runs never call), and the worker polls its in-memory queue
  every 0.1-0.25 s: most of an idle lingering server's CPU. The docket itself stays (the API's
  dependency); nothing consumes it.

* ``prefect.server.database.interface:PrefectDBInterface.run_migrations_upgrade``: every start
  runs Alembic's upgrade, even on a database already at the newest revision, and that imports
  Alembic, Mako, Pygments' lexers and Prefect's 100-odd migration scripts: ~9 MB the lingering
  server keeps for its life. Here a SQLite database whose ``alembic_version`` is the single
  head of the migration scripts shipped with Prefect (read from
  ``prefect/server/database/_migrations/versions/sqlite/``, without Alembic) is left as it is;
  any other database goes through Prefect's upgrade as before.
* ``uvicorn.server:Server.main_loop`` (uvicorn serves the app): it wakes ten times a second to
  see whether it should exit (and once a second refreshes the ``date`` header): the largest
  part of an idle lingering server's CPU. Here it wakes once a second, and at once on the
  signal that stops it (:func:`slow_tick_main_loop`); :func:`request_exit` makes it shut down
  without a signal (hibernation, :mod:`kedro_prefect.local_api.hibernate`).

Each patch leaves Prefect as it is when its target is missing; the contract test says so.
"""

from __future__ import annotations

import asyncio
import signal
from contextlib import asynccontextmanager, closing, suppress
from typing import Any

from kedro_prefect._upstream import Contract, version_at_least

CONTRACTS = (
    Contract(
        "prefect.server.models.concurrency_limits_v2:bulk_increment_active_slots",
        "no write transaction (and no SQLITE_BUSY 503s) for task runs whose tags have no limit",
    ),
    Contract(
        "prefect.server.database.configurations:AioSqliteConfiguration.begin_transaction",
        "IMMEDIATE SQLite transactions: a run starting while the last one is recorded waits",
    ),
    Contract(
        "prefect.server.api.server:API_ROUTERS",
        "the routers a run calls first: ~0.2 s less before the first flow run",
        check=lambda routers: isinstance(routers, tuple),
    ),
    Contract(
        "prefect.server.api.server:create_app",
        "Prefect's own API app, with `final` set only where FastAPI copied the routes",
        check=lambda fn: "final" in __import__("inspect").signature(fn).parameters,
    ),
    Contract(
        "prefect.server.api.server:background_worker",
        "no docket worker polling in the idle local API (it runs no perpetual service)",
        expected=lambda: version_at_least("prefect", 3, 6),
    ),
    Contract(
        "prefect.server.services.base:RunInEphemeralServers.enabled_services",
        "the background services the local API runs, for `kedro prefect api status`",
    ),
    Contract(
        "prefect.server.database.interface:PrefectDBInterface.run_migrations_upgrade",
        "no Alembic import (~9 MB) when the local database is at the newest revision already",
    ),
    Contract(
        "prefect.server.database._migrations",
        "the SQLite migration scripts, read for their newest revision without Alembic",
        check=lambda module: _sqlite_migrations_dir(module) is not None,
    ),
    Contract(
        "uvicorn.server:Server.main_loop",
        "an idle local API that wakes once a second, not ten times (its idle CPU)",
        check=lambda fn: __import__("inspect").iscoroutinefunction(fn),
    ),
    Contract(
        "uvicorn.server:Server.on_tick",
        "the once-a-second work of uvicorn's main loop, done on each slower tick",
    ),
    Contract(
        "uvicorn.config:Config.__init__",
        "serving the socket the launcher bound (`--fd`), which a hibernating server keeps",
        check=lambda fn: "fd" in __import__("inspect").signature(fn).parameters,
    ),
    Contract(
        "uvicorn.server:HANDLED_SIGNALS",
        "the stopping signals that wake the slower main loop at once",
    ),
    Contract(
        "prefect.server.api.server:_FASTAPI_COPIES_ROUTES_ON_INCLUDE",
        "whether `final` frees anything with the installed FastAPI",
        expected=lambda: version_at_least("prefect", 3, 7, 5),
    ),
)


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

    The routers' prefixes are distinct, so the order decides nothing else.
    """
    from prefect.server import api
    from prefect.server.api import server

    routers = getattr(server, "API_ROUTERS", None)
    first = tuple(getattr(getattr(api, name, None), "router", None) for name in RUN_ROUTERS)
    if not isinstance(routers, tuple) or not all(router in routers for router in first):
        return  # another Prefect version: leave its order as it is
    # the routers found above, in another order (typed as a tuple of exactly those routers)
    server.API_ROUTERS = first + tuple(r for r in routers if r not in first)  # type: ignore[assignment]


def fastapi_copies_routes_on_include() -> bool:
    """Whether the installed FastAPI copies a router's routes when it is included (< 0.137)."""
    from prefect.server.api import server

    flag = getattr(server, "_FASTAPI_COPIES_ROUTES_ON_INCLUDE", None)
    if flag is not None:
        return bool(flag)
    return not version_at_least("fastapi", 0, 137)


def _without_background_worker() -> None:
    """Serve the API without the docket worker (see the module docstring)."""
    from prefect.server.api import server

    original = getattr(server, "background_worker", None)
    if original is None or getattr(original, "_kedro_prefect_none", False):
        return  # another Prefect version: leave its server as it is

    @asynccontextmanager
    async def background_worker(*args: Any, **kwargs: Any) -> Any:
        yield

    background_worker._kedro_prefect_none = True  # type: ignore[attr-defined]
    server.background_worker = background_worker


def background_services() -> list[str]:
    """The background services the app built by :func:`build_api_app` runs.

    Prefect's services for ephemeral servers that the settings enable, and the perpetual
    services of its background worker where that worker still runs (no Prefect version here).
    """
    from prefect.server.services.base import RunInEphemeralServers

    names = [service.__name__ for service in RunInEphemeralServers.enabled_services()]
    from prefect.server.api import server

    worker = getattr(server, "background_worker", None)
    if worker is None or getattr(worker, "_kedro_prefect_none", False):
        return names
    try:
        from prefect.server.services.perpetual_services import get_perpetual_services
    except ImportError:  # before the perpetual services
        return names
    names += [
        config.function.__name__
        for config in get_perpetual_services(ephemeral=True)
        if config.enabled_getter()
    ]
    return names


def _sqlite_migrations_dir(package: Any) -> Any:
    """The directory of Prefect's SQLite migration scripts (``None``: not where expected)."""
    from pathlib import Path

    paths = list(getattr(package, "__path__", []))
    if not paths:
        return None
    folder = Path(paths[0]) / "versions" / "sqlite"
    return folder if folder.is_dir() else None


def sqlite_head_revision() -> str | None:
    """The one newest revision of Prefect's SQLite migrations (``None``: not exactly one)."""
    import ast
    import importlib

    folder = _sqlite_migrations_dir(importlib.import_module("prefect.server.database._migrations"))
    if folder is None:
        return None
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in folder.glob("*.py"):
        values: dict[str, Any] = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                name = getattr(node.targets[0], "id", None)
                if name in ("revision", "down_revision"):
                    try:
                        values[name] = ast.literal_eval(node.value)
                    except ValueError:
                        return None
        if isinstance(values.get("revision"), str):
            revisions.add(values["revision"])
        parent = values.get("down_revision")
        parents.update([parent] if isinstance(parent, str) else parent or ())
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def sqlite_database_revisions(connection_url: str) -> set[str] | None:
    """The revisions in a SQLite database's ``alembic_version`` (``None``: no such file/table)."""
    import sqlite3
    from pathlib import Path
    from urllib.parse import quote

    from sqlalchemy.engine import make_url

    url = make_url(connection_url)
    if not url.drivername.startswith("sqlite") or not url.database:
        return None
    path = Path(url.database)
    if url.database == ":memory:" or not path.is_file():
        return None
    try:
        read_only = f"file:{quote(str(path.resolve()))}?mode=ro"
        with closing(sqlite3.connect(read_only, uri=True, timeout=30)) as db:
            return {row[0] for row in db.execute("select version_num from alembic_version")}
    except sqlite3.Error:
        return None


def _skip_migrations_at_head() -> None:
    """Leave a SQLite database at Prefect's newest revision as it is (see the module)."""
    from prefect.server.database import interface

    db_interface = getattr(interface, "PrefectDBInterface", None)
    original = getattr(db_interface, "run_migrations_upgrade", None)
    if original is None or getattr(original, "_kedro_prefect_at_head", False):
        return

    async def run_migrations_upgrade(self: Any) -> None:
        url = str(getattr(getattr(self, "database_config", None), "connection_url", ""))
        head = sqlite_head_revision() if url else None
        if head is not None and sqlite_database_revisions(url) == {head}:
            return
        await original(self)

    run_migrations_upgrade._kedro_prefect_at_head = True  # type: ignore[attr-defined]
    db_interface.run_migrations_upgrade = run_migrations_upgrade  # type: ignore[union-attr]


#: Seconds between the ticks of uvicorn's main loop in the local API (uvicorn: 0.1).
TICK_SECONDS = 1.0


def slow_tick_main_loop() -> None:
    """Make uvicorn's main loop tick every :data:`TICK_SECONDS` in this (server) process.

    Each tick does what uvicorn does once a second (its ``counter % 10 == 0`` work: the
    ``date`` header); a stopping signal (``HANDLED_SIGNALS``) wakes the loop at once, so the
    server stops as fast as before. Called by the app factory: uvicorn calls it before its
    main loop starts.
    """
    from uvicorn import server as uvicorn_server

    server_class = getattr(uvicorn_server, "Server", None)
    original = getattr(server_class, "main_loop", None)
    signals = getattr(uvicorn_server, "HANDLED_SIGNALS", None)
    if original is None or signals is None or not hasattr(server_class, "on_tick"):
        return  # another uvicorn: leave its loop as it is
    if getattr(original, "_kedro_prefect_slow_tick", False):
        return

    async def main_loop(self: Any) -> None:
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        _wake_on_signals(signals, lambda: loop.call_soon_threadsafe(wake.set))
        _EXIT["wake"] = lambda: loop.call_soon_threadsafe(wake.set)
        counter = 0
        should_exit = await self.on_tick(counter)
        while not (should_exit or _EXIT.get("asked")):
            counter = (counter + 10) % 864000  # every tick is uvicorn's once-a-second tick
            with suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), TICK_SECONDS)
            wake.clear()
            should_exit = await self.on_tick(counter)

    main_loop._kedro_prefect_slow_tick = True  # type: ignore[attr-defined]
    server_class.main_loop = main_loop  # type: ignore[union-attr]


#: The running main loop's wake-up, and whether an exit without a signal was asked for.
_EXIT: dict[str, Any] = {}


def request_exit() -> bool:
    """Make uvicorn shut down as on a stop, without a signal (it re-raises a caught one at its
    end, which would kill the process before ``atexit``); ``False``: its main loop is not ours.
    """
    wake = _EXIT.get("wake")
    if wake is None:
        return False
    _EXIT["asked"] = True
    wake()
    return True


def _wake_on_signals(signals: Any, wake: Any) -> None:
    """Chain ``wake`` after the handlers uvicorn installed for its stopping signals."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return  # uvicorn installed none either
    for sig in signals:
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            previous(signum, frame)
            wake()

        signal.signal(sig, handler)


def build_api_app() -> Any:
    """Prefect's API app with the patches above (call with the garbage collector paused)."""
    _skip_empty_slot_increments()
    _immediate_sqlite_write_transactions()
    _run_routers_first()
    _without_background_worker()
    _skip_migrations_at_head()
    slow_tick_main_loop()
    from prefect.server.api import server

    return server.create_app(final=fastapi_copies_routes_on_include())
