"""Docker for the image and container tests: the engine and the built stage images, or a skip
that becomes a failure when SOLARPIPE_REQUIRE_DOCKER is set (CI builds the images first)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, NoReturn

import pytest

from components.core.errors import SolarpipeError
from components.images.engine import docker_client
from components.images.names import image_name


def skip_or_fail(reason: str) -> NoReturn:
    if os.environ.get("SOLARPIPE_REQUIRE_DOCKER"):
        pytest.fail(reason)
    pytest.skip(reason)


def engine_or_skip() -> Any:
    """A Docker SDK client for a running engine."""
    try:
        return docker_client()
    except SolarpipeError as exc:
        skip_or_fail(str(exc))


def images_or_skip(engine: Any, stages: Iterable[str]) -> dict[str, Any]:
    """The built image of each stage, by stage."""
    import docker

    images = {}
    for stage in stages:
        try:
            images[stage] = engine.images.get(image_name(stage))
        except docker.errors.ImageNotFound:
            skip_or_fail(f"{image_name(stage)} not built: solarpipe images build --stage {stage}")
    return images


def run_in_image(engine: Any, image: str, *command: str, entrypoint: str = "python") -> str:
    """The output of ``command`` run in ``image`` with ``entrypoint`` (as the image's user)."""
    output = engine.containers.run(
        image, list(command), entrypoint=[entrypoint], remove=True, network_mode="none"
    )
    return output.decode().strip()
