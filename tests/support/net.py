"""Loopback helpers shared by the tests: a free port, a tiny HTTP server, polling."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer


def free_port() -> int:
    """A TCP port nothing listens on (yet) on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(respond: Callable[[str], tuple[int, bytes]]) -> HTTPServer:
    """Answer GETs on 127.0.0.1 with respond(path) -> (status, body); shutdown() ends it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # http.server's naming
            status, body = respond(self.path)
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll `condition` until true or `timeout` seconds pass (no waiter exists for these)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())
