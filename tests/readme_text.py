"""Commands as the README and the docs print them: the lines of their ``bash`` blocks and the
commands in inline code, found by how they start, for the tests that parse or run them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCUMENTS = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "docker" / "README.md"]
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
COMMENT = re.compile(r"\s+#\s.*$")


def documented_lines(document: Path) -> Iterator[str]:
    """The command lines of the document's bash blocks, continuations joined."""
    for block in BASH_BLOCK.findall(document.read_text()):
        yield from block.replace("\\\n", " ").splitlines()


def readme_line(start: str, document: Path = README) -> str:
    """The one bash-block line of ``document`` that starts with ``start``, its comment dropped."""
    found = [
        COMMENT.sub("", line).strip()
        for line in documented_lines(document)
        if line.startswith(start)
    ]
    assert len(found) == 1, f"{document.name}: {len(found)} lines start with {start!r}"
    return found[0]


def inline_commands(start: str, document: Path = README) -> list[str]:
    """Every inline-code span of ``document`` that starts with ``start`` (ellipses left out)."""
    return sorted(
        {code for code in INLINE_CODE.findall(document.read_text()) if code.startswith(start)}
        - {code for code in INLINE_CODE.findall(document.read_text()) if "…" in code}
    )
