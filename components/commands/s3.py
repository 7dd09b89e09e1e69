"""``solarpipe s3 serve``: start the embedded S3 server on loopback and print its endpoint."""

from __future__ import annotations

import argparse
import os
import signal
import threading

from components.core.errors import UsageError
from components.s3server import DEFAULT_PORT, ensure_bucket, start_embedded_s3


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="s3_action", metavar="ACTION", required=True)
    serve = actions.add_parser("serve", help="serve S3 on 127.0.0.1 until interrupted")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    serve.add_argument(
        "--bucket", action="append", default=[], help="create this bucket at start (repeatable)"
    )
    serve.set_defaults(handler=serve_until_interrupted)


def serve_until_interrupted(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be 1-65535, got {args.port}")
    server = start_embedded_s3(args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        environment = server.environment()
        os.environ.update(environment)
        for bucket in args.bucket:
            ensure_bucket(bucket)
        print(f"embedded S3 serving at {server.endpoint} (objects live in memory)", flush=True)
        print("use it from another shell with:", flush=True)
        for name, value in environment.items():
            print(f"  export {name}={value}", flush=True)
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
