"""The Docker engine as the image commands see it: an SDK client, and a BuildKit-capable CLI.

The Docker SDK for Python drives everything except the build: its ``images.build`` speaks only
the legacy builder API, while BuildKit (cache and secret mounts in docker/Dockerfile) needs a
gRPC session that the SDK does not implement (docker/docker-py#2230). So the build runs the
docker CLI: ``docker buildx build --load`` where the buildx plugin exists, else a classic CLI
(< 23, such as Debian's docker.io) with ``DOCKER_BUILDKIT=1``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from components.core.errors import SolarpipeError
from components.core.logs import get_logger

if TYPE_CHECKING:
    import docker

# Classic CLIs (before Docker 23) build with BuildKit themselves under DOCKER_BUILDKIT=1;
# newer ones hand the build to the buildx plugin and fail without it.
FIRST_CLI_WITHOUT_BUILTIN_BUILDKIT = 23
log = get_logger("components.images")
START_HINT = "start it with scripts/setup-docker.sh (or `sudo systemctl start docker`)"


def docker_client() -> docker.DockerClient:
    """An SDK client for the engine at DOCKER_HOST (default socket), checked with a ping."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        address = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        log.debug("Docker engine at %s: %s", address, exc)
        raise SolarpipeError(f"Docker engine not reachable at {address}; {START_HINT}") from exc
    return client


@dataclass(frozen=True)
class BuildCli:
    """How to invoke a BuildKit build: the argv prefix and the environment it needs."""

    argv: tuple[str, ...]
    environment: dict[str, str] = field(default_factory=dict)


def _answers(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def buildkit_cli() -> BuildCli:
    """The first docker CLI (``$SOLARPIPE_DOCKER_CLI``, PATH, /usr/bin) that can build with BuildKit."""
    candidates = [os.environ.get("SOLARPIPE_DOCKER_CLI"), shutil.which("docker"), "/usr/bin/docker"]
    for cli in dict.fromkeys(c for c in candidates if c and os.access(c, os.X_OK)):
        if _answers([cli, "buildx", "version"]) is not None:
            return BuildCli((cli, "buildx", "build", "--load"))
        # `docker --version` ("Docker version 20.10.24+dfsg1, build 297e128") needs no engine.
        major = re.search(r"version (\d+)\.", _answers([cli, "--version"]) or "")
        if major and int(major.group(1)) < FIRST_CLI_WITHOUT_BUILTIN_BUILDKIT:
            return BuildCli((cli, "build"), {"DOCKER_BUILDKIT": "1"})
    raise SolarpipeError(
        "no docker CLI that builds with BuildKit: install the buildx plugin, or docker.io "
        "(scripts/setup-docker.sh), or point SOLARPIPE_DOCKER_CLI at one"
    )
