"""``python -m components.shards merge-manifests|merge-detections ...`` (see ``cli.py``)."""

from __future__ import annotations

import sys

from components.core.entrypoint import run_tool
from components.shards.cli import configure

if __name__ == "__main__":
    sys.exit(run_tool("components.shards", configure))
