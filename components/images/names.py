"""Stage image names, ``[<registry>/]solarpipe-<stage>:<version>-<content>``: the one place that
spells them.

The tag changes whenever the code in the image changes: it is the package version plus a digest
of the build inputs (``docker/Dockerfile`` and the files its context admits: ``pyproject.toml``,
``README.md``, ``components/``, the two build helpers in ``docker/``). Two builds of the same
tree give the same tag; any edit gives a new one, so a node never runs a stale image under an
old name and KFP's cache key (which includes the image) changes with the code.

Used by ``solarpipe images build``, ``solarpipe run-stage`` and the Kubeflow pipeline.
"""

from __future__ import annotations

import hashlib
from importlib.metadata import version
from pathlib import Path

from components.core.errors import UsageError

# Every stage with an image, in pipeline order; each is a target of docker/Dockerfile.
STAGES = ("prepare", "preprocess", "preview", "train", "export", "evaluate", "detect")
# The stages whose images carry torch (one shared torch layer).
TORCH_STAGES = ("train", "export", "evaluate", "detect")

SOURCE_TREE = Path(__file__).resolve().parents[2]
DOCKERFILE = Path("docker") / "Dockerfile"
# What the image build reads (docker/Dockerfile and what .dockerignore lets into the context).
BUILD_INPUTS = (
    "docker/Dockerfile",
    "docker/extra_requirements.py",
    "docker/pip-with-build-secrets.sh",
    "pyproject.toml",
    "README.md",
    "components",
)
DIGEST_LENGTH = 12


def package_version() -> str:
    """The installed ``solarpipe`` distribution's version."""
    return version("solarpipe")


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    return stage


def _build_files(tree: Path) -> list[Path]:
    files: list[Path] = []
    for name in BUILD_INPUTS:
        path = tree / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [
                found
                for found in path.rglob("*")
                if found.is_file() and "__pycache__" not in found.parts and found.suffix != ".pyc"
            ]
    return sorted(files)


def source_digest(tree: Path = SOURCE_TREE) -> str | None:
    """A digest of the image build inputs in ``tree``; None outside a source checkout."""
    if not (tree / DOCKERFILE).is_file():
        return None
    digest = hashlib.sha256()
    for path in _build_files(tree):
        digest.update(path.relative_to(tree).as_posix().encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:DIGEST_LENGTH]


def default_tag(tree: Path = SOURCE_TREE) -> str:
    """``<version>-<digest of the build inputs>``; the bare version outside a source checkout."""
    digest = source_digest(tree)
    return f"{package_version()}-{digest}" if digest else package_version()


def image_name(stage: str, tag: str | None = None, registry: str | None = None) -> str:
    """``solarpipe-<stage>:<tag>`` (tag defaults to :func:`default_tag`), under ``registry``."""
    repository = f"solarpipe-{check_stage(stage)}"
    if registry:
        repository = f"{registry.rstrip('/')}/{repository}"
    return f"{repository}:{tag or default_tag()}"
