"""``solarpipe run-stage <stage> [--image I] -- <stage args>``: run one stage's image locally.

The container gets the S3 settings from this environment at run time (never from the image),
the working folder mounted at the same path (so relative URIs and ./params.yaml work), the folder
of every local path among the stage's declared I/O options (and ``--params``) mounted at the same
path, inputs read-only and outputs read-write, the caller's uid:gid (files it writes belong to
the caller), and the host network when the S3 endpoint is on loopback. Its output streams
through; its exit status becomes ours.
"""

from __future__ import annotations

import argparse
import codecs
import ipaddress
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from components.core.errors import SolarpipeError, UsageError
from components.core.logs import get_logger
from components.core.stages import STAGE_NAMES, stage
from components.core.uri import is_s3
from components.images.engine import docker_client
from components.images.names import IMAGES, SERVE_IMAGE, image_name

# What run-stage runs: every stage, and the model server.
RUNNABLE = (*STAGE_NAMES, SERVE_IMAGE)

log = get_logger("components.images")

# Passed through by name when set; credentials come only from here, at run time.
S3_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)
PASSED_PREFIXES = ("SOLARPIPE_",)


class StageFailed(SolarpipeError):
    """The stage exited non-zero inside its container; we exit with the same status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", help="image to run (default: solarpipe-<stage>:<version>)")
    parser.add_argument(
        "--network",
        help="container network (default: host when AWS_ENDPOINT_URL is on loopback, "
        "else Docker's default)",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.usage = "solarpipe run-stage [-h] STAGE [--image I] [--network N] -- [STAGE ARGS ...]"
    parser.add_argument(
        "stage", metavar="STAGE", choices=RUNNABLE, help=f"one of {', '.join(RUNNABLE)}"
    )
    add_run_options(parser)
    parser.add_argument(
        "rest",
        nargs=argparse.REMAINDER,
        metavar="-- STAGE ARGS",
        help="the stage's own options (python -m components.<stage> --help)",
    )
    parser.set_defaults(handler=run_stage_container, parser=parser)


def split_options(args: argparse.Namespace) -> list[str]:
    """Parse our options written after STAGE and before ``--``; returns the stage's arguments."""
    if "--" not in args.rest:
        return list(args.rest)
    separator = args.rest.index("--")
    ours = argparse.ArgumentParser(prog=args.parser.prog, add_help=False)
    add_run_options(ours)
    ours.parse_args(args.rest[:separator], namespace=args)
    return list(args.rest[separator + 1 :])


def is_loopback_endpoint(endpoint: str | None) -> bool:
    host = urlsplit(endpoint).hostname if endpoint else None
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def container_environment(environ: dict[str, str]) -> dict[str, str]:
    """The variables the stage sees: S3 settings and SOLARPIPE_* from ``environ``, HOME."""
    passed = {
        name: value
        for name, value in environ.items()
        if name in S3_VARIABLES or name.startswith(PASSED_PREFIXES)
    }
    # The caller's uid may have no home in the image; libraries write caches under HOME.
    return {**passed, "HOME": "/tmp"}


def stream_output(chunks: Iterable[tuple[bytes | None, bytes | None]]) -> None:
    """Copy demultiplexed (stdout, stderr) chunks to our stdout and stderr as they arrive."""
    targets = (sys.stdout, sys.stderr)
    decoders = [codecs.getincrementaldecoder("utf-8")("replace") for _ in targets]
    for chunk_pair in chunks:
        for decoder, chunk, target in zip(decoders, chunk_pair, targets, strict=True):
            if chunk:
                target.write(decoder.decode(chunk))
                target.flush()
    for decoder, target in zip(decoders, targets, strict=True):
        target.write(decoder.decode(b"", final=True))
        target.flush()


def option_values(stage_args: Sequence[str], name: str, position: int = 1) -> list[str]:
    """The values given to ``--name`` in the stage's arguments (``--name V`` or ``--name=V``;
    ``position`` 2: the second of two, as in ``--report NAME PATH``)."""
    values = []
    for index, argument in enumerate(stage_args):
        if argument == f"--{name}" and index + position < len(stage_args):
            values.append(stage_args[index + position])
        elif argument.startswith(f"--{name}="):
            values.append(argument.split("=", 1)[1])
    return values


def local_mounts(stage_name: str, stage_args: Sequence[str], workdir: Path) -> dict[str, str]:
    """``{host folder: "ro" | "rw"}`` for the local paths among the stage's I/O options.

    An input's folder (the path itself when it is a folder) is mounted read-only and must exist;
    an output's parent folder is mounted read-write (the stage writes next to the target and
    renames) and is created when missing, as the stage itself would. A folder that is both is
    read-write. The working folder is always mounted read-write.
    """
    reads, writes = ["params", *IMAGES[stage_name].reads], ["uri-file"]
    if stage_name in STAGE_NAMES:
        declared = stage(stage_name)
        reads += [option.name for option in declared.inputs]
        writes += [option.name for option in declared.outputs]
    wanted = [(value, "ro") for name in reads for value in option_values(stage_args, name)]
    wanted += [(value, "rw") for name in writes for value in option_values(stage_args, name)]
    wanted += [(value, "rw") for value in option_values(stage_args, "report", position=2)]
    mounts = {str(workdir): "rw"}
    for value, mode in wanted:
        if is_s3(value) or not value:
            continue
        path = (workdir / value).resolve()
        folder = path if mode == "ro" and path.is_dir() else path.parent
        if mode == "ro" and not folder.is_dir():
            raise UsageError(f"{value}: folder {folder} does not exist (nothing to mount)")
        if mode == "rw":
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(
                    f"{value}: cannot create the output folder {folder}: {exc}"
                ) from exc
        key = str(folder)
        mounts[key] = "rw" if mounts.get(key) == "rw" else mode
    return mounts


def run_container(
    image: str,
    command: Sequence[str],
    network: str | None,
    workdir: Path,
    mounts: dict[str, str] | None = None,
) -> int:
    """Run ``image`` with ``command`` to completion, streaming its output; its exit status."""
    import docker

    client = docker_client()
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound as exc:
        raise SolarpipeError(f"image {image} not found: {build_hint(image)}") from exc
    log.info("running %s %s", image, " ".join(command))
    try:
        container = client.containers.create(
            image,
            command=list(command),
            environment=container_environment(dict(os.environ)),
            user=f"{os.getuid()}:{os.getgid()}",
            working_dir=str(workdir),
            volumes={
                folder: {"bind": folder, "mode": mode}
                for folder, mode in (mounts or {str(workdir): "rw"}).items()
            },
            network_mode=network,
        )
    except docker.errors.APIError as exc:
        raise SolarpipeError(f"cannot create a container of {image}: {exc.explanation}") from exc
    try:
        output = client.api.attach(container.id, stream=True, logs=True, demux=True)
        container.start()
        stream_output(output)
        return int(container.wait()["StatusCode"])
    except docker.errors.APIError as exc:
        raise SolarpipeError(f"running {image} failed: {exc.explanation}") from exc
    except KeyboardInterrupt:
        container.stop(timeout=10)
        raise
    finally:
        container.remove(force=True)


def build_hint(image: str) -> str:
    for name in RUNNABLE:
        if image == image_name(name):
            return f"build it with `solarpipe images build --stage {name}`"
    return "build it with `solarpipe images build` (and --tag/--registry) or `docker pull` it"


def run_stage_container(args: argparse.Namespace) -> None:
    stage_args = split_options(args)
    image = args.image or image_name(args.stage)
    network = args.network
    loopback = is_loopback_endpoint(os.environ.get("AWS_ENDPOINT_URL"))
    if network is None and (loopback or IMAGES[args.stage].host_network):
        network = "host"
    workdir = Path.cwd()
    mounts = local_mounts(args.stage, stage_args, workdir)
    status = run_container(image, stage_args, network, workdir, mounts)
    if status != 0:
        raise StageFailed(f"stage {args.stage} failed in {image} with exit status {status}", status)
