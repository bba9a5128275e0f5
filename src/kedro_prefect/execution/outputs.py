"""A node's in-memory outputs as a task result: datasets by name, in a box Prefect does not walk.

Prefect walks task parameters and results that are lists, dicts, tuples or models (to find
futures and states); on large data that walk is expensive. Dask still resolves the producer
futures around the box, worker to worker; Prefect's cache persists it as one value
(``skip_unchanged``).
"""

from __future__ import annotations

from typing import Any


class NodeData:
    """In-memory outputs of a node by name (pickled as their plain dict)."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any]):
        self.data = data

    def __getstate__(self) -> dict[str, Any]:
        return self.data

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.data = state
