"""What a run costs in Prefect API clients and requests (counts, not timings)."""

from __future__ import annotations

import pytest
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline, node

from kedro_prefect import PrefectRunner


def _one(x=None):
    return 1


@pytest.fixture
def client_calls(monkeypatch):
    """Sync API clients opened, and reads of the server's default result storage."""
    from prefect.client.orchestration import SyncPrefectClient

    calls = {"clients": 0, "default_storage_reads": 0}
    init = SyncPrefectClient.__init__
    # Prefect < 3.7.0 has no server-side default result storage: nothing to count there.
    read = getattr(SyncPrefectClient, "read_server_default_result_storage", None)

    def counting_init(self, *args, **kwargs):
        calls["clients"] += 1
        init(self, *args, **kwargs)

    def counting_read(self, *args, **kwargs):
        calls["default_storage_reads"] += 1
        return read(self, *args, **kwargs)

    monkeypatch.setattr(SyncPrefectClient, "__init__", counting_init)
    if read is not None:
        monkeypatch.setattr(SyncPrefectClient, "read_server_default_result_storage", counting_read)
    return calls


def test_a_run_uses_one_api_client_and_never_reads_the_default_result_storage(client_calls):
    # Each client Prefect opens loads CA certificates (~30 ms); the flow engine, the tag
    # concurrency limits, the artifacts and every node task share the run's client. The run
    # persists nothing, so the server's default result storage is never looked up.
    pipeline = Pipeline(
        [node(_one, None, "a", name="first")]
        + [node(_one, "a", f"b{i}", name=f"second_{i}", tags=["kp-tag"]) for i in range(4)]
    )
    outputs = PrefectRunner().run(pipeline, DataCatalog())

    assert sorted(outputs) == [f"b{i}" for i in range(4)]
    assert client_calls == {"clients": 1, "default_storage_reads": 0}
