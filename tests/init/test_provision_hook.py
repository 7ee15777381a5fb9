"""init/ready.d/10-provision.sh, run as LocalStack (or `./start.sh provision`) runs it.

The hook provisions through the real init_resource.py; moto server stands in for
LocalStack's endpoint here (tests/localstack runs it inside the real LocalStack). The
PIPELINE_* variables are the hook's one documented place where a host differs from the
image.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3
import bucket_mirror
import pytest
from support.compose import ROOT
from support.localstack_host import alive
from support.net import wait_until

HOOK = ROOT / "init" / "ready.d" / "10-provision.sh"
STARTED: list[Path] = []  # state folders of hooks run by this test: their watchers end with it


@pytest.fixture(autouse=True)
def stop_watchers():
    """The hook leaves init/bucket_mirror.py's watcher running, as in the container: stop
    it as the shutdown hook does."""
    yield
    while STARTED:
        bucket_mirror.stop_watcher(STARTED.pop(), timeout=10)


def run_hook(endpoint: str, state_dir: Path, **env: str) -> subprocess.CompletedProcess:
    python_dir = str(Path(sys.executable).parent)  # its python3 has boto3, as LocalStack's has
    STARTED.append(state_dir)
    return subprocess.run(
        [str(HOOK)],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "PATH": python_dir + os.pathsep + os.environ["PATH"],
            "PIPELINE_INIT_DIR": str(ROOT / "init"),
            "PIPELINE_ENDPOINT": endpoint,
            "PIPELINE_STATE_DIR": str(state_dir),
            "PIPELINE_DATA_DIR": str(state_dir.parent / "saved-logs"),
            **env,
        },
    )


def test_hook_provisions_and_records_success(aws, tmp_path):
    # given an empty account, when the hook runs
    result = run_hook(aws, tmp_path / "state")
    # then everything exists, the state file says ok and the log holds what it printed
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "state" / "provision.state").read_text() == "ok\n"
    log = (tmp_path / "state" / "provision.log").read_text()
    assert "function  KinesisAccessLogToS3: created" in log and log == result.stdout
    s3 = boto3.client("s3", endpoint_url=aws, region_name="us-east-1")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["nginx-accesslog"]


def test_hook_uses_the_stacks_settings(aws, tmp_path):
    # given the stack's settings in the environment (compose passes .env's values)
    result = run_hook(aws, tmp_path / "state", BUCKET_NAME="my-logs", KINESIS_STREAM="my-stream")
    assert result.returncode == 0, result.stdout + result.stderr
    s3 = boto3.client("s3", endpoint_url=aws, region_name="us-east-1")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["my-logs"]
    kinesis = boto3.client("kinesis", endpoint_url=aws, region_name="us-east-1")
    assert kinesis.list_streams()["StreamNames"] == ["my-stream"]


def test_failing_hook_records_failure_and_its_output(aws, tmp_path):
    # given a setting the provisioning refuses (no shards)
    result = run_hook(aws, tmp_path / "state", KINESIS_SHARDS="0")
    # then the hook fails, and its state and log say why
    assert result.returncode != 0
    state = (tmp_path / "state" / "provision.state").read_text()
    assert state.startswith("failed (exit ")
    assert "init_resource.py: error:" in (tmp_path / "state" / "provision.log").read_text()


def test_a_rerun_after_failure_turns_the_state_ok(aws, tmp_path):
    # given a failed run, when the cause is fixed and the hook runs again
    assert run_hook(aws, tmp_path / "state", KINESIS_SHARDS="0").returncode != 0
    result = run_hook(aws, tmp_path / "state")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "state" / "provision.state").read_text() == "ok\n"


def test_the_hook_restores_saved_objects_before_it_provisions_and_starts_one_watcher(aws, tmp_path):
    # given objects saved at the last stop (the saved-logs volume)
    saved = tmp_path / "saved-logs" / "nginx-accesslog" / "2026" / "11" / "27" / "10"
    saved.mkdir(parents=True)
    (saved / "nginx_access_log_a.json").write_bytes(b'{"status":200}\n')
    # when the hook runs, and runs again (`./start.sh provision`)
    first = run_hook(aws, tmp_path / "state")
    assert first.returncode == 0, first.stdout + first.stderr
    first_watcher = int((tmp_path / "state" / "mirror.pid").read_text())
    second = run_hook(aws, tmp_path / "state")
    assert second.returncode == 0, second.stdout + second.stderr
    # then the object is back under its key before the stream was created, once
    assert first.stdout.index("restored 1 objects") < first.stdout.index("stream    nginx-accesslog-stream: created")
    assert "restored 0 objects" in second.stdout and "(1 were there already)" in second.stdout
    s3 = boto3.client("s3", endpoint_url=aws, region_name="us-east-1")
    body = s3.get_object(Bucket="nginx-accesslog", Key="2026/11/27/10/nginx_access_log_a.json")["Body"].read()
    assert body == b'{"status":200}\n'
    # and one watcher runs: the second run replaced the first, and it saves new objects
    assert alive({first_watcher}) == set()
    assert bucket_mirror.watcher_pid(tmp_path / "state") not in (None, first_watcher)
    s3.put_object(Bucket="nginx-accesslog", Key="new.json", Body=b"{}\n")
    assert wait_until((tmp_path / "saved-logs" / "nginx-accesslog" / "new.json").exists, 30, interval=0.2)
