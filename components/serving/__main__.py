"""The serving image's entrypoint: ``python -m components.serving [--model URI] [-v]``.

The same command as ``solarpipe serve``; see ``--help``.
"""

from __future__ import annotations

import sys

from components.core.entrypoint import run_tool
from components.serving.commands import configure

if __name__ == "__main__":
    sys.exit(run_tool("components.serving", configure))
