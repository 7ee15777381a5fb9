"""Failures a user meets at `./start.sh`, on the real engine (issue 17): each names the
service and the cause and exits non-zero within 15 s of the failure being knowable."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
from support.stack import Stack

pytestmark = pytest.mark.docker

WITHIN = 15.0  # seconds from a failure being knowable to start.sh's exit


class FirstSeen:
    """Polls `check` in a thread; `at` is when it first returned true."""

    def __init__(self, check) -> None:
        self.check, self.at = check, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while self.at is None and not self._stop.wait(0.2):
            try:
                if self.check():
                    self.at = time.time()
            except (OSError, ValueError, subprocess.SubprocessError):
                continue

    def __enter__(self) -> FirstSeen:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def start(stack: Stack) -> tuple[subprocess.CompletedProcess, float]:
    """./start.sh, and the wall-clock time it exited."""
    result = stack.run(timeout=900)
    return result, time.time()


def test_a_taken_port_is_named_before_anything_starts(stack_factory):
    stack = stack_factory()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(stack.env["WEB_PORT"])))
        holder.listen()
        began = time.time()
        result, ended = start(stack)
    assert result.returncode != 0
    assert f"port {stack.env['WEB_PORT']} is taken by another program" in result.stderr
    assert "WEB_PORT" in result.stderr and "Traceback" not in result.stderr
    assert ended - began <= WITHIN
    assert stack.compose("ps", "--all", "--quiet").stdout.strip() == ""  # nothing was started


def test_an_image_that_cannot_be_pulled_is_named(stack_factory):
    stack = stack_factory(LOCALSTACK_IMAGE="localstack/localstack:0.0.404-missing")
    began = time.time()
    result, ended = start(stack)
    assert result.returncode != 0
    assert "docker compose up failed" in result.stderr
    assert "an image could not be pulled (service localstack)" in result.stderr, result.stderr
    print(f"\npull failure reported after {ended - began:.1f} s")
    assert ended - began <= WITHIN


def test_a_service_that_exits_is_named_with_its_log(stack_factory):
    # an image whose command ends at once (python3 with no input) in LocalStack's place
    from support.engine import query_base_image

    stack = stack_factory(LOCALSTACK_IMAGE=query_base_image())

    def exited() -> bool:
        container = stack.container("localstack")
        if not container:
            return False
        state = json.loads(stack.docker("inspect", "--format", "{{json .State}}", container).stdout)
        return state["Status"] in ("exited", "restarting") or state.get("FinishedAt", "0001").startswith("20")

    with FirstSeen(exited) as seen:
        result, ended = start(stack)
    assert result.returncode != 0
    assert "start.sh: localstack exited with code 0" in result.stderr, result.stderr
    assert "--- docker compose logs --tail 15 localstack ---" in result.stderr
    assert seen.at is not None
    print(f"\nexit reported {ended - seen.at:.1f} s after the container first exited")
    assert ended - seen.at <= WITHIN


def test_a_failing_provisioning_hook_is_named_with_its_output(stack_factory):
    # S3 refuses the bucket name, so init_resource.py (the ready.d hook) fails
    stack = stack_factory(BUCKET_NAME="Not_A_Valid_Bucket")
    ready = f"http://127.0.0.1:{stack.env['LOCALSTACK_PORT']}/_localstack/init/ready"

    def hook_failed() -> bool:
        with urllib.request.urlopen(ready, timeout=2) as answer:
            scripts = json.load(answer)["scripts"]
        return any(script["state"] == "ERROR" for script in scripts)

    with FirstSeen(hook_failed) as seen:
        result, ended = start(stack)
    assert result.returncode != 0
    assert "start.sh: provisioning failed in localstack" in result.stderr, result.stderr
    assert "Not_A_Valid_Bucket" in result.stderr
    assert "./start.sh provision" in result.stderr and "Traceback" not in result.stderr
    assert seen.at is not None
    print(f"\nfailed hook reported {ended - seen.at:.1f} s after LocalStack marked it ERROR")
    assert ended - seen.at <= WITHIN


def test_compose_behaves_as_the_fake_docker_plays_it(stack_factory):
    """What tests/support/fake_docker.py plays for start.sh's unit tests, seen once here:
    `up --detach` ends with "dependency failed to start" when a dependency fails, a
    container that exits keeps its last health status, and a restart loop shows as
    `restarting` with a growing RestartCount."""
    from support.engine import query_base_image

    stack = stack_factory(LOCALSTACK_IMAGE=query_base_image())
    seen: list[tuple[str, int, str]] = []

    def record() -> bool:
        container = stack.container("localstack")
        if container:
            state = json.loads(stack.docker("inspect", "--format", "{{json .State}}", container).stdout)
            health = (state.get("Health") or {}).get("Status", "none")
            seen.append((state["Status"], int(stack.docker("inspect", "--format", "{{.RestartCount}}",
                                                            container).stdout), health))  # fmt: skip
        return False

    with FirstSeen(record):
        up = stack.compose("up", "--detach", check=False, timeout=300)
        time.sleep(5)
    assert up.returncode != 0
    assert "dependency failed to start" in up.stdout + up.stderr, up.stdout + up.stderr
    statuses = {status for status, _, _ in seen}
    assert "restarting" in statuses or "exited" in statuses, seen
    restarts = [count for _, count, _ in seen]
    assert restarts[-1] > restarts[0], seen  # the loop goes on: RestartCount grows
    # an exited container's health stays what it last was (here: never checked, "starting")
    assert {health for status, _, health in seen if status != "running"} <= {"starting", "unhealthy"}, seen
