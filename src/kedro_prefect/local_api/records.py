"""Reading node task runs back from the Prefect API once it has recorded their final state."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

logger = logging.getLogger(__name__)


def read_recorded_task_runs(
    client: SyncPrefectClient, final_states: dict[Any, Any], deadline: float
) -> dict[Any, Any]:
    """The task runs that the API shows in their final state, polling until ``deadline``.

    Task run states reach the API as events, recorded a moment after they happen.

    Args:
        client: A sync Prefect client of the API.
        final_states: Task run id -> the state type it ended in.
        deadline: ``time.monotonic()`` value after which to stop polling.

    Returns:
        Task run id -> task run, for those recorded in their final state by then.
    """
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterId

    recorded: dict[Any, Any] = {}
    while True:
        waiting = [task_run_id for task_run_id in final_states if task_run_id not in recorded]
        for start in range(0, len(waiting), _API_PAGE):  # the API returns 200 at most
            batch = waiting[start : start + _API_PAGE]
            for task_run in client.read_task_runs(
                task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=batch)), limit=_API_PAGE
            ):
                if task_run.state_type == final_states[task_run.id]:
                    recorded[task_run.id] = task_run
        if len(recorded) == len(final_states) or time.monotonic() >= deadline:
            return recorded
        time.sleep(0.025)


def wait_until_recorded(
    api_url: str, final_states: dict[Any, Any], seconds: float
) -> dict[Any, Any]:
    """Wait up to ``seconds`` until the API shows every final state; return those it does not."""
    from prefect.client.orchestration import SyncPrefectClient

    started = time.monotonic()
    with SyncPrefectClient(api_url) as client:
        recorded = read_recorded_task_runs(client, final_states, started + seconds)
    left = {key: value for key, value in final_states.items() if key not in recorded}
    logger.debug(
        "Waited %.2f s for the API to record task run states (%d not recorded)",
        time.monotonic() - started,
        len(left),
    )
    return left


#: The most items the Prefect API returns per request.
_API_PAGE = 200
