"""The whole stack under Docker: ./start.sh, a request, its record in S3, ./start.sh down.

This is the test users and Docker-capable CI run. It needs a running Docker engine with
Compose v2 and the images' registries; without an engine it skips, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
import uuid

import boto3
import pytest
from support.compose import ROOT
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


pytestmark = [pytest.mark.docker, pytest.mark.skipif(docker_problem() is not None, reason=str(docker_problem()))]


@pytest.fixture(scope="module")
def stack():
    port = free_port()
    env = {**os.environ, "WEB_PORT": str(port)}
    started = subprocess.run([str(ROOT / "start.sh")], cwd=ROOT, env=env, timeout=1200)
    try:
        assert started.returncode == 0
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([str(ROOT / "start.sh"), "down", "--volumes"], cwd=ROOT, env=env, timeout=300)


def test_a_request_arrives_in_s3_as_its_record(stack):
    # given the running stack, when a request with a unique path is made
    path = f"/stack-test-{uuid.uuid4().hex}"
    request = urllib.request.Request(stack + path, headers={"User-Agent": "stack-test"})
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
    # then its record lands in the bucket within seconds
    s3 = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:4566",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )

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
