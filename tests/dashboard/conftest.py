"""Fixtures for the dashboard: query/ on the import path, a generated traffic sample
written by the real handler, the server on a free loopback port, uPlot from npm."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from support.dashboard_data import ASSETS, NOW, Traffic
from support.query_data import QUERY

sys.path.insert(0, str(QUERY))


@pytest.fixture
def traffic(handler_module, monkeypatch) -> Traffic:
    monkeypatch.setattr(handler_module, "log", lambda *args, **kwargs: None)
    return Traffic(handler_module)


@pytest.fixture(scope="session")
def uplot() -> str:
    """uPlot's dist folder, installed from query/assets/package-lock.json (npm ci)."""
    dist = ASSETS / "node_modules" / "uplot" / "dist"
    if not (dist / "uPlot.iife.min.js").is_file():
        subprocess.run(
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=ASSETS, check=True, capture_output=True
        )
    return str(dist)


class Server:
    """dashboard.py's server in this process on 127.0.0.1:<free port>."""

    def __init__(self, app, host: str = "127.0.0.1") -> None:
        import dashboard

        self.app = app
        self.httpd = dashboard.make_server(app, host, 0)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def get(self, path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.app.store.close()


@pytest.fixture
def serve(s3_client, bucket, uplot) -> Iterator:
    """Start a server over the moto bucket with the clock at NOW (or as given)."""
    import dashboard
    from logs_query import Bucket

    servers: list[Server] = []

    def _serve(clock=lambda: NOW, **extra) -> Server:
        store = dashboard.Store(Bucket(s3_client, bucket), workers=4, clock=clock)
        server = Server(dashboard.App(store, dashboard.vendor_dir(None), **extra))
        servers.append(server)
        return server

    yield _serve
    for server in servers:
        server.stop()
