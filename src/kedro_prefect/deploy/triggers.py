"""Data-driven deployments: run a deployment when Kedro datasets are saved.

Every ``PrefectRunner`` run emits ``kedro.dataset.saved`` for each persisted dataset it saves
(:mod:`kedro_prefect.observe.events`), with the resource id ``kedro.dataset.<package>.<dataset>``.
A deployment with ``on_dataset_saved: [name, ...]`` gets a Prefect deployment trigger matching
those resource ids:

* by default, one ``DeploymentEventTrigger``: a run per saved event of any listed dataset;
* with ``on_dataset_saved_all_within``, a ``DeploymentCompoundTrigger`` (``require: all``): one
  run once every listed dataset was saved within that window.

The triggered run receives the triggering event as its ``trigger`` parameter (dataset, project,
version, upstream flow run, event id), rendered by the Prefect server from the event.

Names: ``name`` is a dataset of this project; ``<package>.<name>`` of the project with that
package (this one or another). Checked before anything is created: a deployment whose own
pipeline saves a dataset it is triggered by is refused (each run would trigger the next); an
unknown name of this project is a warning listing the project's datasets.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from kedro_prefect._upstream.kedro import is_in_memory
from kedro_prefect.errors import ProjectConfigError
from kedro_prefect.observe.events import DATASET_SAVED, dataset_resource_id

logger = logging.getLogger("kedro_prefect.deploy")


class SelfTriggerError(ProjectConfigError):
    """A deployment would be triggered by a dataset its own pipeline saves."""


class InMemoryTriggerError(ProjectConfigError):
    """A deployment would be triggered by a dataset kept in memory: its saves announce nothing."""


def in_memory(name: str, config: Any) -> str | None:
    """Why dataset ``name`` of this catalog entry keeps its data in memory (no event), or None.

    ``config`` is its catalog entry (None: not in the catalog, which Kedro keeps in memory). The
    dataset is built from its entry (Kedro datasets do no I/O until they load or save) and asked
    :func:`~kedro_prefect._upstream.kedro.is_in_memory`, the package's one answer; an entry that
    cannot be built here (a type that does not import, credentials) counts as persisted.
    """
    if not isinstance(config, dict):
        return "has no catalog entry, so Kedro keeps it in memory"
    from kedro.io import AbstractDataset

    try:
        dataset = AbstractDataset.from_config(name, dict(config))
    except Exception:
        return None
    return f"is a {type(dataset).__name__}, kept in memory" if is_in_memory(dataset) else None


def _first_related(role: str) -> str:
    """A Jinja template: the id (after ``prefect.<kind>.``) of the event's related ``role``."""
    return (
        "{% for r in event.related %}{% if r.role == '" + role + "' %}"
        "{{ r.id.split('.', 2)[2] }}{% endif %}{% endfor %}"
    )


def _jinja(template: str) -> dict[str, str]:
    """A parameter the Prefect server renders as a string (any Prefect 3.4+ version)."""
    return {"__prefect_kind": "jinja", "template": template}


#: The ``trigger`` parameter of a triggered run, rendered by the Prefect server from the event.
_TRIGGER_TEMPLATES: dict[str, str] = {
    "event": "{{ event.event }}",
    "event_id": "{{ event.id }}",
    "occurred": "{{ event.occurred }}",
    "dataset": "{{ event.payload.dataset }}",
    "project": "{{ event.payload.project }}",
    "version": "{{ event.payload.version or '' }}",
    "env": "{{ event.payload.env }}",
    "pipeline": "{{ event.payload.pipeline }}",
    "node": "{{ event.payload.node }}",
    "flow_run": _first_related("flow-run"),
}
TRIGGER_PARAMETER = {key: _jinja(template) for key, template in _TRIGGER_TEMPLATES.items()}


def resolve_dataset_name(name: str, package: str, known: Iterable[str]) -> tuple[str, str]:
    """``(package, dataset)`` of a trigger name.

    A dataset of this project (in ``known``) is itself even when its name has dots (Kedro
    namespaces); ``<package>.<dataset>`` names a dataset of that project; any other name without
    a dot is taken as a dataset of this project.
    """
    if name in set(known):
        return package, name
    if name.startswith(f"{package}."):
        return package, name[len(package) + 1 :]
    if "." in name:
        other, dataset = name.split(".", 1)
        return other, dataset
    return package, name


def dataset_triggers(
    names: list[str],
    package: str,
    known: Iterable[str] = (),
    all_within: timedelta | None = None,
) -> list[Any]:
    """Prefect deployment triggers running a deployment when the named datasets are saved."""
    from prefect.events import DeploymentCompoundTrigger, DeploymentEventTrigger, EventTrigger

    known = set(known)
    resource_ids = [dataset_resource_id(*resolve_dataset_name(n, package, known)) for n in names]
    parameters = {"trigger": {key: dict(value) for key, value in TRIGGER_PARAMETER.items()}}
    if not resource_ids:
        return []
    if all_within is None or len(resource_ids) == 1:
        return [
            DeploymentEventTrigger(
                name=f"on {', '.join(names)} saved",
                expect={DATASET_SAVED},
                match={"prefect.resource.id": resource_ids},
                parameters=parameters,
            )
        ]
    return [
        DeploymentCompoundTrigger(
            name=f"on all of {', '.join(names)} saved within {all_within}",
            require="all",
            within=all_within,
            triggers=[
                EventTrigger(expect={DATASET_SAVED}, match={"prefect.resource.id": resource_id})
                for resource_id in resource_ids
            ],
            parameters=parameters,
        )
    ]


class ProjectDatasets:
    """The datasets of a bootstrapped Kedro project: catalog entries and pipeline datasets."""

    def __init__(self, project_path: Path, package: str, env: str | None):
        self.package = package
        self._catalog = _catalog_config(project_path, env)
        from kedro.framework.project import pipelines

        self._pipelines = pipelines
        names = {n for n in self._catalog if "{" not in n and not n.startswith("_")}
        for pipeline in pipelines.values():
            names |= {n for n in pipeline.datasets() if not n.startswith("params:")}
        self.names = sorted(names - {"parameters"})

    def saved_by(self, pipeline: str) -> set[str]:
        """The persisted datasets the pipeline saves (outputs that are not in memory)."""
        return {
            name for name in self._pipelines[pipeline].all_outputs() if not self.in_memory(name)
        }

    def persisted(self) -> list[str]:
        """The project's datasets whose saves emit an event (to suggest instead)."""
        return [name for name in self.names if not self.in_memory(name)]

    def in_memory(self, name: str) -> str | None:
        """Why dataset ``name`` is kept in memory (see :func:`in_memory`), or None."""
        config = self._catalog.get(name)
        if config is None:
            patterns = {k: v for k, v in self._catalog.items() if "{" in k}
            if patterns:
                from kedro.io import CatalogConfigResolver

                pattern = CatalogConfigResolver(
                    config=patterns, default_runtime_patterns={}
                ).match_dataset_pattern(name)
                config = patterns.get(pattern) if pattern else None
        return in_memory(name, config)


@functools.lru_cache(maxsize=8)
def project_datasets(project_path: Path, package: str, env: str | None) -> ProjectDatasets:
    """The :class:`ProjectDatasets` of a project and env (read once per deploy or serve)."""
    return ProjectDatasets(project_path, package, env)


def _catalog_config(project_path: Path, env: str | None) -> dict[str, Any]:
    """The project's raw catalog configuration for ``env`` (no credentials are read)."""
    from kedro.framework.project import settings

    try:
        loader = settings.CONFIG_LOADER_CLASS(
            conf_source=str(project_path / settings.CONF_SOURCE),
            env=env,
            **settings.CONFIG_LOADER_ARGS,
        )
        return dict(loader["catalog"] or {})
    except Exception as exc:  # no catalog: every dataset is in memory
        logger.debug("Could not read the catalog of %s: %r", project_path, exc)
        return {}


def deployment_triggers(
    deployment: str,
    names: list[str],
    pipeline: str,
    datasets: ProjectDatasets,
    all_within: timedelta | None = None,
    where: str | None = None,
) -> list[Any]:
    """The triggers of a deployment, after checking its dataset names.

    ``where`` names where the names came from in errors (default: prefect.yml's key).

    Raises:
        SelfTriggerError: The deployment's own pipeline saves a dataset it is triggered by.
        InMemoryTriggerError: A dataset of this project is kept in memory (never announced).
    """
    if not names:
        return []
    where = where or f"Invalid prefect.yml: deployments.{deployment}.on_dataset_saved"
    package = datasets.package
    resolved = {n: resolve_dataset_name(n, package, datasets.names) for n in names}
    own = {n: dataset for n, (project, dataset) in resolved.items() if project == package}
    loops = sorted(n for n, dataset in own.items() if dataset in datasets.saved_by(pipeline))
    if loops:
        raise SelfTriggerError(
            f"{where}: pipeline {pipeline!r} of this deployment saves "
            f"{', '.join(repr(n) for n in loops)}, so each run would trigger the next one "
            "forever. Trigger it on another dataset, or deploy the part of the pipeline that "
            "consumes it as its own pipeline."
        )
    for name, dataset in own.items():
        why = datasets.in_memory(dataset) if dataset in datasets.names else None
        if why:
            persisted = ", ".join(datasets.persisted()[:6]) or "none"
            raise InMemoryTriggerError(
                f"{where}: {name!r} {why}: no run announces its saves and this trigger could "
                f"never fire. Trigger on a dataset saved to storage (e.g. {persisted}), or give "
                f"{name!r} a catalog entry that writes it."
            )
    unknown = sorted(n for n, dataset in own.items() if dataset not in datasets.names)
    if unknown:
        logger.warning(
            "Deployment %r: on_dataset_saved names %s, not a dataset of project %s (its "
            "datasets: %s). Name another project's datasets <package>.<dataset>.",
            deployment,
            ", ".join(repr(n) for n in unknown),
            package,
            ", ".join(datasets.names) or "none",
        )
    return dataset_triggers(names, package, datasets.names, all_within)


def describe_triggers(names: list[str], all_within: timedelta | None = None) -> str:
    """How ``kedro prefect deploy`` reports a deployment's dataset triggers."""
    if not names:
        return ""
    if all_within is not None and len(names) > 1:
        return f"when all of {', '.join(names)} are saved within {all_within}"
    return f"when {' or '.join(names)} is saved"
