"""A node's in-memory outputs as a task result: datasets by name, in a box Prefect does not walk.

Prefect walks task parameters and results that are lists, dicts, tuples or models (to find
futures and states); on large data that walk is expensive. Dask still resolves the producer
futures around the box, worker to worker; Prefect's cache persists it as one value
(``skip_unchanged``).
"""

from __future__ import annotations

from typing import Any


class NodeData:
    """In-memory outputs of a node by name (pickled as their plain dict), and what the hooks of
    the worker process gathered while the task ran (``hook_state``, for the driver's hooks:
    :mod:`kedro_prefect.workers.hook_state`)."""

    __slots__ = ("data", "hook_state")

    def __init__(self, data: dict[str, Any], hook_state: Any = None):
        self.data = data
        self.hook_state = hook_state

    def without_data(self) -> NodeData:
        """The box without the outputs: what the driver learns of a task whose data stays on a
        Dask worker."""
        return NodeData({}, self.hook_state)

    def __getstate__(self) -> Any:
        return self.data if self.hook_state is None else (self.data, self.hook_state)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple):
            self.data, self.hook_state = state
        else:
            self.data, self.hook_state = state, None
