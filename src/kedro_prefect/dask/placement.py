"""Where a node task runs on the Dask cluster: a free worker slot first, locality second.

Dask's own placement is tuned for many tiny tasks: a task with dependencies goes to the workers
that already hold its inputs, and work stealing moves queued tasks later, a few at a time. A
Kedro pipeline is the opposite (few, long nodes), and its most common shape, a fan-out of one
node into several branches, would then queue every branch on the producer's worker.

:class:`Placement` decides with what the runner knows when a node becomes ready:

1. a node asking for worker resources (``dask-<RESOURCE>-<n>`` tags) is left to Dask;
2. if a worker has a free thread (not counting the tiny completion tasks), the node goes to a
   free worker, preferring one that already holds its largest input, then the least loaded;
   its inputs then move worker to worker, never through the driver;
3. if no worker is free, a node with in-memory inputs queues on one of the least busy workers
   (preferring a holder of its largest input), so the branches of a wide fan-out queue evenly
   instead of all on the producer's worker; a node without any is left to Dask, whose queue
   hands it to whichever worker frees up first;
4. when the largest input is large (:data:`LOCALITY_BYTES`) and no candidate holds it, Dask
   decides as before: locality, then work stealing (moving it may cost more than waiting).

A choice is a *loose* restriction (``allow_other_workers=True``): if the chosen worker leaves
the cluster, Dask runs the node elsewhere. Free slots are counted on the scheduler (so other
runs sharing the cluster count too, asked at most once a second) and kept up to date with this
run's own submissions and completions.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)

#: An input at least this large stays where it is when its worker is busy: moving it to a free
#: worker may cost more than waiting (Dask's locality and work stealing decide, as before).
LOCALITY_BYTES = 100_000_000

#: How long one answer of the scheduler about the tasks in processing is used, kept up to date
#: with this run's own submissions and completions: other runs' tasks on a shared cluster, and
#: workers that join, are seen up to this late.
SNAPSHOT_SECONDS = 1.0

#: Key prefix of the data-less completion task of each node task (see ``_upstream.prefect_dask``).
COMPLETION_PREFIX = "state-"


def input_futures(parameters: dict[str, Any]) -> list[Any]:
    """The Dask futures among task parameters (one level into dicts, lists and tuples)."""
    import distributed

    found: list[Any] = []
    for value in parameters.values():
        if isinstance(value, dict):
            values = list(value.values())
        elif isinstance(value, (list, tuple)):
            values = list(value)
        else:
            values = [value]
        found.extend(v for v in values if isinstance(v, distributed.Future))
    return found


class Placement:
    """Chooses a worker for each node task of one run (see the module docstring)."""

    def __init__(self, client: Any):
        self._client = client
        self._nthreads: dict[str, int] = {}
        # Our submissions the scheduler may not have seen yet: Dask future -> chosen worker
        # (``None``: left to Dask).
        self._in_flight: dict[Any, str | None] = {}
        #: Key of each node task this run placed -> its worker (where its outputs are).
        self._placed: dict[Any, str] = {}
        #: Keys of this run's node tasks that ended.
        self._ended: set[Any] = set()
        self._snapshot: dict[str, Any] = {}
        self._snapshot_at = 0.0
        self._lock = threading.Lock()

    def choose(self, parameters: dict[str, Any], has_resources: bool) -> str | None:
        """The worker for a node task with these (Dask) parameters; ``None``: Dask decides."""
        if has_resources:
            return None
        try:
            free = self._free_slots()
        except Exception as exc:  # e.g. the scheduler is busy restarting: Dask decides
            logger.debug("Placement: could not ask the scheduler: %r", exc)
            return None
        if not free:
            return None  # no worker yet (e.g. an adaptive cluster scaling up): Dask waits
        most = max(free.values())
        inputs = input_futures(parameters)
        if most > 0:  # some free slot: any free worker
            candidates = [worker for worker, slots in free.items() if slots > 0]
        elif not inputs:  # none free, no input to stay near: Dask hands it to the first free
            return None
        else:  # none free: queue evenly, on the least busy workers
            candidates = [worker for worker, slots in free.items() if slots == most]
        if inputs:
            # Where the inputs are; their sizes only matter when no candidate holds one.
            who_has = self._where(inputs)
            holding = [w for w in candidates if any(w in who_has.get(f.key, ()) for f in inputs)]
            if holding:
                candidates = self._holding_largest(inputs, who_has, holding)
            elif self._largest_nbytes(inputs) >= LOCALITY_BYTES:
                return None  # large input on a busy worker: locality and stealing decide
        return max(candidates, key=lambda worker: (free[worker], worker))

    def submitted(self, future: Any, worker: str | None) -> None:
        """Count ``future`` against ``worker`` until the scheduler reports it."""
        with self._lock:
            self._in_flight[future] = worker
            if worker is not None:
                self._placed[future.key] = worker
        # Once it is done, only its key is kept: the future would keep the node's outputs on the
        # cluster.
        future.add_done_callback(self._end)

    def _end(self, future: Any) -> None:
        with self._lock:
            self._ended.add(future.key)
            self._in_flight.pop(future, None)

    def _where(self, inputs: list[Any]) -> dict[Any, Any]:
        """Which workers hold ``inputs``: where this run placed them, else asking the scheduler.

        A placed node runs on its worker unless that worker left or work stealing moved it
        (its restriction is loose); the preference is then a little off, and the data moves.
        """
        with self._lock:
            placed = {future.key: self._placed.get(future.key) for future in inputs}
        if all(placed.values()):
            return {key: (worker,) for key, worker in placed.items()}
        return self._client.who_has(inputs)

    def _processing(self) -> dict[str, Any]:
        """The scheduler's tasks in processing by worker, asked at most every
        :data:`SNAPSHOT_SECONDS` (each question is a round trip on the node's critical path)."""
        now = time.monotonic()
        if not self._snapshot or now - self._snapshot_at > SNAPSHOT_SECONDS:
            self._snapshot = self._client.processing()
            self._snapshot_at = now
            if set(self._snapshot) - set(self._nthreads):
                self._nthreads = dict(self._client.nthreads())
        return self._snapshot

    def _free_slots(self) -> dict[str, int]:
        processing = self._processing()
        seen = {key for keys in processing.values() for key in keys}
        with self._lock:
            # This run's own tasks that ended since the scheduler was asked no longer count.
            ended = seen & self._ended
        busy = {
            worker: sum(
                1 for key in keys if not str(key).startswith(COMPLETION_PREFIX) and key not in ended
            )
            for worker, keys in processing.items()
        }
        unplaced = 0
        with self._lock:
            for future, worker in list(self._in_flight.items()):
                if future.done() or future.key in seen:
                    del self._in_flight[future]
                elif worker in busy:
                    busy[worker] += 1
                else:
                    unplaced += 1
        free = {worker: self._nthreads.get(worker, 1) - count for worker, count in busy.items()}
        # Submissions left to Dask take some slot, we do not know which: the fullest go first.
        for worker in sorted(free, key=lambda w: free[w]):
            if unplaced <= 0:
                break
            taken = min(max(free[worker], 0), unplaced)
            free[worker] -= taken
            unplaced -= taken
        return free

    def _holding_largest(
        self, inputs: list[Any], who_has: dict[Any, Any], holding: list[str]
    ) -> list[str]:
        """Of the candidates holding an input, those holding the largest one."""
        if len(inputs) == 1 or len(holding) == 1:
            return holding
        sizes = self._client.nbytes([future.key for future in inputs], summary=False)
        for future in sorted(inputs, key=lambda f: sizes.get(f.key, 0), reverse=True):
            best = [worker for worker in holding if worker in who_has.get(future.key, ())]
            if best:
                return best
        return holding

    def _largest_nbytes(self, inputs: list[Any]) -> int:
        sizes = self._client.nbytes([future.key for future in inputs], summary=False)
        return max((sizes.get(future.key, 0) for future in inputs), default=0)
