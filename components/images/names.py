"""Stage image names, ``[<registry>/]solarpipe-<stage>:<version>-<content>``: the one place that
spells them.

The tag changes whenever the code in the image changes: it is the package version plus a digest
of the build inputs (``docker/Dockerfile`` and the files its context admits: ``pyproject.toml``,
``components/``, the two build helpers in ``docker/``; not ``README.md``, which only fills the
wheel's description). Two builds of the same tree give the same tag; any code edit gives a new
one, so a node never runs a stale image under an old name and KFP's cache key (which includes
the image) changes with the code.

The images are the declared stages' (:mod:`components.core.stages`) plus ``solarpipe-pipeline``,
a light image with the ``solarpipe`` command and kfp, for the pipeline's own small tasks (the run's
params document). Used by ``solarpipe images build``, ``solarpipe run-stage`` and the Kubeflow
pipeline.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from components.core.errors import UsageError
from components.core.stages import STAGES, ImageFamily


@dataclass(frozen=True)
class ImageSpec:
    """One image: built from docker/Dockerfile's ``image`` target with these build arguments."""

    name: str  # solarpipe-<name>
    family: ImageFamily  # light: no torch; torch: on the shared torch layer
    extra: str  # the pyproject extra installed on top of the family
    entrypoint: str  # the module the image runs (python -m <entrypoint>)
    # Beyond the stages: the options naming files it reads (run-stage mounts their folders) and
    # whether it needs the host's network (a server whose port must be reachable)
    reads: tuple[str, ...] = ()
    host_network: bool = False


PIPELINE_IMAGE = "pipeline"
SERVE_IMAGE = "serve"
IMAGES: dict[str, ImageSpec] = {
    **{
        stage.name: ImageSpec(stage.name, stage.image, stage.name, stage.module) for stage in STAGES
    },
    # the pipeline's own small tasks: the run's params, the quality gate, the model card, deploy
    PIPELINE_IMAGE: ImageSpec(PIPELINE_IMAGE, "light", "pipeline", "components.cli"),
    # the BentoML server of the exported model (k8s/serving runs it)
    SERVE_IMAGE: ImageSpec(
        SERVE_IMAGE, "torch", "serve", "components.serving", reads=("model",), host_network=True
    ),
}

SOURCE_TREE = Path(__file__).resolve().parents[2]
DOCKERFILE = Path("docker") / "Dockerfile"
# What the image build reads (docker/Dockerfile and what .dockerignore lets into the context).
BUILD_INPUTS = (
    "docker/Dockerfile",
    "docker/extra_requirements.py",
    "docker/pip-with-build-secrets.sh",
    "pyproject.toml",
    "components",
)
DIGEST_LENGTH = 12
# What `images build --push` pushed: reference → registry digest; compile pins images to them.
PUSHED_RECORD = SOURCE_TREE / ".solarpipe" / "pushed-images.json"


def package_version() -> str:
    """The installed ``solarpipe`` distribution's version."""
    return version("solarpipe")


def check_image(name: str) -> str:
    if name not in IMAGES:
        raise UsageError(f"unknown image {name!r}; images: {', '.join(IMAGES)}")
    return name


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


def image_name(name: str, tag: str | None = None, registry: str | None = None) -> str:
    """``solarpipe-<name>:<tag>`` (tag defaults to :func:`default_tag`), under ``registry``."""
    repository = f"solarpipe-{check_image(name)}"
    if registry:
        repository = f"{registry.rstrip('/')}/{repository}"
    return f"{repository}:{tag or default_tag()}"


def pushed_digests() -> dict[str, str]:
    """``{image reference: sha256 digest}`` of the images pushed from this tree."""
    try:
        return dict(json.loads(PUSHED_RECORD.read_text()))
    except FileNotFoundError:
        return {}


def record_push(reference: str, digest: str) -> None:
    """Remember that ``reference`` was pushed with ``digest`` (``sha256:…``)."""
    pushed = {**pushed_digests(), reference: digest}
    PUSHED_RECORD.parent.mkdir(parents=True, exist_ok=True)
    PUSHED_RECORD.write_text(json.dumps(pushed, indent=2, sort_keys=True) + "\n")


def pinned(reference: str) -> str:
    """``reference@sha256:…`` when this tree pushed it, else ``reference``."""
    digest = pushed_digests().get(reference)
    return f"{reference}@{digest}" if digest else reference
