"""The README's promises: its first commands exist, and its params reference is current."""

from __future__ import annotations

import re
from pathlib import Path

from components.commands.params import params_reference

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_readme_starts_with_the_two_commands_and_they_exist() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].split() for line in first_block.splitlines() if line.strip()]
    assert commands == [["bash", "scripts/quickstart.sh"], ["bash", "scripts/test.sh"]]
    assert all((REPO / command[1]).is_file() for command in commands)


def test_ci_runs_the_readme_test_command() -> None:
    assert "bash scripts/test.sh" in (REPO / ".ci" / "run").read_text()


def test_params_reference_in_the_readme_is_current() -> None:
    assert params_reference() in README, (
        "README params reference is stale: paste `solarpipe params --reference` into it"
    )
