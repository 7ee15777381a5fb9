"""The whole stack under Docker: ./start.sh, a request, its record in S3, ./start.sh down.

This is the test users and Docker-capable CI run. It needs a running Docker engine with
Compose v2 and the images' registries; without an engine it skips, saying why.

It never touches a user's own stack: it runs a copy of the checkout (no .env) under a
project name of its own, on free ports, and removes only that project's containers and
volumes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from support.compose import ROOT, compose
from support.net import free_port, wait_until
from support.s3 import bucket_objects, json_lines


def docker_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if info.returncode != 0:
        return "no Docker engine answers (docker info failed): the full-stack test needs one"
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        return "Docker Compose v2 is missing"
    return None


def isolated_checkout(destination: Path) -> Path:
    """The tracked files of this checkout, without a user's .env or local state."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def isolated_env() -> dict[str, str]:
    """Settings of a stack of the test's own: project name, ports (never 80 or 4566)."""
    return {
        **os.environ,
        "COMPOSE_PROJECT_NAME": f"clp-test-{uuid.uuid4().hex[:8]}",
        "WEB_PORT": str(free_port()),
        "LOCALSTACK_PORT": str(free_port()),
        "DASHBOARD_PORT": str(free_port()),
    }


def test_the_stack_test_never_uses_the_users_project_ports_or_files(tmp_path):
    # runs everywhere: the isolation itself, without Docker
    env = isolated_env()
    assert env["COMPOSE_PROJECT_NAME"] != compose()["name"]
    assert env["WEB_PORT"] not in ("80", "8080") and env["LOCALSTACK_PORT"] != "4566"
    ports = compose(env)["services"]
    assert ports["web"]["ports"] == [f"127.0.0.1:{env['WEB_PORT']}:80"]
    assert ports["localstack"]["ports"] == [f"127.0.0.1:{env['LOCALSTACK_PORT']}:4566"]
    assert ports["dashboard"]["ports"] == [f"127.0.0.1:{env['DASHBOARD_PORT']}:8081"]
    # a user's .env (ignored by git) is never copied
    copy = isolated_checkout(tmp_path / "copy")
    assert (copy / "start.sh").exists() and not (copy / ".env").exists()


def stack_s3(env: dict[str, str]):
    """The stack's S3, on the LocalStack port this test's stack publishes."""
    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{env['LOCALSTACK_PORT']}",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    copy = isolated_checkout(tmp_path_factory.mktemp("stack"))
    env = isolated_env()
    started = subprocess.run([str(copy / "start.sh")], cwd=copy, env=env, timeout=1200)
    try:
        assert started.returncode == 0
        yield copy, env
    finally:
        subprocess.run([str(copy / "start.sh"), "down", "--volumes"], cwd=copy, env=env, timeout=300)


@pytest.mark.docker
@pytest.mark.skipif(docker_problem() is not None, reason=str(docker_problem()))
def test_a_request_arrives_in_s3_as_its_record(stack):
    copy, env = stack
    # given the running stack, when a request with a unique path is made
    path = f"/stack-test-{uuid.uuid4().hex}"
    request = urllib.request.Request(f"http://127.0.0.1:{env['WEB_PORT']}{path}", headers={"User-Agent": "stack-test"})
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
    # then its record lands in the bucket within seconds
    s3 = stack_s3(env)

    def record_of_our_request() -> dict | None:
        for key, body in bucket_objects(s3, "nginx-accesslog").items():
            if not key.startswith("errors/"):
                for record in json_lines(body):
                    if record["request_uri"] == path:
                        return record
        return None

    # polling S3 for content: no waiter matches an object's contents
    wait_until(lambda: record_of_our_request() is not None, 60, interval=1)
    found = record_of_our_request()
    assert found is not None, "the request did not reach S3 within 60 s"
    assert found["request_method"] == "GET" and found["status"] == 404
    assert found["http_user_agent"] == "stack-test"
    # and the commands the README gives show it
    for args in (["status"], ["ls"]):
        result = subprocess.run([str(copy / "start.sh"), *args], cwd=copy, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    listing = subprocess.run(
        [str(copy / "start.sh"), "ls"], cwd=copy, env=env, capture_output=True, text=True, check=True
    ).stdout
    keys = [line.split()[-1] for line in listing.splitlines() if not line.split()[-1].startswith("errors/")]
    shown = "".join(
        subprocess.run(
            [str(copy / "start.sh"), "cat", key], cwd=copy, env=env, capture_output=True, text=True, check=True
        ).stdout
        for key in keys
    )
    assert path in shown


@pytest.mark.docker
@pytest.mark.skipif(docker_problem() is not None, reason=str(docker_problem()))
def test_the_dashboard_serves_its_page_and_counts_a_request(stack):
    _, env = stack
    base = f"http://127.0.0.1:{env['DASHBOARD_PORT']}"
    # given a request with a unique path through the stack's nginx
    path = f"/dashboard-test-{uuid.uuid4().hex}"
    with contextlib.suppress(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://127.0.0.1:{env['WEB_PORT']}{path}", timeout=10)

    def paths() -> dict[str, int]:
        with urllib.request.urlopen(f"{base}/api/top?window=15m&by=path&limit=100", timeout=30) as response:
            return {row["value"]: row["requests"] for row in json.loads(response.read())["rows"]}

    # then the dashboard's API counts it, and its page and chart library come from the image
    wait_until(lambda: path in paths(), 60, interval=1)
    assert paths().get(path) == 1
    for asset in ("/", "/vendor/uPlot.iife.min.js", "/app.js"):
        with urllib.request.urlopen(base + asset, timeout=10) as response:
            assert response.status == 200 and response.read()


@pytest.mark.docker
@pytest.mark.skipif(docker_problem() is not None, reason=str(docker_problem()))
def test_a_request_made_just_before_down_is_back_after_the_next_start_once(stack, tmp_path):
    copy, env = stack
    # given a request made right before the stop: its line may still be in nginx's log,
    # fluentd's buffer or the stream when `down` begins
    path = f"/stack-test-{uuid.uuid4().hex}"
    with contextlib.suppress(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://127.0.0.1:{env['WEB_PORT']}{path}", timeout=10)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(copy / "start.sh"), *args], cwd=copy, env=env, capture_output=True, text=True)

    # when the stack stops and starts again
    stopped = run("down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "Your logs are kept in the Docker volume" in stopped.stdout
    assert run().returncode == 0
    # then the request's record is in the bucket exactly once, and in an export
    s3 = stack_s3(env)
    records = [
        record
        for key, body in bucket_objects(s3, "nginx-accesslog").items()
        if not key.startswith(("errors/", "_pipeline/"))
        for record in json_lines(body)
        if record["request_uri"] == path
    ]
    assert len(records) == 1
    exported = run("export", str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr
    assert any(path in p.read_text() for p in (tmp_path / "export").rglob("*.json"))
