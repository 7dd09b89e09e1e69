"""A misbehaving S3 for the fault tests and ``bench/faults.py``: an HTTP proxy on loopback in
front of the embedded S3 server that, by seeded chance, answers ``503 SlowDown``, resets the
connection before answering (TCP RST), cuts a response body in the middle (half the bytes, then
the connection closes), or answers late.

Point a stage at it with ``AWS_ENDPOINT_URL=<proxy.endpoint>``. Every request is forwarded as
is (the embedded server does not check signatures); faults are drawn per request from one
seeded generator, and counted, so a test can assert that they really happened. ``hold`` parks
the requests that match a pattern until the proxy stops: a test waits for ``arrived`` and then
kills the client in the middle of that request (deterministic, no sleeps).
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

SLOWDOWN = "slowdown"
RESET = "reset"
CUT = "cut"
LATENCY = "latency"
FAULTS = (SLOWDOWN, RESET, CUT)
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "expect",
    "te",
    "upgrade",
}
SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
Selector = Callable[[str, str], bool]


def every_request(method: str, path: str) -> bool:
    return True


@dataclass
class FaultRates:
    """Chance per request of each fault (the three exclusive ones sum to at most 1)."""

    slowdown: float = 0.0
    reset: float = 0.0
    cut: float = 0.0
    latency: float = 0.0  # independent of the others
    latency_s: float = 0.05

    @classmethod
    def uniform(cls, rate: float, latency_s: float = 0.05) -> FaultRates:
        """``rate`` of requests fail, spread evenly over the three faults; ``rate`` are late."""
        share = rate / 3
        return cls(share, share, share, rate, latency_s)


@dataclass
class Hold:
    """The ``nth`` request matching ``method`` and ``path`` (a regex), and every later one,
    wait here until the proxy stops; ``arrived`` is set when the first of them comes."""

    method: str
    path: re.Pattern[str]
    nth: int = 1
    seen: int = 0
    arrived: threading.Event = field(default_factory=threading.Event)

    def parks(self, method: str, path: str) -> bool:
        if method != self.method or not self.path.search(path):
            return False
        self.seen += 1
        return self.seen >= self.nth


class FaultProxy:
    """The proxy; use as a context manager or ``start()`` / ``stop()``."""

    def __init__(
        self,
        upstream: str,
        rates: FaultRates,
        seed: int = 0,
        selector: Selector = every_request,
        first: dict[str, list[str]] | None = None,
    ) -> None:
        """``first``: faults that the first selected requests of a method get, in order, before
        chance decides (``{"GET": [CUT, RESET], "PUT": [SLOWDOWN]}``): every kind is met."""
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.rates = rates
        self.selector = selector
        self.counts: Counter[str] = Counter()
        self.requests = 0
        self.ranges: list[tuple[str, str]] = []  # (path, Range header) of ranged GETs
        self._random = random.Random(seed)
        self._first = {method: list(faults) for method, faults in (first or {}).items()}
        self._lock = threading.Lock()
        self._holds: list[Hold] = []
        self._stopped = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def hold(self, method: str, path_pattern: str, nth: int = 1) -> Hold:
        held = Hold(method, re.compile(path_pattern), nth)
        with self._lock:
            self._holds.append(held)
        return held

    def set_rates(self, rates: FaultRates, selector: Selector = every_request) -> None:
        with self._lock:
            self.rates, self.selector = rates, selector

    def injected(self) -> int:
        return sum(self.counts[name] for name in FAULTS)

    def draw(self, method: str, path: str) -> tuple[str | None, bool]:
        """The fault for one request (or None) and whether it is answered late."""
        with self._lock:
            self.requests += 1
            if not self.selector(method, path):
                return None, False
            rates = self.rates
            late = self._random.random() < rates.latency
            roll = self._random.random()
            if self._first.get(method):
                return self._first[method].pop(0), late
        fault = None
        for name, rate in ((SLOWDOWN, rates.slowdown), (RESET, rates.reset), (CUT, rates.cut)):
            if roll < rate:
                fault = name
                break
            roll -= rate
        return fault, late

    def park_if_held(self, method: str, path: str) -> bool:
        """Park a held request until the proxy stops; True when it was parked (and must then be
        dropped, never forwarded: its client was killed meanwhile)."""
        with self._lock:
            held = next((h for h in self._holds if h.parks(method, path)), None)
        if held is None:
            return False
        held.arrived.set()
        self._stopped.wait()
        return True

    def count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def latency_s(self) -> float:
        return self.rates.latency_s


def _handler_class(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_ProxyHandler):
        pass

    Handler.proxy = proxy
    return Handler


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FaultProxy

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._forward()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def _request_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self) -> None:
        body = self._request_body()
        proxy = self.proxy
        if self.headers.get("Range"):
            proxy.ranges.append((self.path, self.headers["Range"]))
        if proxy.park_if_held(self.command, self.path):
            self._reset()
            return
        fault, late = proxy.draw(self.command, self.path)
        if late:
            proxy.count(LATENCY)
            time.sleep(proxy.latency_s())
        if fault == SLOWDOWN:
            proxy.count(SLOWDOWN)
            self._answer(503, [("Content-Type", "application/xml")], SLOWDOWN_BODY)
            return
        if fault == RESET:
            proxy.count(RESET)
            self._reset()
            return
        status, headers, payload = self._upstream(body)
        if fault == CUT and len(payload) > 1 and self.command != "HEAD":
            proxy.count(CUT)
            self._answer(status, headers, payload, cut_at=len(payload) // 2)
            return
        self._answer(status, headers, payload)

    def _upstream(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        connection = http.client.HTTPConnection(*self.proxy.upstream, timeout=60)
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            return response.status, kept, payload
        finally:
            connection.close()

    def _answer(
        self,
        status: int,
        headers: list[tuple[str, str]],
        payload: bytes,
        cut_at: int | None = None,
    ) -> None:
        self.send_response_only(status)
        has_length = False
        for name, value in headers:
            if name.lower() in ("server", "date"):
                continue
            has_length |= name.lower() == "content-length"
            self.send_header(name, value)
        if not has_length:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if cut_at is None:
            self.wfile.write(payload)
            return
        self.wfile.write(payload[:cut_at])
        self.wfile.flush()
        self._hang_up()

    def _hang_up(self) -> None:
        """Close the connection in order (FIN): the client gets every byte sent, then EOF."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.close()
        except OSError:
            pass

    def _reset(self) -> None:
        """Drop the connection with a TCP reset (what a dying load balancer does)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
