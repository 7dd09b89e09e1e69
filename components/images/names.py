"""Stage image names, ``[<registry>/]solarpipe-<stage>:<tag>``: the one place that spells them.

Used by ``solarpipe images build``, ``solarpipe run-stage`` and the Kubeflow pipeline.
"""

from __future__ import annotations

from importlib.metadata import version

from components.core.errors import UsageError

# Every stage with an image, in pipeline order; each is a target of docker/Dockerfile.
STAGES = ("prepare", "preprocess", "preview", "train", "export", "evaluate", "detect")
# The stages whose images carry torch (one shared torch layer).
TORCH_STAGES = ("train", "export", "evaluate", "detect")


def package_version() -> str:
    """The installed ``solarpipe`` distribution's version: the default image tag."""
    return version("solarpipe")


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    return stage


def image_name(stage: str, tag: str | None = None, registry: str | None = None) -> str:
    """``solarpipe-<stage>:<tag>`` (tag defaults to the package version), under ``registry``."""
    repository = f"solarpipe-{check_stage(stage)}"
    if registry:
        repository = f"{registry.rstrip('/')}/{repository}"
    return f"{repository}:{tag or package_version()}"
