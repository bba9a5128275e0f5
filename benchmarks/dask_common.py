"""What the Dask benchmarks share: the environment they run in, quiet logs, placement on/off."""

from __future__ import annotations

import logging
import os
import tempfile


def bench_environment() -> None:
    """No telemetry, quiet Prefect, an own PREFECT_HOME unless a server is given (call first)."""
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    if "PREFECT_API_URL" not in os.environ:
        os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="kedro-prefect-bench-"))


def quiet_logs() -> None:
    """Only warnings from Kedro and kedro-prefect, errors from Dask (Kedro re-applies its
    logging configuration on its first run: call again after a warm-up run)."""
    for name, level in (
        ("kedro", logging.WARNING),
        ("kedro_prefect", logging.WARNING),
        ("distributed", logging.ERROR),
    ):
        logging.getLogger(name).setLevel(level)


def dask_placement(enabled: bool) -> None:
    """Switch kedro-prefect's placement on or off (off: Dask decides, as before)."""
    try:
        from kedro_prefect.dask import placement
    except ImportError:  # a kedro-prefect without placement (for before/after comparisons)
        return

    original = placement.__dict__.setdefault("_original_choose", placement.Placement.choose)
    placement.Placement.choose = original if enabled else (lambda self, *a, **k: None)
