"""Whether a node was skipped by ``skip_unchanged``: the one answer, for the scheduling loop,
the run's record and the cache itself (imports nothing, so anything may ask)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.client.schemas.objects import State

#: The Prefect state name of a task run whose result came from the cache.
CACHED = "Cached"


def is_skipped(state: State[Any] | None) -> bool:
    """Whether a node's final state is a cache hit (the node was skipped)."""
    return state is not None and state.is_completed() and state.name == CACHED
