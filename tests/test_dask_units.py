"""Dask helpers that need no cluster: resource tags, the remote-scheduler/local-API refusal."""

from __future__ import annotations

import pytest

from kedro_prefect import PrefectRunnerConfigError
from kedro_prefect.dask.network import check_api_reachable_from
from kedro_prefect.dask.resources import node_resources


def test_resource_tags_become_dask_resources_and_other_tags_are_ignored():
    tags = {"dask-GPU-1", "dask-memory-4e9", "dask-fpga_big-0.5", "training", "dask"}
    assert node_resources(tags) == {"GPU": 1.0, "memory": 4e9, "fpga_big": 0.5}


@pytest.mark.parametrize("tag", ["dask-GPU", "dask-GPU-many", "dask--1"])
def test_malformed_resource_tag_names_the_tag_and_the_form(tag):
    with pytest.raises(PrefectRunnerConfigError, match="dask-<resource>-<amount>") as error:
        node_resources({tag})
    assert repr(tag) in str(error.value)


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:8786", "localhost:8786", "tcp://[::1]:8786"])
def test_local_scheduler_is_fine_with_a_loopback_api(address):
    check_api_reachable_from(address, "http://127.0.0.1:4200/api")


def test_remote_scheduler_is_fine_with_a_reachable_api():
    check_api_reachable_from("tcp://192.0.2.10:8786", "http://192.0.2.1:4200/api")


def test_remote_scheduler_with_a_loopback_api_is_refused_with_the_fix():
    with pytest.raises(PrefectRunnerConfigError) as error:
        check_api_reachable_from("tcp://192.0.2.10:8786", "http://127.0.0.1:4200/api")
    message = str(error.value)
    assert "192.0.2.10" in message
    assert "http://127.0.0.1:4200/api" in message
    assert "PREFECT_API_URL" in message
