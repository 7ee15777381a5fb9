"""The project's ready.d hook (init/ready.d/10-provision.sh) run by the real LocalStack
4.14.0 from its init directory, and the compose healthcheck (init/localstack_ready.py)
against the real `/_localstack/init/ready`: before start, while the hook runs, after
success, after a failing hook. Each test has a LocalStack of its own (hook states are
per instance)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from support.localstack_host import HOOK, LocalStack, group_alive

pytestmark = pytest.mark.localstack

ROOT = Path(__file__).resolve().parents[2]
HEALTHCHECK = ROOT / "init" / "localstack_ready.py"


def healthcheck(localstack: LocalStack) -> tuple[int, str]:
    """Run the compose healthcheck as compose would, against this LocalStack."""
    result = subprocess.run(
        [sys.executable, str(HEALTHCHECK), f"{localstack.endpoint}/_localstack/init/ready"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PIPELINE_STATE_DIR": str(localstack.state_dir)},
    )
    assert result.stdout.count("\n") == 1 and "Traceback" not in result.stderr, result
    return result.returncode, result.stdout.strip()


def states(localstack: LocalStack) -> dict[str, str]:
    return {s["name"]: s["state"] for s in (localstack.init_report() or {}).get("scripts", [])}


def hold_hook(release: Path) -> str:
    """A test-only hook, sorted before ours, that waits (at most 2 min) for `release`."""
    return f"#!/bin/sh\nfor _ in $(seq 1200); do [ -e '{release}' ] && exit 0; sleep 0.1; done\nexit 1\n"


def test_healthcheck_follows_the_hook_from_before_start_to_success(localstack_interpreters, tmp_path):
    release = tmp_path / "release"
    localstack = LocalStack(
        localstack_interpreters, tmp_path / "localstack", extra_hooks={"05-hold.sh": hold_hook(release)}
    )
    # given LocalStack not started yet: not ready
    code, reason = healthcheck(localstack)
    assert code == 1 and reason.startswith("not ready")
    try:
        # when it starts and the ready stage is held before our hook
        localstack.start(wait_ready=False)
        localstack.wait(lambda: states(localstack).get("05-hold.sh") == "RUNNING", 60, "the held hook")
        # then health already says the services are up, but the healthcheck does not
        assert localstack.services_available()
        assert states(localstack) == {"05-hold.sh": "RUNNING", HOOK.name: "UNKNOWN"}
        code, reason = healthcheck(localstack)
        assert code == 1 and "still running" in reason
        # when the stage goes on, our hook runs from LocalStack's init directory and succeeds
        release.touch()
        localstack.wait(lambda: (localstack.init_report() or {}).get("completed"), 120, "the ready stage")
        assert states(localstack) == {"05-hold.sh": "SUCCESSFUL", HOOK.name: "SUCCESSFUL"}
        code, reason = healthcheck(localstack)
        assert (code, reason) == (0, "provisioned")
        assert (localstack.state_dir / "provision.state").read_text() == "ok\n"
        assert "function  KinesisAccessLogToS3: created" in (localstack.state_dir / "provision.log").read_text()
        # and the pipeline it provisioned uses the stack's settings and is ready to run
        clients = {"endpoint_url": localstack.endpoint, "region_name": "us-east-1"}
        lam = boto3.client("lambda", **clients)
        assert lam.get_function_configuration(FunctionName="KinesisAccessLogToS3")["State"] == "Active"
        (mapping,) = lam.list_event_source_mappings(FunctionName="KinesisAccessLogToS3")["EventSourceMappings"]
        assert mapping["State"] == "Enabled" and mapping["EventSourceArn"].endswith(":stream/nginx-accesslog-stream")
        kinesis = boto3.client("kinesis", **clients)
        summary = kinesis.describe_stream_summary(StreamName="nginx-accesslog-stream")["StreamDescriptionSummary"]
        assert summary["StreamStatus"] == "ACTIVE"
        assert [b["Name"] for b in boto3.client("s3", **clients).list_buckets()["Buckets"]] == ["nginx-accesslog"]
    finally:
        release.touch()
        localstack.stop()
    # and stopping it ended every process it started (hooks, kinesis-mock, functions)
    assert not group_alive(localstack.process.pid)
    assert localstack.survivors == set()


def test_healthcheck_after_a_failing_hook(failing_localstack):
    # given LocalStack's ready stage completed with our hook failing
    assert failing_localstack.init_report()["completed"] is True
    assert states(failing_localstack) == {HOOK.name: "ERROR"}
    # then LocalStack itself says healthy, the healthcheck does not, and says what to do
    assert failing_localstack.services_available()
    code, reason = healthcheck(failing_localstack)
    assert code == 1 and reason.startswith("provisioning failed (exit 2)") and "./start.sh provision" in reason
    assert "init_resource.py: error:" in (failing_localstack.state_dir / "provision.log").read_text()


def test_running_the_hook_again_after_a_failure_turns_the_stack_healthy(localstack_interpreters, tmp_path):
    from support.localstack_host import running

    # given a start whose hook failed on a setting (KINESIS_SHARDS=0)
    with running(localstack_interpreters, tmp_path / "localstack", environment={"KINESIS_SHARDS": "0"}) as instance:
        assert states(instance) == {HOOK.name: "ERROR"}
        assert healthcheck(instance)[0] == 1
        # when the cause is fixed and the hook runs again in the running LocalStack, as
        # `./start.sh provision` runs it (docker compose exec ... 10-provision.sh)
        env = instance._env(instance.workdir / "filesystem")
        env.pop("KINESIS_SHARDS")
        rerun = subprocess.run([str(HOOK)], env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        # then the healthcheck says provisioned, although LocalStack still lists the hook
        # as ERROR until it restarts
        assert states(instance) == {HOOK.name: "ERROR"}
        code, reason = healthcheck(instance)
        assert code == 0 and reason == "provisioned (by a re-run after the hook failed)"
        lam = boto3.client("lambda", endpoint_url=instance.endpoint, region_name="us-east-1")
        assert lam.get_function_configuration(FunctionName="KinesisAccessLogToS3")["State"] == "Active"
