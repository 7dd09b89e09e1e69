"""A copy of the project's image build inputs (and any other files) in a scratch folder: what
the image-tag tests change to see the references follow the code."""

from __future__ import annotations

import shutil
from pathlib import Path

from components.images.names import BUILD_INPUTS

REPO = Path(__file__).resolve().parents[1]


def copy_build_inputs(tree: Path, *others: str) -> Path:
    """``tree`` holding the build inputs and ``others`` (paths relative to the project)."""
    for name in (*BUILD_INPUTS, *others):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, tree / name)
    return tree
