"""Choosing the task runner: what a user sees when the Dask extra is missing."""

import sys

import pytest

from kedro_prefect import PrefectRunner, PrefectRunnerConfigError


def test_dask_without_the_extra_names_the_packages_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "prefect_dask", None)  # import prefect_dask -> ImportError
    with pytest.raises(
        PrefectRunnerConfigError,
        match=r"pip install 'prefect-dask>=0.3.6' 'dask\[distributed\]>=2023.9.2'",
    ):
        PrefectRunner(task_runner="dask")
