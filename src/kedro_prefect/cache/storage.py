"""Where ``skip_unchanged`` keeps what it knows: Prefect result storage, and small records.

Three kinds of entries, all in one place (``prefect.yml`` ``cache:``):

* Prefect's cache records (key = a node's fingerprint): the node's in-memory outputs, written by
  Prefect's task engine (``persist_result``) and read back by it on a cache hit;
* ``nodes/<digest>``: the fingerprint of each node's last successful run (JSON);
* ``files/<digest>``: the content hash of a file by its size, modification time and inode, so an
  unchanged file is not read again (JSON).

By default the place is a local directory, ``$PREFECT_HOME/storage/kedro-prefect``: with a
local path, Prefect's cache keys (record metadata) go to ``keys/`` and results to ``results/``,
so checking a key never reads the data. With a Prefect storage block (``cache: block: <type
slug>/<name>``, e.g. an S3 bucket), everything goes to that block (records under
``kedro-prefect/``), so Dask workers and deployment runs on other machines share it.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro_prefect.errors import CacheStorageError

logger = logging.getLogger(__name__)


@dataclass
class CacheStorage:
    """The resolved storage of a run with ``skip_unchanged``."""

    #: Where the node and file records go (a Prefect ``WritableFileSystem``).
    records: Any
    #: ``result_storage`` of node tasks.
    result_storage: Any
    #: ``key_storage`` of node tasks' cache policy (``None``: with the results).
    key_storage: Any
    #: Path prefix of the records inside ``records``.
    prefix: str
    #: Where it is, for messages.
    location: str
    #: The directory of ``records`` when it is local (read and written directly, ~100x faster
    #: than through the block's async-dispatching methods).
    local: Path | None = None

    def read_json(self, path: str) -> Any:
        """The JSON at ``path``; ``None`` if it is absent or unreadable."""
        try:
            if self.local is not None:
                content = (self.local / path).read_bytes()
            else:
                content = _call(self.records, "read_path", f"{self.prefix}{path}")
        except Exception:
            return None
        try:
            return json.loads(content)
        except (TypeError, ValueError):
            return None

    def write_json(self, path: str, value: Any) -> bool:
        """Write ``value`` as JSON at ``path``; ``False`` (logged) if the storage refused."""
        content = json.dumps(value).encode()
        try:
            if self.local is not None:
                target = self.local / path
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                partial.write_bytes(content)
                partial.replace(target)  # atomic: a reader never sees half a record
            else:
                _call(self.records, "write_path", f"{self.prefix}{path}", content)
        except Exception as exc:
            logger.warning(
                "kedro-prefect: could not write %s to the skip_unchanged cache at %s (%s: %s)",
                path,
                self.location,
                type(exc).__name__,
                exc,
            )
            return False
        return True


def default_cache_path() -> Path:
    """``$PREFECT_HOME/storage/kedro-prefect`` (under Prefect's local result storage)."""
    from prefect.settings import get_current_settings

    return Path(get_current_settings().results.local_storage_path) / "kedro-prefect"


def resolve_cache_storage(path: str | None = None, block: str | None = None) -> CacheStorage:
    """The storage named in ``prefect.yml`` ``cache:`` (default: a local directory).

    Raises:
        CacheStorageError: The directory cannot be created or written, or the block cannot be
            loaded or is not a writable file system.
    """
    if block:
        return _block_storage(block)
    from prefect.filesystems import LocalFileSystem

    base = Path(path).expanduser() if path else default_cache_path()
    base = base.resolve()
    probe = base / ".kedro-prefect-write-check"
    try:
        for sub in ("keys", "results", "nodes", "files"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise CacheStorageError(
            f"skip_unchanged: cannot use the cache directory {base} "
            f"({exc.strerror or exc}); set a writable "
            "`cache: path:` in prefect.yml; no node has run."
        ) from None
    return CacheStorage(
        records=LocalFileSystem(basepath=str(base)),
        result_storage=LocalFileSystem(basepath=str(base / "results")),
        key_storage=LocalFileSystem(basepath=str(base / "keys")),
        prefix="",
        location=str(base),
        local=base,
    )


def _block_storage(slug: str) -> CacheStorage:
    from prefect.blocks.core import Block
    from prefect.filesystems import WritableFileSystem

    try:
        storage = Block.load(slug)
        if inspect.iscoroutine(storage):
            from prefect.utilities.asyncutils import run_coro_as_sync

            storage = run_coro_as_sync(storage)
    except Exception as exc:
        raise CacheStorageError(
            f"skip_unchanged: cannot load the cache storage block {slug!r} ({exc}); create it "
            "in Prefect (e.g. `prefect block create`), or set `cache: path:` instead; "
            "no node has run."
        ) from None
    if not isinstance(storage, WritableFileSystem):
        raise CacheStorageError(
            f"skip_unchanged: the block {slug!r} is a {type(storage).__name__}, not a writable "
            "file system (use e.g. a local-file-system, s3-bucket, gcs-bucket or azure block); "
            "no node has run."
        )
    return CacheStorage(
        records=storage,
        result_storage=storage,
        key_storage=None,
        prefix="kedro-prefect/",
        location=f"block {slug}",
    )


def _call(block: Any, method: str, *args: Any) -> Any:
    """A storage block method, called synchronously (some blocks only have async ones)."""
    result = getattr(block, method)(*args)
    if inspect.iscoroutine(result):
        from prefect.utilities.asyncutils import run_coro_as_sync

        result = run_coro_as_sync(result)
    return result
