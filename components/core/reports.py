"""Pages for people that a stage writes when asked (``--report NAME PATH``).

Kubeflow shows them in its UI as ``HTML`` and ``Markdown`` artifacts; its HTML viewer shows
self-contained pages only, so images go inline as data URIs. Which reports a stage has is in its
declaration (components/core/stages.py).
"""

from __future__ import annotations

import argparse
import base64

from components.core import uri as uri_io


def png_data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI for an ``<img src>`` that needs no other file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def wants_report(args: argparse.Namespace, name: str) -> bool:
    return name in getattr(args, "reports", {})


def write_report(args: argparse.Namespace, name: str, text: str) -> None:
    """Write report ``name`` where ``--report`` asked for it (atomically); else nothing."""
    if wants_report(args, name):
        uri_io.write_text(str(args.reports[name]), text)
