"""Node task runs ask Prefect for concurrency slots only for tags that have a limit.

Before a tagged task run starts, Prefect's task engine asks the API for a slot of every
``tag:<tag>`` concurrency limit of the run's tags, limit or no limit. Kedro node tasks are all
tagged (namespace and node tags), so that is one extra request per node; and on a server backed
by SQLite, the server's bookkeeping for *no* limits still opens a write transaction, which under
a few concurrent task runs fails with ``SQLITE_BUSY`` and a 503: the client retries after 2 s,
then 4 s, and nodes sit Pending for seconds.

During a PrefectRunner run, the task engine's request names only the tags that had a limit
when the run started (:func:`kedro_prefect.task_options.apply_concurrency_limits` reads them);
a node whose tags have no limit makes no request. Limits are enforced exactly as before for
tags that have one; a limit created while a run is going applies from the next run.

Applied to node tasks in the runner's process (the thread task runner). Outside a run, and in
other Prefect code of the same process, the task engine is unchanged.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

#: Names of the ``tag:<tag>`` limits that exist for the run in this context; None outside runs.
_LIMITED: ContextVar[frozenset[str] | None] = ContextVar("kedro_prefect_tag_limits", default=None)
_install_lock = threading.Lock()


@contextlib.contextmanager
def slots_only_for_limited_tags(limited: frozenset[str]) -> Iterator[None]:
    """In this context, task runs ask for slots of the ``limited`` tag limits only."""
    if not _install():
        yield
        return
    token = _LIMITED.set(limited)
    try:
        yield
    finally:
        _LIMITED.reset(token)


def _install() -> bool:
    """Wrap the task engine's ``concurrency`` (once); False if this Prefect has none."""
    from prefect import task_engine

    with _install_lock:
        original = getattr(task_engine, "_concurrency", None)
        if original is None:
            return False
        if getattr(original, "_kedro_prefect_filters_tags", False):
            return True

        def concurrency(names: Any, *args: Any, **kwargs: Any) -> Any:
            limited = _LIMITED.get()
            if limited is not None and isinstance(names, list):
                names = [name for name in names if name in limited]
            return original(names, *args, **kwargs)

        concurrency._kedro_prefect_filters_tags = True  # type: ignore[attr-defined]
        task_engine._concurrency = concurrency
        return True
