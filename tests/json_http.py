"""The request handler the fake API servers share: JSON answers, no access log."""

from __future__ import annotations

import json
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    """One request a fake server received: its JSON body parsed."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any = None
    status: dict[str, Any] | None = None  # what a GET answered with, where a fake keeps it


class JsonHandler(BaseHTTPRequestHandler):
    """A handler whose ``_reply`` sends ``payload`` as JSON with ``status``."""

    def _read_request(self) -> Recorded:
        """The request as received: method, path, lower-cased headers, JSON body or None."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return Recorded(
            self.command,
            self.path,
            {name.lower(): value for name, value in self.headers.items()},
            json.loads(raw) if raw else None,
        )

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class ServedOnLoopback:
    """The URL and the shutdown of a fake API server held in ``self.server``."""

    server: ThreadingHTTPServer | None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
