"""Every command shown in docs/quickstart.md is exercised by a test.

The README's example command runs here, exactly as written after its set-up part, in a copy of
the repository layout; the server command of the quick start runs in
``tests/integration/test_observability.py`` (its ``server_run`` fixture).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import EXAMPLE_PROJECT, KEDRO, REPO

pytestmark = pytest.mark.integration

QUICKSTART = REPO / "docs" / "quickstart.md"
SETUP = 'python3 -m venv .venv && .venv/bin/pip install -e ".[example]" && '


def bash_commands(path: Path) -> list[str]:
    """The command lines of the ```bash blocks of a markdown file (comments left out)."""
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(), re.S)
    return [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def quickstart_server_command() -> tuple[str, list[str]]:
    """The quick start's ``kedro run`` against a server: (API URL it exports, kedro arguments)."""
    commands = bash_commands(QUICKSTART)
    (export,) = [c for c in commands if c.startswith("export PREFECT_API_URL=")]
    (run,) = [c for c in commands if c.startswith("kedro run ") and "--runner-params" in c]
    return export.split("=", 1)[1], run.split()[1:]


def test_every_quickstart_command_is_exercised():
    readme = bash_commands(REPO / "README.md")
    exercised = {
        readme[0]: "test_readme_example_command_runs (below)",
        readme[1]: ".ci/run (tests/test_readme.py checks it is there word for word)",
        "prefect server start": "the prefect_server fixture (tests/conftest.py)",
        "kedro run --runner=kedro_prefect.PrefectRunner": "test_readme_example_command_runs",
    }
    api_url, args = quickstart_server_command()
    exercised[f"export PREFECT_API_URL={api_url}"] = "server_run fixture (its server's URL)"
    exercised["kedro " + " ".join(args)] = "server_run fixture in test_observability.py"
    unexercised = [c for c in bash_commands(QUICKSTART) if c not in exercised]
    assert not unexercised, f"quick start commands no test runs: {unexercised}"
    assert api_url == "http://127.0.0.1:4200/api"  # `prefect server start`'s default address


def test_readme_example_command_runs(tmp_path):
    """README's first command, minus creating the venv: runs the example, writes the reports."""
    example_command = bash_commands(REPO / "README.md")[0]
    assert example_command.startswith(SETUP)
    command = example_command.removeprefix(SETUP)
    # The repository layout the command expects: .venv/bin/kedro two levels above the example.
    repo = tmp_path / "repo"
    project = repo / "examples" / "sales_demo"
    shutil.copytree(
        EXAMPLE_PROJECT,
        project,
        ignore=shutil.ignore_patterns(
            "*.parquet", "region_report.csv", "top_products.csv", "__pycache__", "logs"
        ),
    )
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "kedro").symlink_to(KEDRO)

    result = subprocess.run(
        ["bash", "-c", command],
        cwd=repo,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    reporting = project / "data" / "08_reporting"
    report = pd.read_csv(reporting / "region_report.csv")
    assert sorted(report["region"]) == ["east", "north", "south", "west"]
    assert (report["revenue"] > 0).all()
    top = pd.read_csv(reporting / "top_products.csv")
    assert len(top) > 0 and list(top.columns) == ["name", "revenue"]
    for parquet in ("02_intermediate/orders.parquet", "03_primary/order_lines.parquet"):
        assert (project / "data" / parquet).exists(), parquet
