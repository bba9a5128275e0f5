"""Fingerprints for ``skip_unchanged``: a node's code, the values it reads, the files it loads.

Every fingerprint is a SHA-256 hex digest. What goes into one:

* node code: :mod:`kedro_prefect.cache.code` (the node's function and the project code it
  reaches);
* a value (parameters, in-memory data no node of the run produces, data of datasets with no
  file): JSON of plain values, pandas' own row hashes for DataFrames and Series, else a pickle;
* a file (or every file under a directory) behind a dataset: the content checksum the storage
  reports (``ETag``, ``md5``, ``crc32c``...), else a hash of its content, remembered by size,
  modification time and inode (:class:`FileMemo`) so that an untouched file is not read again;
  for a versioned dataset, the version it loads.

Nothing secret is stored: only digests are, and paths are masked with the project's credential
values (:func:`kedro_prefect.execution.redaction.redact`) before they are hashed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from collections.abc import Callable
from typing import Any, Protocol

logger = logging.getLogger(__name__)

#: Bumped when the rules change, so fingerprints of an older kedro-prefect never match.
RULES_VERSION = "2"  # 2: the code part follows the project code a node reaches
#: Keys of ``fsspec`` file info holding a content checksum, in order of preference.
CHECKSUM_KEYS = ("checksum", "md5", "md5Hash", "ETag", "etag", "crc32c", "sha256")
CHUNK = 8 * 1024 * 1024


def digest(*parts: Any) -> str:
    """SHA-256 of the JSON of ``parts`` (keys sorted)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def value_fingerprint(value: Any) -> str | None:
    """A fingerprint of ``value``; ``None`` if it can be neither serialised nor hashed."""
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)
        return hashlib.sha256(b"json:" + text.encode()).hexdigest()
    except (TypeError, ValueError):
        pass
    pandas_digest = _pandas_fingerprint(value)
    if pandas_digest is not None:
        return pandas_digest
    try:
        data = pickle.dumps(value, protocol=5)
    except Exception:
        try:
            import cloudpickle

            data = cloudpickle.dumps(value)
        except Exception as exc:
            logger.debug("Cannot fingerprint a %s: %r", type(value).__name__, exc)
            return None
    return hashlib.sha256(b"pickle:" + data).hexdigest()


def _pandas_fingerprint(value: Any) -> str | None:
    import sys

    pandas = sys.modules.get("pandas")
    if pandas is None or not isinstance(value, pandas.DataFrame | pandas.Series):
        return None
    try:
        rows = pandas.util.hash_pandas_object(value, index=True).to_numpy().tobytes()
    except Exception:  # unhashable cells (lists, dicts): fall back to pickle
        return None
    shape: dict[str, Any]
    if isinstance(value, pandas.DataFrame):
        shape = {
            "columns": [str(c) for c in value.columns],
            "dtypes": [str(d) for d in value.dtypes],
        }
    else:
        shape = {"name": str(value.name), "dtypes": [str(value.dtype)]}
    return hashlib.sha256(b"pandas:" + rows + json.dumps(shape).encode()).hexdigest()


class FileMemo(Protocol):
    """Remembers the content hash of a file by its path and stat (size, mtime, inode)."""

    def get(self, path: str, stat: str) -> str | None: ...

    def put(self, path: str, stat: str, content_hash: str) -> None: ...


def file_fingerprint(filesystem: Any, path: str, memo: FileMemo) -> str | None:
    """The content of ``path`` (a file, or every file under a directory); ``None`` if absent."""
    try:
        info = filesystem.info(path)
    except FileNotFoundError:
        return None
    if info.get("type") == "directory":
        found = filesystem.find(path, withdirs=False, detail=True)
        parts = []
        for name in sorted(found):
            part = _one_file(filesystem, name, found[name], memo)
            parts.append([name[len(path) :], part])
        return digest("directory", parts)
    return _one_file(filesystem, path, info, memo)


def _one_file(filesystem: Any, path: str, info: dict[str, Any], memo: FileMemo) -> str:
    for key in CHECKSUM_KEYS:
        if info.get(key):
            return digest("checksum", key, str(info[key]), info.get("size"))
    stat = digest(info.get("size"), info.get("mtime"), info.get("ino"), info.get("LastModified"))
    known = memo.get(path, stat)
    if known is not None:
        return known
    hasher = hashlib.blake2b(digest_size=32)
    with filesystem.open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            hasher.update(chunk)
    content_hash = digest("content", hasher.hexdigest())
    memo.put(path, stat, content_hash)
    return content_hash


def dataset_fingerprint(
    dataset: Any, memo: FileMemo, mask: Callable[[str], str]
) -> tuple[str | None, str]:
    """The fingerprint of what ``dataset`` would load, and how it was taken.

    Returns ``(fingerprint, how)``; the fingerprint is ``None`` when the data cannot be
    fingerprinted (the node reading it then always runs).
    """
    from kedro.io import MemoryDataset

    from kedro_prefect._upstream.kedro import dataset_file, is_versioned

    if is_versioned(dataset):
        try:
            version = dataset.resolve_load_version()
        except Exception as exc:
            logger.debug("No load version of %r: %r", dataset, exc)
            return None, "version"
        location = dataset_file(dataset)
        path = mask(location[1]) if location else ""
        return digest("version", type(dataset).__qualname__, path, version), "version"
    if not isinstance(dataset, MemoryDataset):
        location = dataset_file(dataset)
        if location is not None:
            filesystem, path = location
            try:
                content = file_fingerprint(filesystem, path, memo)
            except Exception as exc:
                logger.debug("Cannot fingerprint file %s: %r", mask(path), exc)
                return None, "file"
            return (digest("file", mask(path), content) if content else None), "file"
    try:
        value = dataset.load()
    except Exception as exc:
        logger.debug("Cannot load %r to fingerprint it: %r", type(dataset).__name__, exc)
        return None, "data"
    return value_fingerprint(value), "data"
