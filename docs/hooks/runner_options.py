"""mkdocs hook: replace ``<!-- runner-options -->`` with a table of ``RunnerOptions`` fields.

The table is generated from the code at build time (name, type, default, description of each
field of :class:`kedro_prefect.RunnerOptions`), so an option added there shows up in the docs
without editing them.
"""

from __future__ import annotations

import types
import typing
from typing import Any

MARKER = "<!-- runner-options -->"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, options_table())


def options_table() -> str:
    from pydantic_core import PydanticUndefined

    from kedro_prefect.config import RunnerOptions

    lines = ["| option | type | default | description |", "| --- | --- | --- | --- |"]
    for name, field in RunnerOptions.model_fields.items():
        if field.default_factory is not None:
            default = f"`{field.default_factory()!r}`"
        elif field.default is PydanticUndefined:
            default = "required"
        elif field.default is None:
            default = "unset"
        else:
            default = f"`{_literal(field.default)}`"
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| `{name}` | {_type_name(field.annotation, field.metadata)} | {default} "
            f"| {description} |"
        )
    return "\n".join(lines)


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _type_name(annotation: Any, metadata: list[Any] | None = None) -> str:
    """A reader's name for a field type: ``positive integer``, ``string or none``..."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        return _type_name(base, [*(metadata or []), *extra])
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(arg, metadata) for arg in typing.get_args(annotation)]
        return " or ".join(p for p in parts if p != "none") + (
            " (optional)" if "none" in parts else ""
        )
    if origin is typing.Literal:
        return " \\| ".join(f"`{_literal(arg)}`" for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "none"
    names = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "mapping"}
    name = names.get(annotation) or names.get(origin) or getattr(annotation, "__name__", "")
    name = name or str(annotation)
    bounds = [
        f"{op} {getattr(item, attr)}"
        for item in metadata or []
        for attr, op in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))
        if getattr(item, attr, None) is not None
    ]
    return f"{name} ({', '.join(bounds)})" if bounds else name
