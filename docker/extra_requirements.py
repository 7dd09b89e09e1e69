"""Write pip requirement files from pyproject.toml: ``core.txt`` and one ``<extra>.txt`` per extra.

Used inside the image build (standard library only) so that each dependency layer is keyed on
its own requirements, not on the project's code: ``torch.txt`` changes only when the torch pins
do. Self references such as ``solarpipe[torch]`` are expanded.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def expand_extra(project: dict, extra: str, seen: frozenset[str] = frozenset()) -> list[str]:
    """The requirements of one extra, with ``<project>[a,b]`` entries replaced by theirs."""
    self_reference = re.compile(rf"^\s*{re.escape(project['name'])}\s*\[([^\]]+)\]\s*$", re.I)
    requirements: list[str] = []
    for requirement in project.get("optional-dependencies", {})[extra]:
        match = self_reference.match(requirement)
        if not match:
            requirements.append(requirement)
            continue
        for included in (name.strip() for name in match.group(1).split(",")):
            if included not in seen:
                requirements += expand_extra(project, included, seen | {extra})
    return list(dict.fromkeys(requirements))


def main(pyproject_path: str, out_dir: str) -> None:
    project = tomllib.loads(Path(pyproject_path).read_text())["project"]
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    (target / "core.txt").write_text("".join(f"{r}\n" for r in project["dependencies"]))
    for extra in project.get("optional-dependencies", {}):
        lines = expand_extra(project, extra)
        (target / f"{extra}.txt").write_text("".join(f"{r}\n" for r in lines))


if __name__ == "__main__":
    main(*sys.argv[1:3])
