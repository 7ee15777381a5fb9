"""init/localstack_ready.py: LocalStack is healthy only once provisioning succeeded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from localstack_ready import verdict
from support.net import serve

SCRIPT = Path(__file__).resolve().parents[2] / "init" / "localstack_ready.py"
HOOK = {"stage": "READY", "name": "10-provision.sh"}


@pytest.mark.parametrize(
    ("report", "ready", "reason"),
    [
        ({"completed": True, "scripts": [{**HOOK, "state": "SUCCESSFUL"}]}, True, "provisioned"),
        ({"completed": False, "scripts": [{**HOOK, "state": "RUNNING"}]}, False, "still running"),
        ({"completed": False, "scripts": [{**HOOK, "state": "UNKNOWN"}]}, False, "still running"),
        ({"completed": True, "scripts": [{**HOOK, "state": "ERROR"}]}, False, "provisioning failed"),
        ({"completed": True, "scripts": []}, False, "no ready.d script"),
        ({}, False, "no ready.d script"),
    ],
)
def test_verdict(report, ready, reason):
    got_ready, got_reason = verdict(report)
    assert got_ready is ready and reason in got_reason


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (json.dumps({"completed": True, "scripts": [{**HOOK, "state": "SUCCESSFUL"}]}).encode(), 200, 0),
        (json.dumps({"completed": True, "scripts": [{**HOOK, "state": "ERROR"}]}).encode(), 200, 1),
        (b"not json", 200, 1),
        (b"", 503, 1),
    ],
)
def test_script_exit_code(body, status, code):
    server = serve(lambda path: (status, body))
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/_localstack/init/ready"
        result = subprocess.run([sys.executable, str(SCRIPT), url], capture_output=True, text=True, timeout=30)
    finally:
        server.shutdown()
    assert result.returncode == code, result.stdout
    assert "Traceback" not in result.stderr


def test_script_when_nothing_listens():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "http://127.0.0.1:9/_localstack/init/ready"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and result.stdout.startswith("not ready")
