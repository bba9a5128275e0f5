"""Pipelines, datasets and a hook recorder used to compare PrefectRunner with SequentialRunner.

Node functions live at module level so that they can be pickled (Dask, ParallelRunner).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.io import AbstractDataset, DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node

# --- node functions -----------------------------------------------------------------------------


def identity(x):
    return x


def add_one(x):
    return x + 1


def double(x):
    return x * 2


def total(*xs):
    return sum(xs)


def split(x):
    return x, -x


def boom(x):
    raise ValueError(f"boom on {x}")


def sleepy(x, seconds=0.0):
    time.sleep(seconds)
    return x


def slow(x):
    time.sleep(1.5)
    return x


#: Set by the last node of the fast branch; the slow node blocks until then.
FAST_BRANCH_DONE = threading.Event()


def wait_for_fast_branch(x):
    """Blocks until the fast branch has finished: a runner with layer barriers never gets there."""
    if not FAST_BRANCH_DONE.wait(timeout=90):
        raise TimeoutError("the fast branch was held back behind the slow node")
    return x


def finish_fast_branch(x):
    FAST_BRANCH_DONE.set()
    return x + 1


def chunks(x):
    for i in range(3):
        yield x + i, i


def flaky_counter(x):
    return x


# --- datasets -----------------------------------------------------------------------------------


class EventLog:
    """A thread-safe, ordered log of (event, node or dataset name, detail) tuples."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[str, str, Any]] = []

    def add(self, event: str, name: str, detail: Any = None) -> None:
        with self._lock:
            self.events.append((event, name, detail))

    def per_node(self) -> dict[str, list[tuple[str, Any]]]:
        grouped: dict[str, list[tuple[str, Any]]] = defaultdict(list)
        for event, name, detail in self.events:
            if event.startswith(("before_", "after_", "on_")):
                grouped[name].append((event, detail))
        return dict(grouped)

    def index(self, event: str, name: str) -> int:
        for i, (e, n, _) in enumerate(self.events):
            if e == event and n == name:
                return i
        raise KeyError((event, name))

    def names(self, event: str) -> list[str]:
        return [n for e, n, _ in self.events if e == event]


class TrackedMemoryDataset(MemoryDataset):
    """A MemoryDataset that logs when the runner releases it."""

    def __init__(self, name: str, log: EventLog, data: Any = None):
        super().__init__(data=data) if data is not None else super().__init__()
        self._name = name
        self._log = log

    def _release(self) -> None:
        self._log.add("release", self._name)
        super()._release()


class ConfirmableDataset(MemoryDataset):
    """A MemoryDataset with a ``confirm`` method, like IncrementalDataset's checkpoint."""

    def __init__(self, name: str, log: EventLog):
        super().__init__()
        self._name = name
        self._log = log

    def _confirm(self) -> None:
        self._log.add("confirm", self._name)

    def confirm(self) -> None:
        self._confirm()


class TextFileDataset(AbstractDataset):
    """A persisted dataset: an integer in a text file."""

    def __init__(self, filepath: str):
        self._path = Path(filepath)

    def load(self) -> int:
        return int(self._path.read_text())

    def save(self, data: int) -> None:
        self._path.write_text(str(data))

    def _exists(self) -> bool:
        return self._path.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._path)}


# --- hooks --------------------------------------------------------------------------------------


class RecordingHooks:
    """Records every node and dataset hook call, with the node's name and a timestamp."""

    def __init__(self, log: EventLog):
        self.log = log
        self.times: dict[tuple[str, str], float] = {}

    def _add(self, event: str, node: Any, detail: Any = None) -> None:
        self.log.add(event, node.name, detail)
        self.times[(event, node.name)] = time.perf_counter()

    @hook_impl
    def before_node_run(self, node, inputs, is_async):
        self._add("before_node_run", node, (tuple(sorted(inputs)), is_async))

    @hook_impl
    def after_node_run(self, node, outputs, is_async):
        self._add("after_node_run", node, (tuple(sorted(outputs)), is_async))

    @hook_impl
    def on_node_error(self, error, node):
        self._add("on_node_error", node, repr(error))

    @hook_impl
    def before_dataset_loaded(self, dataset_name, node):
        self._add("before_dataset_loaded", node, dataset_name)

    @hook_impl
    def after_dataset_loaded(self, dataset_name, node):
        self._add("after_dataset_loaded", node, dataset_name)

    @hook_impl
    def before_dataset_saved(self, dataset_name, node):
        self._add("before_dataset_saved", node, dataset_name)

    @hook_impl
    def after_dataset_saved(self, dataset_name, node):
        self._add("after_dataset_saved", node, dataset_name)


def hook_manager_with(hooks: RecordingHooks):
    manager = _create_hook_manager()
    manager.register(hooks)
    return manager


# --- pipelines ----------------------------------------------------------------------------------


def fan_out_fan_in() -> Pipeline:
    return Pipeline(
        [
            node(add_one, "source", "base", name="prepare"),
            node(double, "base", "left", name="left"),
            node(add_one, "base", "middle", name="middle"),
            node(split, "base", ["right", "mirror"], name="right"),
            node(total, ["left", "middle", "right", "mirror"], "summed", name="gather"),
        ]
    )


def branchless() -> Pipeline:
    return Pipeline(
        [
            node(add_one, "source", "b", name="n1"),
            node(double, "b", "c", name="n2"),
            node(add_one, "c", "d", name="n3"),
            node(double, "d", "e", name="n4"),
        ]
    )


def namespaced() -> Pipeline:
    inner = Pipeline(
        [
            node(add_one, "x", "y", name="inc", tags=["light"]),
            node(double, "y", "z", name="dbl"),
        ]
    )
    return Pipeline(
        [
            Pipeline(inner, namespace="alpha", inputs={"x": "source"}),
            Pipeline(inner, namespace="beta", inputs={"x": "source"}),
            node(total, ["alpha.z", "beta.z"], "both", name="join"),
        ]
    )


def namespaced_broad_pipeline(width: int = 6) -> Pipeline:
    """``width`` namespaces of three chained steps side by side, fed by one dataset and joined
    (the shape of per-region or per-model modular pipelines): 3 * width + 1 nodes."""
    parts = [
        Pipeline(
            [
                node(identity, "raw", "cleaned", name="clean_input_table"),
                node(identity, "cleaned", "features", name="build_features"),
                node(identity, "features", "summary", name="summarize_results"),
            ],
            namespace=f"market_{k}",
            inputs={"raw"},
        )
        for k in range(width)
    ]
    summaries = [f"market_{k}.summary" for k in range(width)]
    return sum(parts, Pipeline([node(total, summaries, "report", name="combine_markets")]))


def generator() -> Pipeline:
    return Pipeline(
        [
            node(chunks, "source", ["chunked", "count"], name="gen"),
            node(add_one, "chunked", "after_gen", name="consume"),
        ]
    )


def make_catalog(pipeline: Pipeline, log: EventLog, source: Any = 1) -> DataCatalog:
    """Every dataset tracked, so releases show up in the log; ``source`` is the only input."""
    datasets: dict[str, Any] = {}
    for name in pipeline.datasets():
        if name == "source":
            datasets[name] = TrackedMemoryDataset(name, log, data=source)
        else:
            datasets[name] = TrackedMemoryDataset(name, log)
    return DataCatalog(datasets)
