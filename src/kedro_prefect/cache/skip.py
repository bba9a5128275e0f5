"""``skip_unchanged``: skip the nodes whose fingerprint matches their last successful run.

When a node is submitted (the producers of its inputs are done), :class:`SkipUnchanged` takes its
fingerprint (:mod:`kedro_prefect.cache.fingerprint`): its code, the fingerprints of the data it
reads (for an in-memory input, the fingerprint of the node producing it) and the project. The
node's Prefect task gets that fingerprint as its cache key, with its result (the node's
in-memory outputs) persisted by Prefect. The node is a *candidate* for skipping when every
persisted output exists and its fingerprint equals the one recorded by its last successful run;
a candidate's task looks its key up in Prefect's cache, and a hit ends the task run in state
``Cached`` with the outputs read back: the node's function and its hooks do not run. Every other
node runs and overwrites the entry (``refresh_cache``). A missing, unreadable or expired entry
means the node runs, with one warning line.

With ``group_by``, a group (one task run) is skipped as a whole: its nodes are fingerprinted in
order when the group is submitted (an input produced inside the group, in memory or persisted,
takes its producer's fingerprint: a persisted one is not written yet), the group's cache key
is the digest of theirs and of the names of the in-memory outputs leaving it (its task's
result), and the group is a candidate only when every one of its nodes is. One changed node
runs the whole group again (and the groups and nodes after it, whose inputs' fingerprints
changed); each node's fingerprint is recorded as without groups.

The scheduling loop sees a skipped node as completed: its children are submitted as usual.
:class:`SkippingExecution` wraps the run's :class:`~kedro_prefect.execution.protocol.NodeExecution`
to put the in-memory outputs of skipped nodes into the shared catalog (threads; on Dask they
travel as task results already) and to record each node's fingerprint when it completes (and
forget it when it fails: nothing is cached for failed nodes).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from kedro_prefect._upstream.kedro import is_in_memory, pipeline_dataset
from kedro_prefect.cache.code import CodeFingerprints
from kedro_prefect.cache.fingerprint import RULES_VERSION, dataset_fingerprint, digest
from kedro_prefect.cache.hits import is_skipped
from kedro_prefect.execution.local import run_node
from kedro_prefect.execution.outputs import NodeData

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline
    from kedro.pipeline.node import Node
    from pluggy import PluginManager
    from prefect import Task
    from prefect.futures import PrefectFuture

    from kedro_prefect.cache.storage import CacheStorage
    from kedro_prefect.execution.protocol import NodeExecution, SavedEvents
    from kedro_prefect.execution.versions import RunVersions

logger = logging.getLogger(__name__)


class FixedKey:
    """A task's ``cache_key_fn`` returning the node's fingerprint (pickles by reference)."""

    def __init__(self, key: str):
        self.key = key

    def __call__(self, context: Any, parameters: Any) -> str:
        return self.key


def run_node_keeping_outputs(
    node: Node,
    catalog: CatalogProtocol,
    hook_manager: PluginManager,
    is_async: bool,
    run_id: str | None,
    upstream: tuple[str, ...] = (),
    events: SavedEvents | None = None,
) -> NodeData:
    """:func:`~kedro_prefect.execution.local.run_node`, returning the node's in-memory outputs.

    They are the task's result, which Prefect persists under the node's fingerprint.
    """
    run_node(node, catalog, hook_manager, is_async, run_id, upstream, events=events)
    outputs = {}
    for name in node.outputs:
        dataset = pipeline_dataset(catalog, name)
        if is_in_memory(dataset):
            outputs[name] = dataset.load()
    return NodeData(outputs)


def run_group_keeping_outputs(
    nodes: tuple[Node, ...],
    catalog: CatalogProtocol,
    hook_manager: PluginManager,
    is_async: bool,
    run_id: str | None,
    upstream: tuple[str, ...] = (),
    events: SavedEvents | None = None,
    leaving: tuple[str, ...] = (),
) -> NodeData:
    """:func:`~kedro_prefect.execution.local.run_group`, returning the in-memory outputs that
    leave the group (``leaving``): the task's result, persisted under the group's key. The
    data produced and read only inside the group is not part of it."""
    from kedro_prefect.execution.local import run_group

    run_group(nodes, catalog, hook_manager, is_async, run_id, upstream, events)
    return NodeData({name: pipeline_dataset(catalog, name).load() for name in leaving})


class SkipUnchanged:
    """Fingerprints, cache keys and records of one run with ``skip_unchanged``."""

    #: Logged after a failed (or cancelled) run, next to Kedro's ``--from-nodes`` hint.
    RESUME_HINT = (
        "skip_unchanged is on: run the same command again to resume; nodes that completed "
        "are skipped and only the failed node and the nodes after it run."
    )

    def __init__(
        self,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        storage: CacheStorage,
        secrets: frozenset[str],
        project: str | None,
        expiration: timedelta | None = None,
        versions: RunVersions | None = None,
    ):
        from kedro_prefect.execution.redaction import redact
        from kedro_prefect.execution.versions import RunVersions

        self._catalog = catalog
        # The version each versioned input is loaded at in this run (shared with the Dask
        # driver, which ships it to the workers): the one fingerprinted is the one loaded.
        self._versions = versions or RunVersions(catalog)
        self._storage = storage
        self._project = project or "kedro"
        self._expiration = expiration
        self._mask = lambda text: redact(text, secrets)
        self._producer = {name: node for node in pipeline.nodes for name in node.outputs}
        self._readers: dict[str, set[Node]] = {}
        for node in pipeline.nodes:
            for name in node.inputs:
                self._readers.setdefault(name, set()).add(node)
        self._free_outputs = pipeline.outputs()
        self._memory = {
            name
            for name in pipeline.datasets()
            if is_in_memory(catalog.get(name, fallback_to_runtime_pattern=True))
        }
        self._memo = _StorageMemo(storage)
        self._code = CodeFingerprints(project)
        self._data: dict[str, str | None] = {}  # dataset fingerprints taken in this run
        self.fingerprints: dict[str, str | None] = {}  # by node name
        self.candidates: set[str] = set()
        self.skipped: list[str] = []
        self._policy_class = _cache_key_policy_class()

    # --- before a node is submitted ------------------------------------------------------------

    def fingerprint(self, node: Node, group: frozenset[str] = frozenset()) -> str | None:
        """The node's fingerprint now (its producers are done); ``None``: cannot be taken.

        ``group``: the outputs of the nodes of the node's group (``group_by``), not written yet
        when the group is submitted: each counts by its producer's fingerprint, as in memory.
        """
        parts: dict[str, str] = {}
        for name in node.inputs:
            part = self._input_fingerprint(name, name in group)
            if part is None:
                logger.debug("Node %s: input %s cannot be fingerprinted", node.name, name)
                return None
            parts[name] = part
        return digest(RULES_VERSION, self._project, self._code.node(node), parts)

    def _input_fingerprint(self, name: str, by_producer: bool = False) -> str | None:
        producer = self._producer.get(name)
        if producer is not None and (by_producer or name in self._memory):
            produced = self.fingerprints.get(producer.name)
            return digest("produced-by", producer.name, produced) if produced else None
        if name not in self._data:
            dataset = self._versions.for_node(name, loads=True)
            self._data[name], _ = dataset_fingerprint(dataset, self._memo, self._mask)
        return self._data[name]

    def _missing_outputs(self, node: Node) -> list[str]:
        missing = []
        for name in node.outputs:
            if name in self._memory:
                continue
            dataset = pipeline_dataset(self._catalog, name)
            try:
                exists = dataset.exists()
            except Exception:
                exists = False
            if not exists:
                missing.append(name)
        return missing

    def _is_candidate(self, node: Node, fingerprint: str) -> bool:
        last = self._storage.read_json(_node_record(self._project, node.name)) or {}
        missing = self._missing_outputs(node)
        if last.get("fingerprint") == fingerprint and not missing:
            return True
        logger.debug(
            "Node %s runs: %s",
            node.name,
            f"missing output(s) {', '.join(missing)}"
            if missing and last.get("fingerprint") == fingerprint
            else "changed since its last successful run (or never run)",
        )
        return False

    def keyed_task(self, task: Task, node: Node) -> Task:
        """``task`` (a fresh copy) cached under the node's fingerprint, looked up if unchanged."""
        fingerprint = self.fingerprint(node)
        self.fingerprints[node.name] = fingerprint
        if fingerprint is None:
            self._forget(node)
            logger.debug("Node %s runs: its inputs cannot be fingerprinted", node.name)
            return task  # not cached: nothing downstream of it can be skipped either
        if self._is_candidate(node, fingerprint):
            self.candidates.add(node.name)
        return self._keyed(task, fingerprint, node.name in self.candidates)

    def leaving(self, nodes: tuple[Node, ...]) -> tuple[str, ...]:
        """The in-memory outputs of a group read outside it or returned by the run."""
        inside = set(nodes)
        return tuple(
            sorted(
                name
                for node in nodes
                for name in node.outputs
                if name in self._memory
                and (name in self._free_outputs or self._readers.get(name, set()) - inside)
            )
        )

    def keyed_group_task(self, task: Task, nodes: tuple[Node, ...]) -> Task:
        """``task`` (a group's, ``group_by``) cached under the digest of its nodes'
        fingerprints, looked up when every node of the group is unchanged."""
        parts = []
        produced = frozenset(name for node in nodes for name in node.outputs)
        for node in nodes:  # dependency order: producers inside the group come first
            fingerprint = self.fingerprint(node, produced)
            self.fingerprints[node.name] = fingerprint
            if fingerprint is None:
                self._forget(node)
                logger.debug("Node %s runs: its inputs cannot be fingerprinted", node.name)
            parts.append(fingerprint)
        known = [part for part in parts if part is not None]
        if len(known) < len(parts):
            return task
        unchanged = [
            self._is_candidate(node, part) for node, part in zip(nodes, known, strict=True)
        ]
        if all(unchanged):
            self.candidates.update(node.name for node in nodes)
        key = digest("group", *known, *self.leaving(nodes))
        return self._keyed(task, key, all(unchanged))

    def _keyed(self, task: Task, key: str, candidate: bool) -> Task:
        policy = self._policy_class(cache_key_fn=FixedKey(key))
        if self._storage.key_storage is not None:
            policy = policy.configure(key_storage=self._storage.key_storage)
        task.cache_policy = policy
        task.cache_key_fn = policy.cache_key_fn
        task.persist_result = True
        task.result_storage = self._storage.result_storage
        task.result_serializer = "pickle"
        task.refresh_cache = not candidate
        task.cache_expiration = self._expiration
        return task

    # --- after a node has finished -------------------------------------------------------------

    def node_completed(self, node: Node, future: PrefectFuture[Any], shared_catalog: bool) -> None:
        """Record the node's fingerprint; put a skipped node's outputs in a shared catalog."""
        state = future.state
        fingerprint = self.fingerprints.get(node.name)
        skipped = is_skipped(state)
        # A group's task run may have failed after this node of it completed: no result then.
        if shared_catalog and state is not None and state.is_completed():
            outputs = future.result()
            if skipped:
                for name, value in getattr(outputs, "data", {}).items():
                    pipeline_dataset(self._catalog, name).save(value)
            if isinstance(outputs, NodeData):
                # Persisted by now; the task run's state would keep the data alive until the
                # end of the run, past the moment Kedro releases the datasets.
                outputs.data = {}
        if skipped:
            self.skipped.append(node.name)
        elif node.name in self.candidates:
            logger.warning(
                "kedro-prefect: node %s is unchanged but its cached result in %s is missing, "
                "unreadable or expired; the node ran again",
                node.name,
                self._storage.location,
            )
        if fingerprint is not None:
            self._storage.write_json(
                _node_record(self._project, node.name),
                {"node": node.name, "fingerprint": fingerprint},
            )

    def node_failed(self, node: Node) -> None:
        """Nothing is cached for a failed node: forget its last fingerprint."""
        self._forget(node)

    def _forget(self, node: Node) -> None:
        path = _node_record(self._project, node.name)
        if self._storage.read_json(path) is not None:
            self._storage.write_json(path, {"node": node.name, "fingerprint": None})


class SkippingExecution:  # implements execution.protocol.NodeExecution
    """A :class:`NodeExecution` recording fingerprints as nodes complete or fail."""

    def __init__(self, inner: NodeExecution, skip: SkipUnchanged):
        self._inner = inner
        self._skip = skip
        self.shares_catalog = self._shared_catalog = inner.shares_catalog
        self.versions = inner.versions
        # On threads the task returns the in-memory outputs, for Prefect to persist them.
        self.task_fn = run_node_keeping_outputs if self._shared_catalog else inner.task_fn
        inner_group_fn = getattr(inner, "group_fn", None)
        self.group_fn = run_group_keeping_outputs if self._shared_catalog else inner_group_fn

    def submit_arguments(
        self, node: Node, producers: set[Node], futures: dict[Node, Any]
    ) -> dict[str, Any]:
        return self._inner.submit_arguments(node, producers, futures)

    def submit_group_arguments(
        self, nodes: tuple[Node, ...], producers: set[Node], futures: dict[Node, Any]
    ) -> dict[str, Any]:
        arguments: dict[str, Any] = self._inner.submit_group_arguments(  # type: ignore[attr-defined]
            nodes, producers, futures
        )
        if self._shared_catalog:
            arguments["parameters"]["leaving"] = self._skip.leaving(nodes)
        return arguments

    def node_completed(self, node: Node, futures: dict[Node, Any]) -> None:
        self._skip.node_completed(node, futures[node], self._shared_catalog)
        self._inner.node_completed(node, futures)

    def nodes_finished(self, futures: dict[Node, Any]) -> None:
        for node, future in futures.items():
            state = future.state
            if state is None or not state.is_completed():
                self._skip.node_failed(node)
        self._inner.nodes_finished(futures)


class _StorageMemo:
    """:class:`~kedro_prefect.cache.fingerprint.FileMemo` kept in the cache storage."""

    def __init__(self, storage: CacheStorage):
        self._storage = storage

    def get(self, path: str, stat: str) -> str | None:
        record = self._storage.read_json(_file_record(path)) or {}
        return record.get("hash") if record.get("stat") == stat else None

    def put(self, path: str, stat: str, content_hash: str) -> None:
        self._storage.write_json(_file_record(path), {"stat": stat, "hash": content_hash})


def _node_record(project: str, node_name: str) -> str:
    return f"nodes/{digest('node', project, node_name)}"


def _file_record(path: str) -> str:
    return f"files/{digest('file', path)}"


def _cache_key_policy_class() -> Any:
    from prefect.cache_policies import CacheKeyFnPolicy

    return CacheKeyFnPolicy


def start_skipping(
    pipeline: Pipeline,
    catalog: CatalogProtocol,
    execution: NodeExecution,
    cache_config: Any,
    secrets: frozenset[str],
    project: str | None,
    versions: RunVersions | None = None,
) -> tuple[SkipUnchanged, SkippingExecution]:
    """The run's :class:`SkipUnchanged` and the execution wrapped by it.

    Raises:
        CacheStorageError: The cache location cannot be used (before any node runs).
    """
    from kedro_prefect.cache.storage import resolve_cache_storage

    storage = resolve_cache_storage(cache_config.path, cache_config.block)
    expiration = cache_config.expiration_seconds
    skip = SkipUnchanged(
        pipeline,
        catalog,
        storage,
        secrets,
        project,
        timedelta(seconds=expiration) if expiration else None,
        versions,
    )
    return skip, SkippingExecution(execution, skip)
