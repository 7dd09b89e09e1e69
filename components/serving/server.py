"""Serve an exported model over HTTP: fetch and import its archive, then run `bentoml serve`.

Used by ``solarpipe serve`` and by the serving image's entrypoint (``python -m
components.serving``). The model store is ``$BENTOML_HOME`` when set (the image sets
``/tmp/bentoml``), else a temporary folder removed when the server stops. ``bentoml serve``
runs as a child process; SIGTERM (Kubernetes, ``docker stop``) and Ctrl-C reach it and it
drains in-flight requests before we exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from components.core.errors import SolarpipeError, UsageError
from components.core.logs import get_logger
from components.serving.model_archive import fetch_archive, import_archive, scratch_folder

SERVICE = "components.serving.service:SolarPanelDetector"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# bentoml serve drains in-flight requests on SIGTERM; Kubernetes allows 30 s by default.
STOP_TIMEOUT_S = 25.0

log = get_logger("components.serving")


def check_port_free(host: str, port: int) -> None:
    from components.s3server import port_is_free

    if not 0 < port < 65536:
        raise UsageError(f"--port must be 1-65535, got {port}")
    if not port_is_free(port, host):
        raise SolarpipeError(f"port {port} on {host} is taken: stop what uses it or pick --port")


def bentoml_home() -> tuple[Path, bool]:
    """The model store folder and whether it is ours to remove when the server stops."""
    configured = os.environ.get("BENTOML_HOME")
    if configured:
        return Path(configured), False
    return scratch_folder("solarpipe-bentoml-"), True


def prepare_model(model_uri: str, home: Path) -> str:
    """Fetch, check and import the archive named by ``model_uri``; returns the model tag."""
    download_dir = scratch_folder("solarpipe-model-")
    try:
        archive = fetch_archive(model_uri, download_dir)
        return import_archive(archive, home)
    finally:
        shutil.rmtree(download_dir, ignore_errors=True)


def run_until_stopped(command: list[str], environment: dict[str, str]) -> int:
    """Run ``command``, pass SIGINT/SIGTERM on to it, and return its exit status."""
    child = subprocess.Popen(command, env=environment)
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        child.send_signal(signum)

    previous = {number: signal.signal(number, forward) for number in STOP_SIGNALS}
    try:
        status = child.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0 if stopping else status


def serve_model(model_uri: str, host: str, port: int) -> None:
    """Serve the model at ``model_uri`` on ``host:port`` until stopped."""
    if not model_uri:
        raise UsageError(
            "no model: pass --model (the export folder or its archive, local or s3://) "
            "or set SOLARPIPE_MODEL_URI"
        )
    check_port_free(host, port)
    home, temporary = bentoml_home()
    try:
        tag = prepare_model(model_uri, home)
        print(
            f"serving {tag} from {model_uri} at http://{host}:{port} "
            "(POST /detect; /readyz, /livez)",
            flush=True,
        )
        environment = {
            **os.environ,
            "BENTOML_HOME": str(home),
            "BENTOML_DO_NOT_TRACK": "true",
            "SOLARPIPE_BENTO_MODEL": tag,
        }
        command = [sys.executable, "-m", "bentoml", "serve", SERVICE]
        status = run_until_stopped([*command, "--host", host, "--port", str(port)], environment)
    finally:
        if temporary:
            shutil.rmtree(home, ignore_errors=True)
    if status != 0:
        raise SolarpipeError(f"bentoml serve exited with status {status} (its log is above)")
