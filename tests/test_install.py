"""The README's install line, run as written in a fresh virtual environment.

kedro-prefect is not on PyPI: the README installs it from a clone (``pip install
path/to/kedro-prefect``). Here that line runs word for word with the path pointing at this
repository, into a new venv. Nothing is downloaded: the venv sees the test environment's
dependencies (without its kedro-prefect) through a ``.pth`` file, and pip is told to stay
offline (``--no-index --no-deps --no-build-isolation``: hatchling comes from the test extra).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import kedro_prefect
from tests.helpers import REPO

PLACEHOLDER = "path/to/kedro-prefect"


def _install_line() -> str:
    """The first command of the README's "In your own project" block."""
    section = (REPO / "README.md").read_text().split("## In your own project", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return next(line for line in block.splitlines() if line and not line.startswith("#"))


def _dependencies_without_kedro_prefect(target: Path) -> Path:
    """A directory of links to the test environment's packages, kedro-prefect's left out."""
    target.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name.lower().replace("-", "_")
        if name.startswith(("kedro_prefect", "_kedro_prefect", "__editable__")):
            continue
        (target / entry.name).symlink_to(entry)
    return target


def test_the_readmes_install_line_installs_the_package_into_a_fresh_venv(tmp_path):
    line = _install_line()
    command = line.split("#", 1)[0].split()
    assert command == ["pip", "install", PLACEHOLDER], line

    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    deps = _dependencies_without_kedro_prefect(tmp_path / "deps")
    (site / "test-dependencies.pth").write_text(f"{deps}\n")

    offline = ["--no-index", "--no-deps", "--no-build-isolation", "--quiet"]
    args = [arg.replace(PLACEHOLDER, str(REPO)) for arg in command[1:]]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), *args, *offline],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    check = subprocess.run(
        [
            python,
            "-c",
            "import importlib.metadata as m, kedro_prefect;"
            "from kedro.utils import load_obj;"
            "load_obj('kedro_prefect.PrefectRunner');"
            "print('RESULT', kedro_prefect.__file__, m.version('kedro-prefect'),"
            " sorted(e.value for e in m.entry_points(group='kedro.project_commands')))",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    result = next(line for line in check.stdout.splitlines() if line.startswith("RESULT "))
    _, where, version, commands = result.split(" ", 3)
    assert Path(where).is_relative_to(site)  # the installed copy, not this checkout
    assert version == kedro_prefect.__version__
    assert "kedro_prefect.cli:commands" in commands  # `kedro prefect ...` is registered
