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
