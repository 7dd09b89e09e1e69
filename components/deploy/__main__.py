"""The deploy task's entrypoint: ``python -m components.deploy --model-uri URI [...] [-v]``.

The same command as ``solarpipe deploy``; see ``--help``.
"""

from __future__ import annotations

import sys

from components.core.entrypoint import run_tool
from components.deploy.commands import configure

if __name__ == "__main__":
    sys.exit(run_tool("components.deploy", configure))
