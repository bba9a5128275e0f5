"""kedro-viz: its dataset statistics hook, gathered on the workers, written by the driver.

Relies on:

* ``DatasetStatsHook._stats`` (kedro-viz's ``kedro-dataset-stats`` hook): the statistics
  (rows, columns, file size) by dataset name that its ``after_dataset_loaded`` and
  ``after_dataset_saved`` gather, and that its ``after_pipeline_run`` writes to
  ``.viz/stats.json``. The dataset hooks fire where the node runs (a worker process for
  ``process`` and ``dask``), ``after_pipeline_run`` once in the driver: the statistics a worker's
  hook gathered for a task's nodes travel back with the task's result and join the driver's
  hook's ``_stats`` (:mod:`kedro_prefect.workers.hook_state`), so the file holds what it holds
  after a ``SequentialRunner`` run. ``get_stats_dataset_name`` (public) names the entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kedro_prefect._upstream import Contract, installed_version

#: The class this module adapts, by module and name (kedro-viz is not imported to find it).
HOOK_CLASS = ("kedro_viz.integrations.kedro.hooks", "DatasetStatsHook")

CONTRACTS = (
    Contract(
        "kedro_viz.integrations.kedro.hooks:DatasetStatsHook",
        "the statistics kedro-viz's hook gathers on the workers join the driver's hook, which "
        "writes .viz/stats.json after a process or Dask run as after a SequentialRunner run",
        expected=lambda: bool(installed_version("kedro-viz")),
        check=lambda cls: (
            isinstance(getattr(cls(), "_stats", None), dict)
            and callable(getattr(cls, "get_stats_dataset_name", None))
        ),
    ),
)


def hook_state_adapter(hook: Any) -> DatasetStats | None:
    """The carrier of ``hook``'s state if it is kedro-viz's dataset statistics hook."""
    kind = type(hook)
    if (kind.__module__, kind.__qualname__) != HOOK_CLASS or not hasattr(hook, "_stats"):
        return None
    return DatasetStats(hook)


class DatasetStats:  # implements workers.hook_state.HookStateCarrier
    """kedro-viz's statistics of the datasets a task's nodes loaded and saved."""

    def __init__(self, hook: Any):
        self._hook = hook

    def state_for_workers(self) -> None:
        return None

    def use_driver_state(self, state: Any) -> None:
        return None

    def state_for_driver(self, nodes: Sequence[Any]) -> dict[str, dict[str, Any]] | None:
        stats = self._hook._stats
        names = {
            self._hook.get_stats_dataset_name(name)
            for node in nodes
            for name in (*node.inputs, *node.outputs)
        }
        # Taken out: the worker's hook lives on after this run (other runs, other projects).
        taken = {name: dict(stats.pop(name)) for name in sorted(names) if name in stats}
        return taken or None

    def merge_worker_state(self, state: dict[str, dict[str, Any]]) -> None:
        stats = self._hook._stats
        for name, values in state.items():
            stats.setdefault(name, {}).update(values)
