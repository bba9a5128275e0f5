"""Where in the project's ``prefect.yml`` files a key is: the file and the line, for errors.

Kedro's config loader merges ``prefect*.yml`` of the base and the run environment into one
mapping, which says nothing of where a key came from. To name the file and the line of a bad
key, the files are read again here (YAML's node tree keeps each key's line), the run
environment's first since its keys win.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kedro.config import AbstractConfigLoader

#: File patterns of ``prefect.yml`` under an environment directory (those of the config loader).
_SUFFIXES = (".yml", ".yaml", ".json")


def shown_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it is inside it (``conf/base/...``)."""
    try:
        return Path(os.path.relpath(path)).as_posix() if Path(path).is_absolute() else str(path)
    except ValueError:
        return str(path)


def prefect_yml_files(config_loader: AbstractConfigLoader | None) -> list[Path]:
    """The local ``prefect*`` files the loader reads: run environment first, then base."""
    source = getattr(config_loader, "conf_source", None)
    if not source or "://" in str(source) or not Path(source).is_dir():
        return []
    envs = []
    run_env = getattr(config_loader, "env", None) or getattr(config_loader, "default_run_env", None)
    base_env = getattr(config_loader, "base_env", None)
    for env in (run_env, base_env):
        if env and env not in envs:
            envs.append(env)
    files: list[Path] = []
    for env in envs:
        folder = Path(source) / env
        found = [*folder.glob("prefect*"), *folder.glob("prefect*/**/*")]
        files += sorted(p for p in found if p.is_file() and p.suffix in _SUFFIXES)
    return files


def locate(files: Sequence[Path], loc: Sequence[Any]) -> str | None:
    """``conf/base/prefect.yml, line 14``: the first file holding the key path ``loc``.

    The key itself where the file has it, else its deepest parent that is there (a missing
    key is reported at the mapping that lacks it). None when no file has even the first key.
    """
    best: tuple[int, str] | None = None
    for path in files:
        found = _find(path, loc)
        if found is None:
            continue
        depth, line = found
        if best is None or depth > best[0]:
            best = (depth, f"{shown_path(path)}, line {line}")
        if depth == len(loc):
            break
    return best[1] if best else None


def _find(path: Path, loc: Sequence[Any]) -> tuple[int, int] | None:
    """(how many parts of ``loc`` were found, the 1-based line of the deepest) in ``path``."""
    import yaml

    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    found: tuple[int, int] | None = None
    for depth, part in enumerate(loc, start=1):
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    child, line = value, key.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node, found = child, (depth, line)
    return found


def yaml_syntax_error(exc: BaseException) -> str | None:
    """One line for Kedro's ``Invalid YAML or JSON file ...`` error, or None for another one.

    Kedro's message counts lines from 0 and drops YAML's reason; both come from the YAML error
    it chains (``__cause__``).
    """
    import yaml

    cause = exc.__cause__
    text = str(exc)
    if not text.startswith("Invalid YAML or JSON file ") or not isinstance(
        cause, yaml.MarkedYAMLError
    ):
        return None
    path = text.removeprefix("Invalid YAML or JSON file ").split(", unable to read line")[0]
    problem, start = cause.problem_mark, cause.context_mark
    reason = str(cause.problem or "not valid YAML")
    if cause.context and start is not None and problem is not None and start.line != problem.line:
        # Where the unclosed bracket or quote opened is where the mistake is.
        reason = f"{cause.context}, {reason} (line {problem.line + 1})"
    else:
        start = problem
    where = f"{shown_path(path)}, line {start.line + 1}" if start else shown_path(path)
    return (
        f"Invalid YAML in {where}: {reason}. Fix the syntax there "
        "(an unclosed bracket or quote, or a tab in the indentation)"
    )
