"""Dask worker resources asked for by node tags ``dask-<RESOURCE>-<amount>`` (``dask-GPU-1``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kedro_prefect.errors import PrefectRunnerConfigError

if TYPE_CHECKING:
    from kedro.pipeline.node import Node

#: Node tags ``dask-<RESOURCE>-<amount>`` ask for Dask worker resources, e.g. ``dask-GPU-1``.
#: (Kedro tags may only hold letters, digits, ``-``, ``_`` and ``.``.)
RESOURCE_TAG_PREFIX = "dask-"


def resource_tags(node: Node) -> set[str]:
    """The ``dask-`` resource tags of ``node``: the nodes of a group (``group_by``) share them."""
    return {tag for tag in node.tags if tag.startswith(RESOURCE_TAG_PREFIX)}


def node_resources(tags: set[str] | frozenset[str]) -> dict[str, float]:
    """Dask worker resources asked for by ``dask-<NAME>-<amount>`` tags.

    Raises:
        PrefectRunnerConfigError: A ``dask-`` tag is not ``dask-<NAME>-<number>``.
    """
    resources: dict[str, float] = {}
    for tag in tags:
        if not tag.startswith(RESOURCE_TAG_PREFIX):
            continue
        name, sep, amount = tag.removeprefix(RESOURCE_TAG_PREFIX).rpartition("-")
        try:
            if not (sep and name):
                raise ValueError
            resources[name] = float(amount)
        except ValueError:
            raise PrefectRunnerConfigError(
                f"node tag {tag!r}: tags starting with 'dask-' ask for Dask worker resources "
                "and must look like dask-<resource>-<amount>, e.g. 'dask-GPU-1' or "
                "'dask-memory-4e9'"
            ) from None
    return resources
