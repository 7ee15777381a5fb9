"""Fixtures for the dashboard: query/ on the import path, a generated traffic sample
written by the real handler, the server on a free loopback port, uPlot from npm."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from support.dashboard_data import ASSETS, NOW, Traffic
from support.dashboard_server import Server
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
