"""One Prefect event per persisted dataset a node saved: ``kedro.dataset.saved``.

Emitted where the node ran (the runner's process on the thread backend, the worker process with
``task_runner=process`` or ``dask``), right after the node's task body has saved its outputs, with
Prefect's public ``prefect.events.emit_event``: the event is queued for Prefect's events worker,
which sends it in the background. In-memory datasets
(:func:`kedro_prefect._upstream.kedro.is_in_memory`: ``MemoryDataset``, ``SharedMemoryDataset``)
emit nothing; a ``CachedDataset`` writes through to the dataset it wraps, and emits one.

An event carries names only: the dataset's name, class and (when versioned) save version; the
project, env, pipeline and node names; the flow run and task run ids. Never the data, a dataset's
configuration, file path or credentials. A failure to emit is logged at debug level and never
fails the node.

Event::

    event:    kedro.dataset.saved
    resource: kedro.dataset.<package>.<dataset>   (+ name, project, version labels)
    related:  kedro.project.<package>, kedro.env.<package>.<env>,
              kedro.pipeline.<package>.<pipeline>, kedro.node.<package>.<node>,
              prefect.flow-run.<id>, prefect.task-run.<id>  (+ flow, deployment, tags by Prefect)
    payload:  dataset, project, env, pipeline, node, type, version, kedro_run_id
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from kedro_prefect._upstream.kedro import is_in_memory

if TYPE_CHECKING:
    from kedro.config import AbstractConfigLoader
    from kedro.io import CatalogProtocol
    from kedro.pipeline.node import Node

logger = logging.getLogger(__name__)

#: The name of the event emitted for each saved persisted dataset.
DATASET_SAVED = "kedro.dataset.saved"
#: Resource ids of datasets: ``kedro.dataset.<package>.<dataset>``.
DATASET_RESOURCE_PREFIX = "kedro.dataset."


def dataset_resource_id(package: str, dataset: str) -> str:
    """The Prefect resource id of a Kedro dataset: ``kedro.dataset.<package>.<dataset>``."""
    return f"{DATASET_RESOURCE_PREFIX}{package}.{dataset}"


@dataclasses.dataclass(frozen=True)
class DatasetEvents:
    """What a node task needs to emit its events: names only, picklable (sent to Dask workers).

    Attributes:
        project: The project's package name (``kedro`` outside a project).
        env: The Kedro environment of the run.
        pipeline: The pipeline(s) run, ``+``-joined (``__default__`` when none was named).
        run_id: The Kedro session id of the run.
    """

    project: str
    env: str
    pipeline: str
    run_id: str | None = None

    def emit_saved(self, node: Node, catalog: CatalogProtocol) -> int:
        """Emit ``kedro.dataset.saved`` for each persisted output of ``node``; never raises.

        Returns:
            How many events were queued.
        """
        try:
            return self._emit_saved(node, catalog)
        except Exception as exc:  # an event is never worth a failed node
            logger.debug("Could not emit dataset events of node %s: %r", node.name, exc)
            return 0

    def _emit_saved(self, node: Node, catalog: CatalogProtocol) -> int:
        persisted = []
        for name in node.outputs:
            dataset = catalog.get(name)
            if not is_in_memory(dataset):
                persisted.append((name, dataset))
        if not persisted:
            return 0
        from prefect.context import TaskRunContext
        from prefect.events import emit_event

        context = TaskRunContext.get()
        task_run = context.task_run if context is not None else None
        related = self._related(node, task_run)
        sent = 0
        for name, dataset in persisted:
            version = _save_version(dataset)
            resource = {
                "prefect.resource.id": dataset_resource_id(self.project, name),
                "prefect.resource.name": name,
                "kedro.project": self.project,
            }
            payload: dict[str, Any] = {
                "dataset": name,
                "project": self.project,
                "env": self.env,
                "pipeline": self.pipeline,
                "node": node.name,
                "type": f"{type(dataset).__module__}.{type(dataset).__qualname__}",
                "kedro_run_id": self.run_id,
            }
            if version is not None:
                resource["kedro.dataset.version"] = version
                payload["version"] = version
            if emit_event(DATASET_SAVED, resource=resource, related=related, payload=payload):
                sent += 1
        return sent

    def _related(self, node: Node, task_run: Any) -> list[dict[str, str]]:
        related = [
            _resource(f"kedro.project.{self.project}", "kedro-project", self.project),
            _resource(f"kedro.env.{self.project}.{self.env}", "kedro-env", self.env),
            _resource(
                f"kedro.pipeline.{self.project}.{self.pipeline}", "kedro-pipeline", self.pipeline
            ),
            _resource(f"kedro.node.{self.project}.{node.name}", "kedro-node", node.name),
        ]
        if task_run is not None:
            # Prefect adds the flow, deployment and tags of the run from the run context.
            related.append(_resource(f"prefect.flow-run.{task_run.flow_run_id}", "flow-run"))
            related.append(_resource(f"prefect.task-run.{task_run.id}", "task-run", node.name))
        return related


def _resource(resource_id: str, role: str, name: str | None = None) -> dict[str, str]:
    resource = {"prefect.resource.id": resource_id, "prefect.resource.role": role}
    if name:
        resource["prefect.resource.name"] = name
    return resource


def _save_version(dataset: Any) -> str | None:
    """The version a versioned dataset was just saved with (``None``: not versioned)."""
    from kedro.io import AbstractVersionedDataset

    if not isinstance(dataset, AbstractVersionedDataset):
        return None
    try:
        version = dataset.resolve_save_version()
    except Exception:
        return None
    return str(version) if version else None


def dataset_events_for_run(
    package: str | None,
    run_params: dict[str, Any],
    config_loader: AbstractConfigLoader | None,
    run_id: str | None,
) -> DatasetEvents:
    """The :class:`DatasetEvents` of a run, from what the Kedro session recorded."""
    from kedro_prefect._upstream.kedro import run_pipeline_names

    env = run_params.get("env") or getattr(config_loader, "env", None)
    env = env or getattr(config_loader, "default_run_env", None) or "local"
    pipelines = run_pipeline_names(run_params) or [""]
    pipeline = "+".join(p for p in pipelines if p) or "__default__"
    return DatasetEvents(project=package or "kedro", env=env, pipeline=pipeline, run_id=run_id)


def announce_trigger(trigger: dict[str, Any]) -> None:
    """In a run started by a dataset trigger: log what triggered it, and link the flow runs.

    Emits ``kedro.run.triggered`` about this flow run, with the upstream flow run and the saved
    dataset as related resources: both flow runs list it in their events in the Prefect UI.
    """
    from prefect.logging import get_run_logger

    dataset, project = trigger.get("dataset") or "?", trigger.get("project") or "?"
    version, upstream = trigger.get("version") or None, trigger.get("flow_run") or None
    get_run_logger().info(
        "Triggered by %s.%s saved%s%s",
        project,
        dataset,
        f" (version {version})" if version else "",
        f" in flow run {upstream}" if upstream else "",
    )
    try:
        from prefect.context import FlowRunContext
        from prefect.events import emit_event

        context = FlowRunContext.get()
        if context is None or context.flow_run is None:
            return
        related = [_resource(dataset_resource_id(project, dataset), "trigger-dataset", dataset)]
        if upstream:
            related.append(_resource(f"prefect.flow-run.{upstream}", "upstream-flow-run"))
        emit_event(
            "kedro.run.triggered",
            resource={
                "prefect.resource.id": f"prefect.flow-run.{context.flow_run.id}",
                "prefect.resource.name": context.flow_run.name,
            },
            related=related,
            payload={k: v for k, v in trigger.items() if isinstance(v, str)},
        )
    except Exception as exc:
        logger.debug("Could not emit kedro.run.triggered: %r", exc)
