"""The whole stack under Docker: ./start.sh, a request, its record in S3, ./start.sh down.

It runs on the test engine (tests/support/engine.py: a private dockerd with stand-in
images, or the user's own engine with CLP_TEST_ENGINE=user), never on a user's stack: a
copy of the checkout (no .env) under a project name of its own, on free ports, removing
only that project's containers and volumes (tests/support/stack.py).
"""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest
from support.compose import compose
from support.net import wait_until
from support.stack import isolated_checkout, isolated_env, plain_bytes, started_stack


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


@pytest.fixture(scope="module")
def stack(engine_env, tmp_path_factory):
    with started_stack(tmp_path_factory.mktemp("stack"), engine_env) as (stack, _, _):
        yield stack


@pytest.mark.docker
def test_a_request_arrives_in_s3_as_its_record(stack):
    # given the running stack, when a request with a unique path is made
    path = f"/stack-test-{uuid.uuid4().hex}"
    assert stack.request(path, agent="stack-test") == 404
    # then its record lands in the bucket within seconds
    assert stack.wait_for_paths({path}, 60) == {path: 1}, "the request did not reach S3 within 60 s"
    (found,) = [record for record in stack.records() if record["request_uri"] == path]
    assert found["request_method"] == "GET" and found["status"] == 404
    assert found["http_user_agent"] == "stack-test"
    # and the commands the README gives show it
    for args in (["status"], ["ls"]):
        result = stack.run(*args)
        assert result.returncode == 0, result.stderr
    listing = stack.run("ls").stdout
    keys = [line.split()[-1] for line in listing.splitlines() if not line.split()[-1].startswith("errors/")]
    shown = "".join(stack.run("cat", key).stdout for key in keys)
    assert path in shown


@pytest.mark.docker
def test_the_dashboard_serves_its_page_and_counts_a_request(stack):
    base = f"http://127.0.0.1:{stack.env['DASHBOARD_PORT']}"
    # given a request with a unique path through the stack's nginx
    path = f"/dashboard-test-{uuid.uuid4().hex}"
    stack.request(path)

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
def test_a_request_made_just_before_down_is_back_after_the_next_start_once(stack, tmp_path):
    # given a request made right before the stop: its line may still be in nginx's log,
    # fluentd's buffer or the stream when `down` begins
    path = f"/stack-test-{uuid.uuid4().hex}"
    stack.request(path)
    # when the stack stops and starts again
    stopped = stack.run("down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "Your logs are kept in the Docker volume" in stopped.stdout
    started = stack.run()
    assert started.returncode == 0, started.stdout + started.stderr
    # then the request's record is in the bucket exactly once, and in an export
    assert [record["request_uri"] for record in stack.records()].count(path) == 1
    exported = stack.run("export", str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr
    # (in a raw .json object, or in a .json.gz the compactor service merged it into)
    exported_files = [p for p in (tmp_path / "export").rglob("*.json*") if p.is_file()]
    assert any(path.encode() in plain_bytes(p) for p in exported_files)
