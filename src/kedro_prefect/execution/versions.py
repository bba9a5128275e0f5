"""The versions of versioned datasets that a run's nodes load and save, resolved for the run.

Kedro gives every versioned dataset of a run the run's save version (the session id) and the
load versions asked for (``--load-versions``); a dataset with no load version loads its latest
version, which a versioned dataset resolves once and caches until it saves or is released.
In one process that cache is harmless: the producer saves through the same object, which
clears it. When nodes run in other processes (Dask), the driver's object never saves: a load
version it cached earlier (``exists()`` before the producer ran, a fingerprint) is stale once a
worker has saved a new version, and a copy pickled with it would load the *previous* version.

:class:`RunVersions` is the one owner of "which version does this node load": for each
versioned input, the version given for the run, else its latest version read from storage when
the first node reading it is submitted (its producer has finished by then), the same for every
node of the run. ``skip_unchanged`` fingerprints that version, and a worker gets a copy of the
dataset with it (and the run's save version) pinned.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from kedro_prefect._upstream.kedro import (
    configured_versions,
    is_versioned,
    latest_load_version,
    with_versions,
)

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol


class RunVersions:
    """The load and save version of each versioned dataset, as this run's nodes use them."""

    def __init__(self, catalog: CatalogProtocol):
        self._catalog = catalog
        self._loads: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def _dataset(self, name: str) -> Any:
        return self._catalog.get(name, fallback_to_runtime_pattern=True)

    def load_version(self, name: str) -> str | None:
        """The version nodes of this run load from ``name`` (``None``: not versioned, or no
        version exists yet). Resolved once, when first asked: ask after its producer finished.
        """
        with self._lock:
            if name not in self._loads:
                dataset = self._dataset(name)
                if not is_versioned(dataset):
                    self._loads[name] = None
                else:
                    given, _ = configured_versions(dataset)
                    self._loads[name] = given or latest_load_version(dataset)
            return self._loads[name]

    def for_node(self, name: str, loads: bool) -> Any:
        """The dataset ``name`` as a node of this run in another process must get it.

        A versioned dataset is a copy with the run's versions pinned: the version
        :meth:`load_version` resolved when the node loads it (``loads``), and the run's save
        version (Kedro's session id, or one the driver chose for the run). Any other dataset is
        the catalog's own object.
        """
        dataset = self._dataset(name)
        if not is_versioned(dataset):
            return dataset
        load, _ = configured_versions(dataset)
        if loads:
            load = self.load_version(name) or load
        return with_versions(dataset, load, dataset.resolve_save_version())
