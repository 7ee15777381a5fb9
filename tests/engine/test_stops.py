"""Stops on the real engine, with traffic running (issue 17): LocalStack stopped or
restarted alone (Compose's SIGTERM through the image's supervisor), killed, the whole
stack's `./start.sh down` and the next start, and `down --volumes`.

The bound asserted for lost lines is docs/persistence.md's: only lines
written within 5 s before a stop of LocalStack alone or a crash, never a line twice,
never an object lost on a stop.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import time
from collections import Counter

import pytest
from support.net import wait_until
from support.stack import Stack, Traffic, plain_bytes, started_stack

pytestmark = pytest.mark.docker

LOSS_BOUND = 5.0  # seconds before a stop or crash within which a line may be lost (docs/persistence.md)
SLOW_HOOK_SECONDS = 8  # longer than the supervisor's default SHUTDOWN_TIMEOUT (5 s)
SLOW_HOOK = f"""#!/bin/bash
# added by tests/engine/test_stops.py: a shutdown hook longer than 5 s must still finish
sleep {SLOW_HOOK_SECONDS}
echo "slow shutdown hook finished"
"""


def add_slow_shutdown_hook(stack: Stack) -> None:
    hook = stack.folder / "init" / "shutdown.d" / "20-slow-test-hook.sh"
    hook.write_text(SLOW_HOOK)
    hook.chmod(0o755)


@pytest.fixture(scope="module")
def stack(engine_env, tmp_path_factory):
    with started_stack(tmp_path_factory.mktemp("stops"), engine_env, add_slow_shutdown_hook) as (stack, _, _):
        yield stack


def healthy(stack: Stack, service: str) -> bool:
    state = stack.docker("inspect", "--format", "{{.State.Status}} {{.State.Health.Status}}",
                         stack.container(service), check=False)  # fmt: skip
    return state.stdout.split() == ["running", "healthy"]


def settle(stack: Stack, traffic: Traffic, timeout: float = 60) -> Counter:
    """Wait until every answered request is in the bucket, or until no more arrive;
    return how many records each of the traffic's paths has."""
    last: list[Counter] = []

    def arrived() -> bool:
        counts = Counter(r["request_uri"] for r in stack.records() if r["request_uri"] in traffic.sent)
        done = set(counts) == set(traffic.sent) or (last and counts == last[-1])
        last.append(counts)
        return bool(done) and len(last) > 3

    wait_until(arrived, timeout, interval=2)
    return last[-1]


def lines_as_read(stack: Stack) -> Counter:
    """Every record and error line in the bucket, through the compaction manifests, counted."""
    return Counter(json.dumps(line, sort_keys=True) for line in stack.lines() + stack.lines(errors=True))


def assert_lost_only_just_before(lost: set[str], traffic: Traffic, event: float, what: str) -> None:
    early = {path: event - traffic.sent[path] for path in lost if traffic.sent[path] < event - LOSS_BOUND}
    assert not early, f"{what}: lines written more than {LOSS_BOUND} s before it were lost: {early}"


@pytest.mark.parametrize("how", ["stop-start", "restart"])
def test_localstack_stopped_or_restarted_alone_keeps_every_object(stack, how):
    with Traffic(stack, prefix=f"alone-{how}") as traffic:
        time.sleep(4)
        before = lines_as_read(stack)
        container = stack.container("localstack")
        began = time.time()
        if how == "restart":
            stack.compose("restart", "localstack", timeout=180)
        else:
            stack.compose("stop", "localstack", timeout=180)
            stopped = stack.docker("inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip()
            # the supervisor let LocalStack stop its services and run every hook: exit 0,
            # not Docker's SIGKILL (137) after the grace period
            assert stopped == "0", stack.compose("logs", "--tail", "40", "localstack").stdout
            stack.compose("start", "localstack", timeout=180)
        seconds = time.time() - began
        assert wait_until(lambda: healthy(stack, "localstack"), 180, interval=1), "LocalStack did not come back"
        time.sleep(3)
    logs = stack.compose("logs", "--no-color", "--since", f"{int(time.time() - began) + 30}s", "localstack").stdout
    # the shutdown hooks ran to their end although they took longer than 5 s
    assert "slow shutdown hook finished" in logs, logs[-3000:]
    assert "saved:" in logs
    print(f"\n{how}: {seconds:.1f} s, {len(traffic.sent)} requests answered")
    counts = settle(stack, traffic)
    after = lines_as_read(stack)
    # every line of before the stop is back, once, as a reader sees the bucket (not the
    # objects byte for byte: the compactor service merges them meanwhile)
    assert {line: after[line] for line in before} == dict.fromkeys(before, 1)
    # no line twice; lost lines only among those written just before the stop
    assert max(counts.values()) == 1
    lost = set(traffic.sent) - set(counts)
    print(f"{how}: {len(lost)} of {len(traffic.sent)} lines lost")
    assert_lost_only_just_before(lost, traffic, began, how)


def test_a_crash_of_localstack_then_start_loses_at_most_the_last_moment(stack):
    with Traffic(stack, prefix="crash") as traffic:
        time.sleep(4)
        killed = time.time()
        stack.docker("kill", stack.container("localstack"))
        time.sleep(1)
        started = stack.run(timeout=600)
        assert started.returncode == 0, started.stdout + started.stderr
        time.sleep(3)
    counts = settle(stack, traffic)
    assert max(counts.values()) == 1
    lost = set(traffic.sent) - set(counts)
    print(f"\ncrash: {len(lost)} of {len(traffic.sent)} lines lost")
    assert_lost_only_just_before(lost, traffic, killed, "docker kill")


def test_down_then_start_brings_back_every_line_once(stack):
    with Traffic(stack, prefix="down") as traffic:
        time.sleep(4)
        stopped = stack.run("down", timeout=600)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "nginx stopped" in stopped.stdout and "Your logs are kept in the Docker volume" in stopped.stdout
    assert stack.compose("ps", "--all", "--quiet").stdout.strip() == ""
    started = stack.run(timeout=600)
    assert started.returncode == 0, started.stdout + started.stderr
    counts = Counter(r["request_uri"] for r in stack.records() if r["request_uri"] in traffic.sent)
    # every request nginx answered before it stopped is back, once, right after the start
    assert set(counts) == set(traffic.sent) and max(counts.values()) == 1
    print(f"\ndown: {len(traffic.sent)} answered requests, all back once")


def answer_prompt(stack: Stack, answer: str) -> tuple[int, str]:
    """./start.sh down --volumes on a terminal (a pty), answering its question."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([str(stack.folder / "start.sh"), "down", "--volumes"], cwd=stack.folder,
                               env=stack.env, stdin=terminal, stdout=terminal, stderr=terminal)  # fmt: skip
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        if b"[y/N]" in chunk:
            os.write(controller, answer.encode() + b"\n")
    os.close(controller)
    return process.wait(timeout=300), output.decode(errors="replace")


def project_volumes(stack: Stack) -> set[str]:
    listed = stack.docker("volume", "ls", "--quiet", "--filter", f"label=com.docker.compose.project={stack.project}")
    return set(listed.stdout.split())


def test_down_volumes_asks_and_removes_only_on_yes(stack):
    volumes = project_volumes(stack)
    assert {f"{stack.project}_{name}" for name in ("saved-logs", "nginx-logs", "fluentd-state")} <= volumes
    code, output = answer_prompt(stack, "n")
    assert code == 1 and "Nothing deleted." in output
    assert project_volumes(stack) == volumes
    code, output = answer_prompt(stack, "y")
    assert code == 0, output
    assert "Deleted." in output
    assert project_volumes(stack) == set()
    assert stack.compose("ps", "--all", "--quiet").stdout.strip() == ""


def test_a_saved_logs_folder_keeps_readable_files_after_down_volumes(stack_factory):
    # (this stack also has two shards: KINESIS_SHARDS reaches provisioning through compose)
    stack = stack_factory(SAVED_LOGS="./my-saved-logs", KINESIS_SHARDS="2")
    folder = stack.folder / "my-saved-logs"
    folder.mkdir()
    owner = 4321  # the user who owns the folder (tests run as root)
    os.chown(folder, owner, owner)
    started = stack.run(timeout=1200)
    assert started.returncode == 0, started.stdout + started.stderr
    status = stack.run("status")
    assert re.search(r"^stream +nginx-accesslog-stream: ACTIVE, 2 shard\(s\)", status.stdout, re.MULTILINE), (
        status.stdout
    )
    path = "/saved-logs-folder-test"
    stack.request(path)
    assert stack.wait_for_paths({path}, 30) == {path: 1}
    stopped = stack.run("down", "--volumes", timeout=600, stdin=subprocess.DEVNULL)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "are kept" in stopped.stdout
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert any(path.encode() in plain_bytes(p) for p in files)
    # readable by the folder's owner (and anyone): files 644, folders 755
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in files)
    assert all(p.stat().st_mode & 0o055 == 0o055 for p in folder.rglob("*") if p.is_dir())
    assert folder.stat().st_uid == owner
