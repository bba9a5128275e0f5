"""The only place that touches what Prefect, Kedro, Dask and prefect-dask do not promise.

Every use of a private name (``_concurrency``, ``_create_hook_manager``, ``_wrapped_future``...),
every import of ``prefect.server`` and every patch of a third-party object lives in a module of
this package, one per upstream:

* :mod:`.prefect`: Prefect's task engine, client context, settings, result storage, logging;
* :mod:`.prefect_logs`: the payload of a log line sent to the API, built without a model;
* :mod:`.prefect_server`: Prefect's API server app, as the ephemeral API process serves it;
* :mod:`.prefect_deploy`: a deployment's parameter form, and serving what the server has;
* :mod:`.prefect_dask`: prefect-dask's ``DaskTaskRunner`` and its futures;
* :mod:`.dask_processes`: how distributed starts worker processes, and Python's fork server;
* :mod:`.kedro`: Kedro's hook manager and CLI helpers;
* :mod:`.mlflow`: MLflow's active run per thread (when a plugin such as kedro-mlflow uses it),
  and kedro-mlflow's run settings on the workers;
* :mod:`.kedro_viz`: kedro-viz's dataset statistics, gathered on the workers.

Each module opens with the upstream behaviour it relies on and what that buys, and lists its
targets as :class:`Contract` objects in ``CONTRACTS``. ``tests/upstream/test_contracts.py`` checks
every contract against the installed versions, so a release that renames or removes a target
fails a test instead of silently bringing back a slow path or breaking runs.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["Contract", "all_contracts", "installed_version", "version_at_least"]


@dataclass(frozen=True)
class Contract:
    """One thing kedro-prefect takes from an upstream that the upstream does not promise.

    Args:
        target: ``"module:attribute.path"``, or ``"module"`` for a whole module.
        why: What kedro-prefect does with it and what it buys.
        expected: Whether the installed upstream should have the target (a version gate):
            targets that only exist from some version on, or that a newer version removed,
            are only required where they are expected.
        check: An extra check of the target's shape (e.g. a parameter in its signature).
    """

    target: str
    why: str
    expected: Callable[[], bool] = field(default=lambda: True)
    check: Callable[[Any], bool] | None = None

    def resolve(self) -> Any:
        """The target's object; raises ``ImportError`` or ``AttributeError`` if it is gone."""
        module_name, _, path = self.target.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in filter(None, path.split(".")):
            obj = getattr(obj, part)
        return obj

    def holds(self) -> bool:
        """Whether the installed upstream has the target (and passes ``check``)."""
        try:
            obj = self.resolve()
        except (ImportError, AttributeError):
            return False
        return self.check is None or bool(self.check(obj))


@functools.cache
def installed_version(distribution: str) -> tuple[int, ...]:
    """The release of an installed distribution as ints; ``()`` if it is not installed.

    Pre-release and local parts are cut off: ``3.7.5.dev1`` -> ``(3, 7, 5)``, ``1.0.0rc1`` ->
    ``(1, 0, 0)``.
    """
    try:
        text = version(distribution)
    except PackageNotFoundError:
        return ()
    parts: list[int] = []
    for part in text.split("."):
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(part):
            break
    return tuple(parts)


def version_at_least(distribution: str, *minimum: int) -> bool:
    """Whether ``distribution`` is installed at ``minimum`` or newer."""
    installed = installed_version(distribution)
    return bool(installed) and installed >= minimum


def all_contracts() -> dict[str, tuple[Contract, ...]]:
    """Every module's contracts, by module name (imports the modules, not the upstreams)."""
    names = (
        "prefect",
        "prefect_tasks",
        "prefect_logs",
        "prefect_pool",
        "prefect_server",
        "prefect_deploy",
        "prefect_dask",
        "dask_processes",
        "kedro",
        "kedro_memory",
        "mlflow",
        "kedro_viz",
    )
    return {name: importlib.import_module(f"{__name__}.{name}").CONTRACTS for name in names}
