"""``solarpipe images build``: build the stage images from docker/Dockerfile, print name and size.

Builds run with BuildKit through the docker CLI (see components/images/engine.py); the SDK
inspects, measures and pushes the results.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from components.core.errors import SolarpipeError, UsageError
from components.core.logs import get_logger
from components.images.engine import buildkit_cli, docker_client
from components.images.names import (
    IMAGES,
    ImageSpec,
    default_tag,
    image_name,
    package_version,
    record_push,
)
from components.images.pip_settings import check_folder, pip_conf_for_build, read_pip_conf

log = get_logger("components.images")
DOCKERFILE = Path("docker") / "Dockerfile"


@dataclass(frozen=True)
class BuiltImage:
    name: str
    size_bytes: int
    build_seconds: float

    def line(self) -> str:
        return f"{self.name}  {self.size_bytes / 1e6:.0f} MB  (built in {self.build_seconds:.0f} s)"


def configure(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="images_command", metavar="COMMAND", required=True)
    build = commands.add_parser(
        "build",
        help="build the images (BuildKit) and print each image's name and size",
        description="Build one image per stage, and the pipeline's own, from docker/Dockerfile, "
        "named [REGISTRY/]solarpipe-<name>:<TAG>; see docker/README.md.",
    )
    build.add_argument(
        "--stage",
        dest="stages",
        action="append",
        choices=list(IMAGES),
        metavar="NAME",
        help=f"image to build (repeatable; default: all of {', '.join(IMAGES)})",
    )
    build.add_argument(
        "--tag",
        help="image tag (default: <version>-<digest of the build inputs>, new with every change)",
    )
    build.add_argument("--registry", help="registry prefix, e.g. ghcr.io/org")
    build.add_argument("--push", action="store_true", help="push the images (needs --registry)")
    build.add_argument(
        "--base-image",
        default=os.environ.get("SOLARPIPE_BASE_IMAGE"),
        help="BASE_IMAGE build argument (default: $SOLARPIPE_BASE_IMAGE, else the Dockerfile's "
        "python:3.11-slim; offline hosts: solarpipe-base:bookworm from docker/build-base.sh)",
    )
    build.add_argument(
        "--ca-bundle",
        default=os.environ.get("SOLARPIPE_CA_BUNDLE"),
        metavar="PEM",
        help="CA bundle pip trusts during the build, e.g. of a TLS-inspecting proxy (default: "
        "$SOLARPIPE_CA_BUNDLE); a build secret, never stored in the image",
    )
    build.add_argument(
        "--pip-conf", metavar="FILE", help="pip.conf with index settings (a build secret)"
    )
    build.add_argument(
        "--local-index",
        action="append",
        default=[f for f in os.environ.get("SOLARPIPE_LOCAL_INDEX", "").split(os.pathsep) if f],
        metavar="DIR",
        help="local package folder (PEP 503 root with simple/, or flat wheels) served to the "
        "build on loopback, so pip takes wheels from this disk (repeatable; default: "
        "$SOLARPIPE_LOCAL_INDEX, folders separated by ':')",
    )
    build.add_argument(
        "--network", default="host", help="network for the build's RUN steps (default: host)"
    )
    build.add_argument(
        "--context",
        help="build context: the source tree holding docker/Dockerfile "
        "(default: the tree this package runs from, else the current folder)",
    )
    build.set_defaults(handler=build_images)

    name = commands.add_parser(
        "name",
        help="print the reference of an image built from this tree (for docker run)",
        description="Print [REGISTRY/]solarpipe-<name>:<TAG> as `images build` names it, e.g. "
        "docker run ... $(solarpipe images name prepare) --help",
    )
    name.add_argument("image", choices=list(IMAGES), metavar="NAME", help=", ".join(IMAGES))
    name.add_argument("--tag", help="image tag (default: the one `images build` gives this tree)")
    name.add_argument("--registry", help="registry prefix, e.g. ghcr.io/org")
    name.set_defaults(handler=print_image_name)


def print_image_name(args: argparse.Namespace) -> None:
    print(image_name(args.image, args.tag, args.registry))


def source_tree(context: str | None) -> Path:
    candidates = [Path(context)] if context else [Path(__file__).parents[2], Path.cwd()]
    for candidate in candidates:
        if (candidate / DOCKERFILE).is_file():
            return candidate.resolve()
    where = context or "this install or the current folder"
    raise UsageError(
        f"no {DOCKERFILE} in {where}: run from the solarpipe source tree or pass --context"
    )


def git_output(tree: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(tree), *args], capture_output=True, text=True, check=False
        )
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def without_credentials(url: str) -> str:
    """A remote URL with any ``user:token@`` removed (it goes into an image label)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def build_command(
    prefix: Sequence[str],
    tree: Path,
    spec: ImageSpec,
    name: str,
    args: argparse.Namespace,
    secrets: dict[str, Path],
) -> list[str]:
    revision = git_output(tree, "rev-parse", "HEAD") or "unknown"
    source = without_credentials(git_output(tree, "remote", "get-url", "origin"))
    command = [
        *prefix,
        "--file", str(tree / DOCKERFILE),
        "--target", "image",
        "--tag", name,
        "--build-arg", f"FAMILY={spec.family}",
        "--build-arg", f"EXTRA={spec.extra}",
        "--build-arg", f"ENTRYPOINT_MODULE={spec.entrypoint}",
        "--build-arg", f"TITLE=solarpipe-{spec.name}",
        "--network", args.network,
        "--progress", "auto" if sys.stderr.isatty() else "plain",
        "--build-arg", f"VERSION={package_version()}",
        "--build-arg", f"REVISION={revision}",
        "--build-arg", f"SOURCE={source}",
    ]  # fmt: skip
    if args.base_image:
        command += ["--build-arg", f"BASE_IMAGE={args.base_image}"]
    for secret_id, path in secrets.items():
        command += ["--secret", f"id={secret_id},src={path}"]
    return [*command, str(tree)]


def push_image(client, name: str) -> str:
    """Push ``name``; the registry's digest of it (``sha256:…``), recorded for compile."""
    repository, tag = name.rsplit(":", 1)
    log.info("pushing %s", name)
    digest = ""
    for event in client.images.push(repository, tag=tag, stream=True, decode=True):
        if "error" in event:
            raise SolarpipeError(f"pushing {name} failed: {event['error']}")
        digest = event.get("aux", {}).get("Digest", digest)
    if not digest:
        raise SolarpipeError(f"pushing {name}: the registry reported no digest")
    record_push(name, digest)
    return digest


def build_images(args: argparse.Namespace) -> None:
    if args.push and not args.registry:
        raise UsageError("--push needs --registry (where to push to)")
    if args.ca_bundle and not Path(args.ca_bundle).is_file():
        raise UsageError(f"--ca-bundle {args.ca_bundle}: no such file")
    for folder in args.local_index:
        check_folder(folder)
    base_pip_conf = read_pip_conf(args.pip_conf)
    tree = source_tree(args.context)
    client = docker_client()
    cli = buildkit_cli()
    chosen = [spec for spec in IMAGES.values() if spec.name in (args.stages or IMAGES)]
    built: list[BuiltImage] = []
    with (
        tempfile.TemporaryDirectory(prefix="solarpipe-build-") as scratch,
        pip_conf_for_build(base_pip_conf, args.local_index, Path(scratch)) as pip_conf,
    ):
        secrets = {"ca_bundle": Path(args.ca_bundle).resolve()} if args.ca_bundle else {}
        if pip_conf:
            secrets["pip_conf"] = pip_conf
        tag = args.tag or default_tag(tree)  # once: every image of the build gets the same
        for number, spec in enumerate(chosen, start=1):
            name = image_name(spec.name, tag, args.registry)
            log.info("building %s (%d/%d)", name, number, len(chosen))
            command = build_command(cli.argv, tree, spec, name, args, secrets)
            started = time.monotonic()
            status = subprocess.run(command, env={**os.environ, **cli.environment}, check=False)
            if status.returncode != 0:
                raise SolarpipeError(
                    f"building {name} failed (exit {status.returncode}); "
                    "the build output above names the failing step"
                )
            image = client.images.get(name)
            built.append(BuiltImage(name, image.attrs["Size"], time.monotonic() - started))
            print(built[-1].line(), flush=True)
    if args.push:
        for image in built:
            digest = push_image(client, image.name)
            print(f"pushed {image.name}@{digest}", flush=True)
