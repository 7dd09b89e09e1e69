"""A real Label Studio server for the labeling tests: headless, on loopback, fresh SQLite.

The server comes from the venv that ``scripts/install-labelstudio.sh`` builds (default
``.venv-labelstudio`` in the project root, or ``$LABEL_STUDIO_VENV``). It starts with its own
admin user and legacy API token, no version check and no SSRF protection (its S3 endpoint is
the embedded server on 127.0.0.1), and without the AWS variables of the test process: it
reaches S3 only through the storages that ``solarpipe labelstudio setup`` configures.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from components.s3server import LOOPBACK, free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# A fresh server migrates its database first: about 3.5 min on 2 busy cores, more under load.
START_TIMEOUT_S = float(os.environ.get("SOLARPIPE_LABELSTUDIO_START_TIMEOUT", "600"))
STOP_TIMEOUT_S = 15.0
ADMIN_EMAIL = "admin@example.com"


@dataclass(frozen=True)
class LabelStudioServer:
    """A running server: base URL, the admin's legacy API token, and the server's log file."""

    url: str
    token: str
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def labelstudio_executable() -> Path:
    """Where the install script puts the ``label-studio`` command (it may not exist)."""
    venv = os.environ.get("LABEL_STUDIO_VENV") or PROJECT_ROOT / ".venv-labelstudio"
    return Path(venv) / "bin" / "label-studio"


def _server_environment(data_dir: Path, token: str) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "LABEL_STUDIO_", "DJANGO_"))
    }
    environment.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        LABEL_STUDIO_USERNAME=ADMIN_EMAIL,
        LABEL_STUDIO_PASSWORD=secrets.token_urlsafe(16),
        LABEL_STUDIO_USER_TOKEN=token,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        LATEST_VERSION_CHECK="false",
        SSRF_PROTECTION_ENABLED="false",
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
        COLLECT_ANALYTICS="false",
    )
    return environment


def _is_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and the processes it started (its own process group)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def running_labelstudio(start_timeout_s: float = START_TIMEOUT_S) -> Iterator[LabelStudioServer]:
    """Start Label Studio on a free loopback port with a temporary data dir; stop it after."""
    executable = labelstudio_executable()
    port = free_port()
    token = secrets.token_hex(20)  # 40 characters, the legacy token format
    with tempfile.TemporaryDirectory(prefix="solarpipe-labelstudio-") as data_root:
        data_dir = Path(data_root)
        server = LabelStudioServer(
            url=f"http://{LOOPBACK}:{port}", token=token, log_path=data_dir / "server.log"
        )
        command = [str(executable), "start", "--no-browser", "--internal-host", LOOPBACK]
        with server.log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [*command, "-p", str(port)],
                cwd=data_dir,
                env=_server_environment(data_dir, token),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + start_timeout_s
            while not _is_healthy(server.url):
                if process.poll() is not None:
                    raise RuntimeError(
                        f"Label Studio exited with status {process.returncode} while starting:\n"
                        + server.log_tail()
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Label Studio not ready after {start_timeout_s:g} s:\n" + server.log_tail()
                    )
                time.sleep(0.5)
            yield server
        finally:
            _stop(process)
