"""Node task runs ask the Prefect API for concurrency slots only for tags that have a limit."""

from __future__ import annotations

import pytest
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline, node

from kedro_prefect import PrefectRunner
from kedro_prefect.local_api import EPHEMERAL_API


def _one(x=None):
    return 1


@pytest.fixture
def slot_requests(monkeypatch):
    """The limit names of every slot request Prefect's task engine sends to the API."""
    from prefect.concurrency import _sync

    requested: list[list[str]] = []
    original = _sync.acquire_concurrency_slots_with_lease

    def recording(names, *args, **kwargs):
        requested.append(sorted(names))
        return original(names, *args, **kwargs)

    monkeypatch.setattr(_sync, "acquire_concurrency_slots_with_lease", recording)
    return requested


def _create_limit(name: str, limit: int) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from kedro_prefect._upstream.prefect import upsert_global_concurrency_limit

    with temporary_settings({PREFECT_API_URL: EPHEMERAL_API.wait()}):
        with get_client(sync_client=True) as client:
            upsert_global_concurrency_limit(client, name, limit)


def test_only_tags_with_a_limit_ask_for_slots(slot_requests):
    _create_limit("tag:kp-limited", 5)
    pipeline = Pipeline(
        [
            node(_one, None, "a", name="limited_and_free", tags=["kp-limited", "kp-free"]),
            node(_one, "a", "b", name="free_only", tags=["kp-free"]),
            node(_one, "b", "c", name="in_namespace", namespace="kp_space"),
        ]
    )
    outputs = PrefectRunner().run(pipeline, DataCatalog())

    assert list(outputs) == ["c"]
    # One request, for the one tag that has a limit; none for the two nodes without one.
    assert slot_requests == [["tag:kp-limited"]]


def test_prefect_code_outside_a_run_is_unchanged(slot_requests):
    """Other Prefect flows in the same process still ask for every tag, as Prefect does."""
    from prefect import flow, task
    from prefect.settings import PREFECT_API_URL, temporary_settings

    @task(tags=["kp-untouched"], persist_result=False)
    def tagged():
        return 1

    @flow(persist_result=False)
    def plain_flow():
        return tagged()

    PrefectRunner(flow_name="kp-slots").run(Pipeline([node(_one, None, "x")]), DataCatalog())
    with temporary_settings({PREFECT_API_URL: EPHEMERAL_API.wait()}):
        assert plain_flow() == 1
    assert slot_requests == [["tag:kp-untouched"]]


@pytest.mark.parametrize("limited", [frozenset({"tag:kp-limited"}), None])
def test_a_node_task_in_a_worker_process_asks_for_the_runs_limited_tags(slot_requests, limited):
    """What a Dask worker or a worker process runs for a node task: the driver hands it the
    run's limited tags, and it asks for their slots only (``None``: every tag, as Prefect)."""
    from prefect import task
    from prefect.context import serialize_context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from kedro_prefect._upstream.prefect_tasks import run_task_with_worker_caches

    @task(tags=["kp-limited", "kp-free"], persist_result=False)
    def tagged():
        return 1

    _create_limit("tag:kp-limited", 5)
    with temporary_settings({PREFECT_API_URL: EPHEMERAL_API.wait()}):
        context = serialize_context()
        state = run_task_with_worker_caches(
            context, None, {"task": tagged, "return_type": "state"}, limited
        )
    assert state.is_completed()
    expected = ["tag:kp-limited"] if limited else ["tag:kp-free", "tag:kp-limited"]
    assert slot_requests == [expected]
