"""The README's newcomer commands are the ones CI runs."""

import re

from tests.helpers import REPO


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    return [
        line for block in blocks for line in block.splitlines() if line and not line.startswith("#")
    ]


def test_readme_opens_with_example_and_test_commands():
    commands = _readme_commands()
    assert "kedro run --runner=kedro_prefect.PrefectRunner" in commands[0]
    assert commands[0].startswith("python3 -m venv")
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci_lines
