"""Kedro's ``MemoryDataset``: the copy mode it infers for data given without one.

Relies on ``kedro.io.memory_dataset._infer_copy_mode``: ``copy`` for a pandas ``DataFrame`` or a
numpy array, ``assign`` for another ``DataFrame`` or an ibis table, ``deepcopy`` for the rest.
Kedro imports pandas, numpy and ibis to tell; :func:`infer_copy_mode` gives the same answer
without importing them: data of their types cannot exist in a process that has not imported
them. A worker process of ``task_runner=process`` that runs pure-Python nodes otherwise imports
pandas (~0.3 s) before its first node.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Literal

from kedro_prefect._upstream import Contract


def _same_answers(fn: Any) -> bool:
    samples: list[Any] = [1, {"a": [1]}, "text", type("DataFrame", (), {})()]
    for module, make in (("pandas", "DataFrame"), ("numpy", "array")):
        with contextlib.suppress(ImportError):
            samples.append(getattr(__import__(module), make)([[1]]))
    return all(fn(data) == infer_copy_mode(data) for data in samples)


CONTRACTS = (
    Contract(
        "kedro.io.memory_dataset:_infer_copy_mode",
        "tell a MemoryDataset's copy mode on a worker without importing pandas, numpy or ibis",
        check=_same_answers,
    ),
)


def infer_copy_mode(data: Any) -> Literal["copy", "assign", "deepcopy"]:
    """The copy mode Kedro's ``MemoryDataset`` infers for ``data``, without importing pandas,
    numpy or ibis where they are not imported yet."""
    pandas, numpy, ibis = (sys.modules.get(name) for name in ("pandas", "numpy", "ibis"))
    if _is(data, pandas, "DataFrame") or _is(data, numpy, "ndarray"):
        return "copy"
    if type(data).__name__ == "DataFrame" or _is(data, ibis, "Table"):
        return "assign"
    return "deepcopy"


def _is(data: Any, module: Any, name: str) -> bool:
    cls = getattr(module, name, None)
    return isinstance(cls, type) and isinstance(data, cls)
