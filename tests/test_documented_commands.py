"""Every ``solarpipe``, ``python pipeline.py`` and ``python -m components.<stage>`` command that
the README and the docs show in a ``bash`` block parses with the real command-line parsers, and
its ``--set`` overrides name real params with valid values.

Parsing runs nothing (no server, no cluster): it catches the drift that breaks a pasted command
(a renamed option, a dropped subcommand, a params key that moved). The commands that run on
this machine are run for real elsewhere: the quickstart's and the serve commands
(``test_serve_commands.py``), run-local (``test_pipeline_run_local.py``), run-stage
(``test_containers.py``), the DVC graph (``test_dvc_graph.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
from collections.abc import Iterator

import pytest

from components.cli import build_parser
from components.core.params import load_params
from components.core.stage import stage_parser
from components.core.stages import BY_NAME
from tests.readme_text import DOCUMENTS, REPO, documented_lines

PLACEHOLDER = re.compile(r"<([^<>\s]+(?: [^<>\s]+)*)>")
PYTHON = {"python", ".venv/bin/python"}


def commands(line: str) -> Iterator[list[str]]:
    """The simple commands of a shell line (split on ``&&``, ``;``, ``|``, ``&``), placeholders
    such as ``<run id>`` filled in, comments dropped."""
    filled = PLACEHOLDER.sub(lambda match: match[1].replace(" ", "-"), line)
    lexer = shlex.shlex(filled, posix=True, punctuation_chars="&;|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    current: list[str] = []
    for token in lexer:
        if set(token) <= set("&;|"):
            if current:
                yield current
            current = []
        else:
            current.append(token)
    if current:
        yield current


def pipeline_parser() -> argparse.ArgumentParser:
    spec = importlib.util.spec_from_file_location("documented_pipeline", REPO / "pipeline.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parser = argparse.ArgumentParser(prog="python pipeline.py")
    parser.add_argument("-v", "--verbose", action="store_true")
    module.configure(parser)
    return parser


def parser_and_arguments(command: list[str]) -> tuple[str, argparse.ArgumentParser, list[str]]:
    """Which parser reads ``command`` and its arguments; ("", …) when it is not ours."""
    program, *arguments = command
    if program == "solarpipe":
        return "solarpipe", build_parser(), arguments
    if program in PYTHON and arguments[:1] == ["pipeline.py"]:
        return "pipeline.py", pipeline_parser(), arguments[1:]
    if program in PYTHON and arguments[:1] == ["-m"] and arguments[1].startswith("components."):
        name = arguments[1].removeprefix("components.")
        if name in BY_NAME:
            return arguments[1], stage_parser(BY_NAME[name], ""), arguments[2:]
    return "", argparse.ArgumentParser(), []


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for document in DOCUMENTS:
        for line in documented_lines(document):
            for command in commands(line):
                if parser_and_arguments(command)[0]:
                    found.append((f"{document.relative_to(REPO)}: {shlex.join(command)}", command))
    return found


DOCUMENTED = documented_commands()


def test_the_documents_show_commands_of_every_kind() -> None:
    kinds = {parser_and_arguments(command)[0] for _, command in DOCUMENTED}
    assert {"solarpipe", "pipeline.py", "components.prepare"} <= kinds
    assert len(DOCUMENTED) >= 20


@pytest.mark.parametrize("command", [c for _, c in DOCUMENTED], ids=[i for i, _ in DOCUMENTED])
def test_documented_command_parses_and_its_settings_are_valid(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, parser, arguments = parser_and_arguments(command)
    try:
        parsed = parser.parse_args(arguments)
    except SystemExit as exc:
        pytest.fail(f"{shlex.join(command)}: {capsys.readouterr().err.strip()} (exit {exc.code})")
    overrides = getattr(parsed, "overrides", None) or []
    profile = getattr(parsed, "profile", None)
    if overrides or profile:
        load_params(None, overrides, profile)


def test_a_renamed_option_is_caught(capsys: pytest.CaptureFixture[str]) -> None:
    """The check itself can fail: an option that does not exist is refused."""
    _, parser, arguments = parser_and_arguments(
        ["python", "-m", "components.prepare", "--raster", "a.tif", "--tiles", "t",
         "--manifest", "m.json", "--tile-prefix", "t"]
    )  # fmt: skip
    with pytest.raises(SystemExit):
        parser.parse_args(arguments)
    assert "--tile-prefix" in capsys.readouterr().err
