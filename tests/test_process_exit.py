"""At exit, a process that built a PrefectRunner freezes what is left, after finalizing garbage."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import atexit, gc, sys
    from pathlib import Path

    out = Path(sys.argv[1])
    # Registered before the runner's handler, so it runs after it.
    atexit.register(lambda: out.with_suffix(".frozen").write_text(str(gc.get_freeze_count())))

    from kedro_prefect import PrefectRunner

    PrefectRunner()
    gc.disable()  # only the exit handler's collection can finalize the cycle below


    class Flushes:
        def __init__(self):
            self.me = self  # a reference cycle: freed by the garbage collector only

        def __del__(self):
            out.write_text("flushed")


    Flushes()
    """
)


def test_garbage_made_before_exit_is_still_finalized_and_the_rest_frozen(tmp_path: Path):
    out = tmp_path / "out.txt"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)],
        env={**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"},  # no ephemeral API
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text() == "flushed"
    # Everything still alive was frozen: CPython's exit collections skip it.
    assert int(out.with_suffix(".frozen").read_text()) > 10_000
