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
DONE_OK = {"completed": True, "scripts": [{**HOOK, "state": "SUCCESSFUL"}]}
DONE_ERROR = {"completed": True, "scripts": [{**HOOK, "state": "ERROR"}]}
RUNNING = {"completed": False, "scripts": [{**HOOK, "state": "RUNNING"}]}


@pytest.mark.parametrize(
    ("report", "state", "ready", "reason"),
    [
        (DONE_OK, None, True, "provisioned"),
        (RUNNING, None, False, "still running"),
        ({"completed": False, "scripts": [{**HOOK, "state": "UNKNOWN"}]}, None, False, "still running"),
        (DONE_ERROR, None, False, "provisioning failed"),
        ({"completed": True, "scripts": []}, None, False, "no ready.d script"),
        ({}, None, False, "no ready.d script"),
        # the hook's own state file decides once the stage is complete
        (DONE_OK, "ok", True, "provisioned"),
        (DONE_ERROR, "failed (exit 1)", False, "./start.sh provision"),
        # a re-run (./start.sh provision) after a failed hook: LocalStack still says ERROR
        (DONE_ERROR, "running", False, "running again"),
        (DONE_ERROR, "ok", True, "re-run"),
        # a state file left by an earlier start never counts before this start's hook ran
        (RUNNING, "ok", False, "still running"),
    ],
)
def test_verdict(report, state, ready, reason):
    got_ready, got_reason = verdict(report, state)
    assert got_ready is ready and reason in got_reason


@pytest.mark.parametrize(
    ("body", "status", "state", "code"),
    [
        (json.dumps(DONE_OK).encode(), 200, None, 0),
        (json.dumps(DONE_ERROR).encode(), 200, None, 1),
        (json.dumps(DONE_ERROR).encode(), 200, "ok\n", 0),
        (json.dumps(DONE_OK).encode(), 200, "failed (exit 1)\n", 1),
        (b"not json", 200, None, 1),
        (b"", 503, None, 1),
    ],
)
def test_script_exit_code(tmp_path, body, status, state, code):
    # given LocalStack's answer and, maybe, the hook's state file
    if state is not None:
        (tmp_path / "provision.state").write_text(state)
    result = run_healthcheck(tmp_path, status, body)
    assert result.returncode == code, result.stdout
    assert result.stdout.count("\n") == 1 and "Traceback" not in result.stderr


def run_healthcheck(state_dir: Path, status: int, body: bytes) -> subprocess.CompletedProcess:
    """The healthcheck script against a LocalStack stand-in answering `status`, `body`."""
    server = serve(lambda path: (status, body))
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/_localstack/init/ready"
        return subprocess.run(
            [sys.executable, str(SCRIPT), url],
            capture_output=True,
            text=True,
            timeout=30,
            env={"PIPELINE_STATE_DIR": str(state_dir)},
        )
    finally:
        server.shutdown()


def test_script_when_nothing_listens(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "http://127.0.0.1:9/_localstack/init/ready"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PIPELINE_STATE_DIR": str(tmp_path)},
    )
    assert result.returncode == 1 and result.stdout.startswith("not ready")


def test_while_the_saved_logs_are_restored_the_reason_says_how_far(tmp_path):
    # given the hook still running, its log ending with the restore's progress line
    (tmp_path / "provision.state").write_text("running\n")
    (tmp_path / "provision.log").write_text("restoring s3://nginx-accesslog: 5,000 of 13,990 objects (1.2 GB), 20 s\n")
    running = json.dumps({"completed": False, "scripts": [{"name": "10-provision.sh", "state": "RUNNING"}]}).encode()
    result = run_healthcheck(tmp_path, 200, running)
    assert result.returncode == 1
    assert result.stdout == (
        "provisioning still running: 10-provision.sh; "
        "restoring s3://nginx-accesslog: 5,000 of 13,990 objects (1.2 GB), 20 s\n"
    )
    # once the restore is over (another line follows), the reason is the plain one
    with (tmp_path / "provision.log").open("a") as log:
        log.write("restored 13,990 objects (7.3 GB) to s3://nginx-accesslog in 108.2 s\n")
    assert run_healthcheck(tmp_path, 200, running).stdout == "provisioning still running: 10-provision.sh\n"
