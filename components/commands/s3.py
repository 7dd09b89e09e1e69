"""``solarpipe s3 serve``: start the embedded S3 server on loopback and print its endpoint.

It creates the buckets that the params' ``data`` section names, so that stages and ``dvc
repro`` run against it as soon as its variables are exported.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import threading
from typing import TYPE_CHECKING

from components.core.errors import UsageError
from components.s3server import DEFAULT_PORT, ensure_bucket, start_embedded_s3

# S3's rule for new bucket names (moto and AWS refuse others with InvalidBucketName).
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

if TYPE_CHECKING:  # pydantic and boto3 load in the handler: `solarpipe --help` stays fast
    from components.core.params import DataParams


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="s3_action", metavar="ACTION", required=True)
    serve = actions.add_parser(
        "serve",
        help="serve S3 on 127.0.0.1 until interrupted",
        description="Serve S3 on 127.0.0.1 until interrupted (objects live in memory), with the "
        "buckets of the params' data section and --bucket created.",
    )
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    serve.add_argument(
        "--bucket", action="append", default=[], help="also create this bucket (repeatable)"
    )
    serve.add_argument(
        "--params",
        metavar="FILE",
        default=None,
        help="params file whose data.* buckets to create (default: ./params.yaml when present, "
        "else built-in defaults)",
    )
    serve.set_defaults(handler=serve_until_interrupted)


def data_buckets(data: DataParams) -> list[str]:
    """``data.bucket`` and the buckets of the ``data`` URIs on S3, in order, once each.

    A name S3 would refuse is a usage error naming the param, found before the server starts.
    """
    from components.core import uri as uri_io
    from components.core.s3 import parse_s3_uri

    named = {"data.bucket": data.bucket}
    for key in ("raster", "tiles", "annotations"):
        uri = getattr(data, key)
        if uri_io.is_s3(uri):
            named[f"data.{key}"] = parse_s3_uri(uri)[0]
    for key, bucket in named.items():
        if not BUCKET_NAME.fullmatch(bucket):
            raise UsageError(
                f"{key}: {bucket!r} is not an S3 bucket name (3-63 lowercase letters, digits, "
                "dots and hyphens, starting and ending with a letter or digit)"
            )
    return list(dict.fromkeys(named.values()))


def serve_until_interrupted(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be 1-65535, got {args.port}")
    from components.core.params import load_params

    buckets = list(dict.fromkeys([*data_buckets(load_params(args.params).data), *args.bucket]))
    server = start_embedded_s3(args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        environment = server.environment()
        os.environ.update(environment)
        for bucket in buckets:
            ensure_bucket(bucket)
        print(f"embedded S3 serving at {server.endpoint} (objects live in memory)", flush=True)
        print(f"buckets: {', '.join(buckets)}", flush=True)
        print("use it from another shell with:", flush=True)
        for name, value in environment.items():
            print(f"  export {name}={value}", flush=True)
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
