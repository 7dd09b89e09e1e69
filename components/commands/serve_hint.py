"""The serve commands the quickstart prints, and the sample tile they post.

Each command works when pasted as is into a shell in the project folder after the quickstart
ended (its embedded S3 server and the tiles in it are gone by then): the tile is copied to
``out/sample-tile.png`` while S3 still runs, and ``solarpipe`` is named by the path of the
venv that ran the quickstart (the shell that started it may have no venv active).
"""

from __future__ import annotations

import json
import shlex
import sys
from contextlib import suppress
from pathlib import Path

from components.core import uri as uri_io
from components.core.errors import SolarpipeError

SAMPLE_TILE = Path("out") / "sample-tile.png"
EXPORT_FOLDER = Path("out") / "export"
SERVE_PORT = 3000


def save_sample_tile(project: Path) -> bool:
    """Copy one test-split tile of ``data/annotations.json`` to ``out/sample-tile.png``."""
    with suppress(OSError, ValueError):
        images = json.loads((project / "data" / "annotations.json").read_text())["images"]
        tested = [image for image in images if image.get("split") == "test"] or images
        for image in tested[:3]:
            with suppress(SolarpipeError):
                uri_io.download_file(image["image"], project / SAMPLE_TILE)
                return True
    return False


def solarpipe_command(project: Path) -> str:
    """``solarpipe`` as a path from the project folder (absolute when the venv is elsewhere)."""
    script = Path(sys.executable).parent / "solarpipe"
    if not script.is_file():
        return "solarpipe"
    try:
        return shlex.quote(str(script.relative_to(project)))
    except ValueError:
        return shlex.quote(str(script))


def serve_commands(project: Path) -> list[str]:
    """Start the server on the exported model; post the sample tile to it (another shell)."""
    tile = SAMPLE_TILE if (project / SAMPLE_TILE).is_file() else Path("<a PNG or JPEG tile>")
    return [
        f"{solarpipe_command(project)} serve --model {EXPORT_FOLDER} --port {SERVE_PORT}",
        f"curl -F images=@{tile} http://127.0.0.1:{SERVE_PORT}/detect",
    ]
