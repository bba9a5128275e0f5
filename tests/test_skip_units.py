"""``skip_unchanged`` pieces that need no run: option and ``cache:`` validation, fingerprints."""

from __future__ import annotations

import os
from pathlib import Path

import fsspec
import pytest

from kedro_prefect.cache.code import CodeFingerprints
from kedro_prefect.cache.fingerprint import file_fingerprint, value_fingerprint
from kedro_prefect.config import parse_runner_options, validate_project_config
from kedro_prefect.errors import PrefectRunnerConfigError, ProjectConfigError


class Memo(dict):
    def get(self, path, stat):
        known = super().get(path)
        return known[1] if known and known[0] == stat else None

    def put(self, path, stat, content_hash):
        self[path] = (stat, content_hash)


def test_skip_unchanged_is_a_strict_boolean_defaulting_to_false():
    assert parse_runner_options({}).skip_unchanged is False
    assert parse_runner_options({"skip_unchanged": True}).skip_unchanged is True
    with pytest.raises(PrefectRunnerConfigError, match="skip_unchanged='sometimes'"):
        parse_runner_options({"skip_unchanged": "sometimes"})
    with pytest.raises(PrefectRunnerConfigError, match="skip_unchanged=2"):
        parse_runner_options({"skip_unchanged": 2})


def test_prefect_yml_cache_section_is_validated():
    config = validate_project_config({"cache": {"path": "/tmp/x", "expiration_seconds": 60}})
    assert config.cache.path == "/tmp/x" and config.cache.expiration_seconds == 60
    assert validate_project_config({"runner": {"skip_unchanged": True}}).cache.path is None
    with pytest.raises(ProjectConfigError, match="either path or block"):
        validate_project_config({"cache": {"path": "/tmp/x", "block": "s3-bucket/c"}})
    with pytest.raises(ProjectConfigError, match=r"cache\.block: must be `<block-type-slug>"):
        validate_project_config({"cache": {"block": "kedro-cache"}})
    with pytest.raises(ProjectConfigError, match=r"unknown key 'cache\.dir'; allowed keys: path"):
        validate_project_config({"cache": {"dir": "/tmp/x"}})
    with pytest.raises(ProjectConfigError, match="skip_unchanged='yes please': Input should be"):
        validate_project_config({"runner": {"skip_unchanged": "yes please"}})


def test_value_fingerprints_follow_values_not_key_order():
    assert value_fingerprint({"a": 1, "b": [1, 2]}) == value_fingerprint({"b": [1, 2], "a": 1})
    assert value_fingerprint({"a": 1}) != value_fingerprint({"a": 2})
    assert value_fingerprint(1) != value_fingerprint("1")


def test_dataframe_fingerprint_sees_values_and_columns():
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    assert value_fingerprint(frame) == value_fingerprint(frame.copy())
    changed = frame.copy()
    changed.loc[1, "x"] = 3
    assert value_fingerprint(changed) != value_fingerprint(frame)
    assert value_fingerprint(frame.rename(columns={"y": "z"})) != value_fingerprint(frame)


def test_file_fingerprint_is_the_content_and_skips_reading_untouched_files(tmp_path: Path):
    fs = fsspec.filesystem("file")
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n")
    memo = Memo()
    first = file_fingerprint(fs, str(path), memo)

    path.write_text("a,b\n1,2\n")  # same content, new modification time: hashed again, equal
    os.utime(path, (1_000_000_000, 1_000_000_000))
    assert file_fingerprint(fs, str(path), memo) == first

    path.write_text("a,b\n9,9\n")  # same size, new content
    stat = path.stat()
    assert file_fingerprint(fs, str(path), memo) != first
    # Untouched (same size, modification time, inode): the remembered hash, the file unread.
    memo[str(path)] = (memo[str(path)][0], "remembered")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_fingerprint(fs, str(path), memo) == "remembered"
    assert file_fingerprint(fs, str(tmp_path / "missing.csv"), memo) is None


def test_directory_fingerprint_sees_every_file(tmp_path: Path):
    fs = fsspec.filesystem("file")
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "a.txt").write_text("a")
    before = file_fingerprint(fs, str(tmp_path / "parts"), Memo())
    (tmp_path / "parts" / "b.txt").write_text("b")
    assert file_fingerprint(fs, str(tmp_path / "parts"), Memo()) != before


def test_code_fingerprint_follows_source_and_wiring():
    from kedro.pipeline import node

    def double(x):
        return x * 2

    def triple(x):
        return x * 3

    def code_fingerprint(n):
        return CodeFingerprints(None).node(n)

    base = code_fingerprint(node(double, "a", "b", name="n"))
    assert code_fingerprint(node(double, "a", "b", name="n")) == base
    assert code_fingerprint(node(triple, "a", "b", name="n")) != base
    assert code_fingerprint(node(double, "a", "c", name="n")) != base
    assert code_fingerprint(node(lambda x: x * 2, "a", "b", name="n")) != base


HELPER_PROJECT = {
    "__init__.py": "",
    "nodes.py": """
from reach_demo import util
from reach_demo.util import scale as imported_scale
import pandas

LIMIT = 3


def direct(x):
    return _helper(x)


def _helper(x):
    return util.parse(x) + LIMIT


def via_import(x):
    return imported_scale(x)


def via_class(x):
    return util.Box(x).value()


def library_only(x):
    return pandas.Series([x]).sum()
""",
    "util.py": """
def parse(x):
    return _inner(x)


def _inner(x):
    return int(x)


def scale(x):
    return x * 2


class Box:
    def __init__(self, x):
        self.x = x

    def value(self):
        return _inner(self.x)
""",
}


def _reach_fingerprints(tmp_path, monkeypatch, edits=()):
    """Code fingerprints of the reach_demo nodes, the package written (with ``edits``) to a new
    directory and imported afresh."""
    import importlib
    import sys

    from kedro.pipeline import node

    root = tmp_path / f"v{len(list(tmp_path.iterdir()))}"
    package = root / "reach_demo"
    package.mkdir(parents=True)
    for name, text in HELPER_PROJECT.items():
        for old, new in edits:
            text = text.replace(old, new)
        (package / name).write_text(text)
    for name in [m for m in sys.modules if m.startswith("reach_demo")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(root))
    nodes = importlib.import_module("reach_demo.nodes")
    code = CodeFingerprints("reach_demo")
    names = ("direct", "via_import", "via_class", "library_only")
    return {name: code.node(node(getattr(nodes, name), "a", "b", name=name)) for name in names}


def test_code_fingerprint_follows_the_projects_helpers(tmp_path, monkeypatch):
    """A helper edit, in the node's module or another module of the project, directly or
    through other project functions or a class, changes the fingerprint of every node reaching
    it, and of no other node; a module constant a helper reads counts by its value."""
    base = _reach_fingerprints(tmp_path, monkeypatch)
    assert _reach_fingerprints(tmp_path, monkeypatch) == base

    inner = _reach_fingerprints(tmp_path, monkeypatch, [("return int(x)", "return int(x) + 1")])
    assert {n for n in base if inner[n] != base[n]} == {"direct", "via_class"}

    scale = _reach_fingerprints(tmp_path, monkeypatch, [("return x * 2", "return x * 3")])
    assert {n for n in base if scale[n] != base[n]} == {"via_import"}

    limit = _reach_fingerprints(tmp_path, monkeypatch, [("LIMIT = 3", "LIMIT = 4")])
    assert {n for n in base if limit[n] != base[n]} == {"direct"}


def test_summary_counts_skipped_nodes():
    from kedro.pipeline import Pipeline, node
    from prefect.states import Completed
    from rich.console import Console

    from kedro_prefect.observe.base import PipelineRun
    from kedro_prefect.observe.progress import summary

    def same(x):
        return x

    pipeline = Pipeline([node(same, "a", "b", name="one"), node(same, "b", "c", name="two")])
    run = PipelineRun(pipeline, None, "flow", ["__default__"])
    run.nodes["one"].state = Completed(name="Cached")
    run.nodes["two"].state = Completed()
    console = Console(width=200, record=True)
    console.print(summary(run))
    text = console.export_text()
    assert "2/2 nodes completed, 1 of them skipped as unchanged, in " in text
    assert run.nodes["one"].state_name == "skipped (unchanged)"


def test_dataset_fingerprint_uses_the_version_or_the_file(tmp_path: Path):
    from kedro.io import MemoryDataset, Version
    from kedro_datasets.text import TextDataset

    from kedro_prefect.cache.fingerprint import dataset_fingerprint

    def fingerprint(dataset):
        return dataset_fingerprint(dataset, Memo(), lambda text: text)

    versioned_path = str(tmp_path / "v.txt")
    TextDataset(filepath=versioned_path, version=Version(None, "2026-01-01T00.00.00.000Z")).save(
        "a"
    )
    first, how = fingerprint(TextDataset(filepath=versioned_path, version=Version(None, None)))
    assert how == "version" and first
    TextDataset(filepath=versioned_path, version=Version(None, "2026-01-02T00.00.00.000Z")).save(
        "a"
    )
    second, _ = fingerprint(TextDataset(filepath=versioned_path, version=Version(None, None)))
    assert second != first  # a new version, even with the same content

    plain = TextDataset(filepath=str(tmp_path / "p.txt"))
    assert fingerprint(plain) == (None, "file")  # no file yet: cannot be fingerprinted
    plain.save("x")
    taken, how = fingerprint(plain)
    assert how == "file" and taken == fingerprint(TextDataset(filepath=str(tmp_path / "p.txt")))[0]

    assert fingerprint(MemoryDataset({"a": 1}))[0] == fingerprint(MemoryDataset({"a": 1}))[0]
