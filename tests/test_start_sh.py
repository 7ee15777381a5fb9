"""start.sh without a Docker engine: its checks, how it waits, and every failure it reports.

tests/support/fake_docker.py stands in for the Docker CLI and plays what Compose and the
engine do (dependency health, exited containers, restart loops, failing pulls and port
binds, stops, one-off containers, `docker cp`) on a fake clock, so a test asserts how soon
start.sh gives up, and in which order it stops things, without waiting.
Each test runs a copy of start.sh in its own folder: a user's .env and stack are never
read or touched. The full run with a real engine is tests/test_stack.py.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import fake_docker
from support.compose import ROOT, compose
from support.dashboard_server import Server
from support.net import free_port

TOOLS = ["bash", "dirname", "basename", "sed", "grep", "cut", "tail", "head", "cat", "mktemp", "rm", "mkdir"]
TOOLS += ["find", "cksum", "sort", "tr"]  # the query sources' checksum
TOOLS += ["curl"]  # ./start.sh query asks the dashboard's port first
BOUND = 15  # seconds from a knowable failure to start.sh's exit (issue: "within 15 s")

PROVISIONING = "provisioning still running: 10-provision.sh"
HEALTHY = {"status": "running", "health": "healthy", "verdict": "provisioned"}
STARTING = {"status": "running", "health": "starting", "verdict": PROVISIONING}


class Run:
    """One start.sh run: its result, the fake clock at its end, and the docker calls."""

    def __init__(self, result: subprocess.CompletedProcess, state: Path | None) -> None:
        self.code, self.stdout, self.stderr = result.returncode, result.stdout, result.stderr or ""
        self.clock = fake_docker.clock(state) if state else 0.0
        self.timed_calls = fake_docker.calls(state) if state else []
        self.calls = [args for _, args in self.timed_calls]


@pytest.fixture
def start(tmp_path):
    """Run a copy of start.sh in tmp_path/work with a scripted docker; returns a Run."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy2(ROOT / "start.sh", work / "start.sh")
    shutil.copy2(ROOT / "docker-compose.yml", work / "docker-compose.yml")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))

    def _start(
        *args: str,
        scenario: dict | None = None,
        dotenv: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        command: str = "./start.sh",
        merged: bool = False,
        tty_input: str | None = None,
    ) -> Run:
        """merged: stderr into stdout (one stream, in order); tty_input: stdin is a
        terminal (a pty) on which the user types this."""
        state = tmp_path / "docker-state"
        extra = {}
        if scenario is not None:
            extra = fake_docker.install(bin_dir, scenario, state)
        if dotenv is not None:
            (work / ".env").write_text(dotenv)
        stdin: int = subprocess.DEVNULL  # never the terminal pytest runs in
        terminal = None
        if tty_input is not None:
            terminal, stdin = pty.openpty()
            os.write(terminal, tty_input.encode())
        try:
            result = subprocess.run(
                [command, *args],
                cwd=cwd or work,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if merged else subprocess.PIPE,
                text=True,
                timeout=60,
                env={
                    "PATH": str(bin_dir),
                    "HOME": str(tmp_path),
                    # nothing listens on these: the port checks pass unless a test says otherwise
                    "WEB_PORT": str(free_port()),
                    "LOCALSTACK_PORT": str(free_port()),
                    "DASHBOARD_PORT": str(free_port()),
                    **extra,
                    **(env or {}),
                },
            )
        finally:
            if terminal is not None:
                os.close(terminal)
                os.close(stdin)
        return Run(result, state if scenario is not None else None)

    _start.work = work
    return _start


def timeline(*steps: tuple[float, dict]) -> list:
    return [[at, state] for at, state in steps]


def healthy_stack(ready_at: float = 4) -> dict:
    return {
        "images_present": True,
        "up": {"at": ready_at, "exit": 0},
        "services": {  # no container before `up` ran (the clock's first tick)
            "localstack": timeline((1, STARTING), (ready_at, HEALTHY)),
            "fluentd": timeline((ready_at, {"status": "running", "health": "starting"}), (ready_at + 2, HEALTHY)),
            "web": timeline((ready_at + 2, {"status": "running", "health": "starting"}), (ready_at + 4, HEALTHY)),
        },
    }


# --- usage ----------------------------------------------------------------------------


def test_help_lists_every_command(start):
    result = start("--help", scenario=None)
    assert result.code == 0
    for command in (
        "up",
        "down [-v|--volumes]",
        "uninstall",
        "export DIR",
        "provision",
        "status",
        "ls",
        "cat KEY",
        "logs",
    ):
        assert f"./start.sh {command}" in result.stdout or f"./start.sh [{command}]" in result.stdout, command
    # and what a user must know before using them
    assert "DRAIN_TIMEOUT" in result.stdout and "overwritten" in result.stdout


def test_help_works_by_a_relative_path_from_another_directory(start, tmp_path):
    # given the user is in the parent folder and types work/start.sh --help
    result = start("--help", cwd=tmp_path, command="work/start.sh")
    assert result.code == 0 and "./start.sh down" in result.stdout


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["query", "--help"], "./start.sh query [--since 1h"),
        (["query", "--since", "2h", "-h"], "./start.sh query [--since 1h"),
        (["traffic", "--help"], "./start.sh traffic [--rate R]"),
        (["compact", "--help"], "./start.sh compact [--since 24h]"),
        (["ls", "--help"], "./start.sh ls [PREFIX]"),
        (["cat", "-h"], "./start.sh cat KEY [--pretty]"),
        (["logs", "--help"], "./start.sh logs [--since 10m]"),
        (["down", "--help"], "./start.sh down [-v|--volumes]"),
        (["export", "--help"], "./start.sh export DIR"),
        (["status", "--help"], "./start.sh status"),
        (["provision", "--help"], "./start.sh provision"),
        (["up", "--help"], "./start.sh [up]"),
    ],
)
def test_a_commands_help_needs_no_docker_and_no_stack(start, args, shown):
    # given no docker at all on PATH
    result = start(*args)
    assert result.code == 0, result.stderr
    assert result.stdout.lstrip().startswith(shown)
    assert "./start.sh" in result.stdout and result.stderr == ""
    other = {"query": "./start.sh ls", "ls": "./start.sh query", "down": "./start.sh export"}.get(args[0])
    assert other is None or other not in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["bogus"],
        ["down", "--bogus"],
        ["up", "extra"],
        ["down", "-v", "x"],
        ["provision", "x"],
        ["status", "x"],
        ["export"],
        ["export", ""],
        ["export", "a", "b"],
        ["export", "--to", "a"],
    ],
)
def test_wrong_arguments_one_line_exit_2(start, args):
    result = start(*args)
    assert result.code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("start.sh: ")


# --- prerequisites --------------------------------------------------------------------


def test_no_docker(start):
    result = start()
    assert result.code == 1 and "docker not found" in result.stderr


def test_engine_not_running(start):
    result = start(scenario={"engine": False})
    assert result.code == 1 and "the Docker engine is not running" in result.stderr


def test_compose_v1_only(start):
    result = start(scenario={"compose": False})
    assert result.code == 1 and "Docker Compose v2 not found" in result.stderr


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["127.0.0.1", "[::1]"])
def test_web_port_taken_on_either_loopback(start, family):
    # given another program listening on the web port (browsers try ::1 for localhost too)
    with socket.socket(family) as listener:
        listener.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = start(scenario=healthy_stack(), env={"WEB_PORT": str(port)})
    assert result.code == 1
    assert f"port {port} is taken" in result.stderr and "WEB_PORT" in result.stderr
    assert not any(call[:2] == ["compose", "up"] for call in result.calls)


def test_dashboard_port_taken_names_its_setting_and_the_closing_message_names_it(start):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = start(scenario=healthy_stack(), env={"DASHBOARD_PORT": str(port)})
    assert result.code == 1 and f"port {port} is taken" in result.stderr and "DASHBOARD_PORT" in result.stderr
    assert not any(call[:2] == ["compose", "up"] for call in result.calls)
    # once started, the closing message gives the dashboard's address and the tail
    free = free_port()
    started = start(scenario=healthy_stack(), env={"DASHBOARD_PORT": str(free)})
    assert started.code == 0, started.stderr
    assert f"The dashboard:          http://localhost:{free}/" in started.stdout
    assert "./start.sh tail" in started.stdout


def test_localstack_port_taken_names_its_setting(start):
    # given another LocalStack on the port the stack would publish
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = start(scenario=healthy_stack(), env={"LOCALSTACK_PORT": str(port)})
    assert result.code == 1 and f"port {port} is taken" in result.stderr and "LOCALSTACK_PORT" in result.stderr


@pytest.mark.parametrize(
    ("image", "warned"),
    [
        ("localstack/localstack:4.14.0", False),
        ("localstack/localstack:4.13.1", False),
        ("localstack/localstack:3.8", False),
        ("localstack/localstack:4.15.0", True),
        ("localstack/localstack:2026.03.0", True),
        ("localstack/localstack:latest", True),
        ("localstack/localstack", True),
        ("localstack/localstack-pro:4.0.0", True),
        ("gresau/localstack-persist:4.14.0", False),
    ],
)
def test_token_note_only_for_images_that_need_one(start, image, warned):
    result = start(scenario=healthy_stack(), env={"LOCALSTACK_IMAGE": image})
    assert ("needs LOCALSTACK_AUTH_TOKEN" in result.stderr) is warned
    assert result.code == 0, result.stderr


def test_no_token_note_when_a_token_is_set(start):
    result = start(
        scenario=healthy_stack(), env={"LOCALSTACK_IMAGE": "localstack/localstack:latest", "LOCALSTACK_AUTH_TOKEN": "t"}
    )
    assert "needs LOCALSTACK_AUTH_TOKEN" not in result.stderr


# --- .env, read as Compose reads it -----------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "WEB_PORT=8081",
        "WEB_PORT=8081 # the port I use",
        "WEB_PORT=8081\t# a tab before the comment",
        'WEB_PORT="8081"',
        "WEB_PORT='8081'",
        "export WEB_PORT=8081",
        "WEB_PORT = 8081",
        "WEB_PORT=8081\r",
        "WEB_PORT=80\nWEB_PORT=8081",
    ],
)
def test_dotenv_values_as_compose_reads_them(start, line):
    # given a .env line as users write them, when the stack starts
    result = start(scenario=healthy_stack(), dotenv=line + "\n", env={"WEB_PORT": ""})
    # then start.sh uses the value Compose uses
    assert result.code == 0, result.stderr
    assert "Open http://localhost:8081/" in result.stdout


def test_dotenv_is_data_never_executed(start, tmp_path):
    marker = tmp_path / "pwned"
    result = start(scenario=healthy_stack(), dotenv=f"WEB_PORT=$(touch {marker})\n", env={"WEB_PORT": ""})
    assert not marker.exists()
    assert result.code != 0 or "$(touch" in result.stdout


# --- waiting, and the failures it reports ------------------------------------------------


def test_a_healthy_start_says_what_it_waits_for_and_what_to_do_next(start):
    # given a first start (no images yet) that becomes healthy after 40 s
    scenario = {**healthy_stack(ready_at=40), "images_present": False}
    result = start(scenario=scenario)
    # then it warns that the first start takes minutes, names what it waits for, and ends
    # with the commands a user runs next
    assert result.code == 0, result.stderr
    assert "First start" in result.stdout and "several minutes" in result.stdout
    assert "waiting for localstack: starting (0s)" in result.stdout
    assert f"waiting for localstack: {PROVISIONING} (2s)" in result.stdout
    assert "waiting for fluentd: starting" in result.stdout and "waiting for web: starting" in result.stdout
    for command in ("./start.sh ls", "./start.sh cat", "./start.sh status", "./start.sh logs", "./start.sh down"):
        assert command in result.stdout
    assert 44 <= result.clock <= 44 + 2 * fake_docker_poll()


def test_a_container_that_exited_before_the_start_is_started_again_not_reported(start):
    # given LocalStack killed earlier (exit 137, as `docker kill` leaves it, seen on the
    # real engine): until `up` starts it again, inspect still shows that old exit
    killed = {"status": "exited", "exit": 137, "health": "unhealthy", "started": "2026-12-02T07:00:00Z"}
    again = "2026-12-02T08:00:03Z"
    scenario = healthy_stack(ready_at=8)
    scenario["services"]["localstack"] = timeline(
        (0, killed), (3, {**STARTING, "started": again}), (8, {**HEALTHY, "started": again})
    )
    result = start(scenario=scenario)
    # then start.sh waits for the new start instead of reporting the old exit
    assert result.code == 0, result.stderr
    assert "exited with code 137" not in result.stderr
    assert "The pipeline is up and provisioned." in result.stdout


def test_a_container_that_exits_again_after_the_start_is_reported(start):
    killed = {"status": "exited", "exit": 137, "health": "unhealthy", "started": "2026-12-02T07:00:00Z"}
    scenario = healthy_stack(ready_at=8)
    scenario["services"]["localstack"] = timeline(
        (0, killed), (3, {**killed, "exit": 1, "started": "2026-12-02T08:00:03Z"})
    )
    result = start(scenario=scenario)
    assert result.code == 1
    assert "start.sh: localstack exited with code 1" in result.stderr
    assert result.clock <= 3 + BOUND


def fake_docker_poll() -> int:
    """start.sh's POLL_SECONDS."""
    lines = (ROOT / "start.sh").read_text().splitlines()
    return int(next(line for line in lines if line.startswith("POLL_SECONDS=")).split("=")[1])


def test_failed_provisioning_is_reported_within_the_bound(start):
    # given the ready.d hook fails at 20 s; Compose itself would only say "dependency
    # failed to start" after start_period + retries (7 minutes)
    failed = {
        "status": "running",
        "health": "starting",  # still in its start period
        "verdict": "provisioning failed (exit 1): fix the cause, then run ./start.sh provision",
    }
    scenario = {
        "images_present": True,
        "up": {"at": 420, "exit": 1, "output": "dependency failed to start: container localstack is unhealthy"},
        "services": {"localstack": timeline((0, STARTING), (20, failed))},
        "provision_log": "stream    nginx-accesslog-stream: created\ninit_resource.py: error: AccessDenied: no",
        "init_ready": '{"completed": true, "scripts": [{"name": "10-provision.sh", "state": "ERROR"}]}',
    }
    result = start(scenario=scenario)
    # then start.sh stops within the bound, with the hook's output, LocalStack's own
    # report, and what to do
    assert result.code == 1
    assert 20 <= result.clock <= 20 + BOUND
    assert "provisioning failed in localstack" in result.stderr
    assert "init_resource.py: error: AccessDenied: no" in result.stderr
    assert '"state": "ERROR"' in result.stderr
    assert "./start.sh provision" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_exited_container_that_kept_its_health_status_is_reported(start):
    # given fluentd exits at 30 s; Docker keeps its last health status ("starting")
    scenario = healthy_stack(ready_at=10)
    scenario["up"] = {"at": 400, "exit": 1, "output": "dependency failed to start"}
    scenario["services"]["fluentd"] = timeline(
        (10, {"status": "running", "health": "starting"}),
        (30, {"status": "exited", "exit": 1, "health": "starting"}),
    )
    scenario["logs"] = {"fluentd": "[error]: unexpected error error_class=Aws::Kinesis::Errors::ResourceNotFound"}
    result = start(scenario=scenario)
    assert result.code == 1
    assert 30 <= result.clock <= 30 + BOUND
    assert "fluentd exited with code 1" in result.stderr
    assert "Aws::Kinesis::Errors::ResourceNotFound" in result.stderr


def test_a_restart_loop_with_exit_55_names_the_token_and_stops_the_loop(start):
    # given a LocalStack image newer than 4.14.0 without a token: it exits 55 and
    # `restart: unless-stopped` starts it again and again
    scenario = healthy_stack()
    scenario["services"]["localstack"] = timeline(
        (0, {"status": "running", "health": "starting", "verdict": "not ready: connection refused"}),
        (3, {"status": "restarting", "exit": 55, "restarts": 1, "health": "starting"}),
        (4, {"status": "running", "exit": 0, "restarts": 1, "health": "starting", "verdict": "not ready"}),
    )
    scenario["up"] = {"at": 600, "exit": 1}
    scenario["logs"] = {"localstack": "LocalStack requires an auth token"}
    result = start(scenario=scenario, env={"LOCALSTACK_IMAGE": "localstack/localstack:latest"})
    assert result.code == 1
    assert 3 <= result.clock <= 3 + BOUND
    assert "localstack exited with code" in result.stderr and "LOCALSTACK_AUTH_TOKEN" in result.stderr
    assert ["compose", "stop", "localstack"] in result.calls


@pytest.mark.parametrize(
    ("output", "advice"),
    [
        (
            "Error response from daemon: driver failed programming external connectivity on endpoint "
            "web: Bind for 127.0.0.1:80 failed: port is already allocated",
            "a port is taken",
        ),
        (
            "Error response from daemon: pull access denied for localstack/localstack-pro, repository "
            "does not exist or may require 'docker login'",
            "an image could not be pulled",
        ),
        (
            # as the real engine says it offline (tests/engine/test_failures.py)
            ' localstack Pulling \n localstack Error Get "https://registry-1.docker.io/v2/": dial tcp: '
            "lookup registry-1.docker.io on 10.255.255.53:53: no such host\n"
            'Error response from daemon: Get "https://registry-1.docker.io/v2/": dial tcp: lookup '
            "registry-1.docker.io on 10.255.255.53:53: no such host",
            "an image could not be pulled (service localstack): check your network",
        ),
    ],
)
def test_compose_up_failing_is_reported_within_the_bound(start, output, advice):
    scenario = healthy_stack()
    scenario["up"] = {"at": 2, "exit": 1, "output": output}
    scenario["services"] = {"localstack": timeline((0, STARTING))}
    result = start(scenario=scenario)
    assert result.code == 1
    assert result.clock <= 2 + BOUND
    assert "docker compose up failed" in result.stderr and output in result.stderr
    assert advice in result.stderr


def test_slow_pulls_wait_and_then_succeed(start):
    # given image pulls that take 2 minutes before any container exists
    scenario = healthy_stack(ready_at=150)
    scenario["services"]["localstack"] = timeline((120, STARTING), (150, HEALTHY))
    result = start(scenario=scenario)
    assert result.code == 0, result.stderr
    assert "waiting for localstack: starting (0s)" in result.stdout


def test_a_first_start_says_it_pulls_then_builds_before_localstack_starts(start):
    # given Compose pulling for a minute, then building fluentd's image, then starting
    scenario = {**healthy_stack(ready_at=150), "images_present": False}
    scenario["services"]["localstack"] = timeline((120, STARTING), (150, HEALTHY))
    scenario["up"]["progress"] = [
        [2, " localstack Pulling "],
        [4, " 8a1e25ce7c4f Downloading [=====>        ]  10.2MB/98.1MB"],
        [60, " localstack Pulled "],
        [62, "#5 [fluentd 2/3] RUN gem install fluent-plugin-kinesis -v 3.6.1"],
        [110, " Container centralized-logging-pipeline-localstack-1  Started"],
    ]
    result = start(scenario=scenario)
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    pulling = next(i for i, line in enumerate(lines) if "waiting for docker compose: pulling images" in line)
    building = next(i for i, line in enumerate(lines) if "waiting for docker compose: building fluentd's image" in line)
    starting = [i for i, line in enumerate(lines) if "waiting for localstack: starting" in line][-1]
    assert pulling < building < starting
    assert "first start" in lines[pulling] and "first start" in lines[building]


def test_the_readmes_first_start_lines_are_start_sh_s_own(start):
    # README.md shows a first start's lines: each must be one start.sh prints (timings aside)
    import re

    readme = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```\n(.*?)```", readme, re.S) if "The pipeline is up" in b)
    scenario = {**healthy_stack(ready_at=150), "images_present": False}
    scenario["services"]["localstack"] = timeline((120, STARTING), (150, HEALTHY))
    scenario["up"]["progress"] = [[2, " localstack Pulling "], [60, "#5 [fluentd 2/3] RUN gem install"]]
    scenario["up"]["progress"].append([110, " Container centralized-logging-pipeline-localstack-1  Started"])
    result = start(scenario=scenario)
    assert result.code == 0, result.stderr

    def shown(text: str) -> set[str]:
        lines = {re.sub(r" \(\d+s\)$", "", line.rstrip()) for line in text.splitlines()}
        return {re.sub(r"http://localhost(:\d+)?/", "http://localhost/", line) for line in lines if line.strip()}

    assert shown(block) <= shown(result.stdout), shown(block) - shown(result.stdout)


def test_a_later_start_says_the_build_comes_from_the_cache(start):
    # given images present: `up --build` still runs fluentd's build, from Docker's cache
    scenario = healthy_stack(ready_at=10)
    scenario["up"]["progress"] = [[0, "#5 [fluentd 2/3] RUN gem install (CACHED)"]]
    scenario["services"]["localstack"] = timeline((6, STARTING), (10, HEALTHY))
    result = start(scenario=scenario)
    assert result.code == 0, result.stderr
    assert "waiting for docker compose: building fluentd's image (from Docker's cache)" in result.stdout
    assert "first start" not in result.stdout.lower()


def test_pulling_and_building_are_not_counted_in_start_timeout(start):
    # given a slow network: Compose pulls and builds for 80 s, START_TIMEOUT is 30
    scenario = {**healthy_stack(ready_at=90), "images_present": False}
    scenario["services"]["localstack"] = timeline((82, STARTING), (90, HEALTHY))
    scenario["up"]["progress"] = [[1, " localstack Pulling "], [50, "#5 [fluentd 2/3] RUN gem install"]]
    scenario["up"]["progress"].append([80, " Container centralized-logging-pipeline-localstack-1  Started"])
    result = start(scenario=scenario, env={"START_TIMEOUT": "30"})
    # then it waits them out and starts
    assert result.code == 0, result.stderr
    assert "The pipeline is up and provisioned." in result.stdout


def test_a_stack_that_never_becomes_ready_times_out_with_what_it_waited_for(start):
    scenario = {
        "images_present": True,
        "up": {"at": 1000, "exit": 1},
        "services": {"localstack": timeline((0, STARTING))},
    }
    result = start(scenario=scenario, env={"START_TIMEOUT": "60"})
    assert result.code == 1
    assert 60 <= result.clock <= 60 + BOUND
    assert "not ready after 60s" in result.stderr and "waiting for localstack" in result.stderr


def test_putting_the_saved_logs_back_shows_its_progress_and_is_not_counted_in_start_timeout(start):
    # given a restore of a long day's saved logs that takes 200 s, START_TIMEOUT 60
    restoring = "provisioning still running: 10-provision.sh; restoring s3://nginx-accesslog: {} of 90,000 objects"
    scenario = {
        "images_present": True,
        "up": {"at": 230, "exit": 0},
        "services": {
            "localstack": timeline(
                (1, STARTING),
                (5, {**STARTING, "verdict": restoring.format("1,200")}),
                (100, {**STARTING, "verdict": restoring.format("45,000")}),
                (205, STARTING),
                (230, HEALTHY),
            ),
            "fluentd": timeline((230, HEALTHY)),
            "web": timeline((230, HEALTHY)),
        },
    }
    result = start(scenario=scenario, env={"START_TIMEOUT": "60"})
    # then it waits (25 s outside the restore is within 60 s), showing how far the restore is
    assert result.code == 0, result.stderr
    assert f"waiting for localstack: {restoring.format('1,200')} (" in result.stdout
    assert f"waiting for localstack: {restoring.format('45,000')} (" in result.stdout


def test_start_timeout_still_counts_the_time_after_the_restore(start):
    restoring = "provisioning still running: 10-provision.sh; restoring s3://nginx-accesslog: 1 of 9 objects"
    scenario = {
        "images_present": True,
        "up": {"at": 1000, "exit": 1},
        "services": {"localstack": timeline((1, STARTING), (5, {**STARTING, "verdict": restoring}), (105, STARTING))},
    }
    result = start(scenario=scenario, env={"START_TIMEOUT": "60"})
    assert result.code == 1
    # 100 s of restore are not counted: it gives up 60 s of other waiting later
    assert 160 <= result.clock <= 160 + BOUND
    assert "not ready after 60s" in result.stderr


# --- provision, down ------------------------------------------------------------------


def test_provision_reruns_the_hook_then_starts_the_rest(start):
    # given provisioning failed earlier; after the user fixed it, provision runs again
    failed = {"status": "running", "health": "unhealthy", "verdict": "provisioning failed (exit 1): fix"}
    scenario = healthy_stack()
    scenario["services"] = {"localstack": timeline((0, failed))}
    scenario["after_provision"] = {
        "localstack": timeline((0, HEALTHY)),
        "fluentd": timeline((0, {"status": "running", "health": "starting"}), (4, HEALTHY)),
        "web": timeline((4, {"status": "running", "health": "starting"}), (8, HEALTHY)),
    }
    scenario["provision"] = {"exit": 0, "output": "stream    nginx-accesslog-stream: created"}
    scenario["up"] = {"at": 4, "exit": 0}  # returns once web started, before it is healthy
    result = start("provision", scenario=scenario)
    assert result.code == 0, result.stderr
    assert ["compose", "exec", "-T", "localstack", "/etc/localstack/init/ready.d/10-provision.sh"] in result.calls
    assert "stream    nginx-accesslog-stream: created" in result.stdout
    assert "The pipeline is up and provisioned." in result.stdout


def test_provision_that_fails_again_says_so(start):
    scenario = healthy_stack()
    scenario["services"]["localstack"] = timeline((0, STARTING))
    scenario["provision"] = {"exit": 1, "output": "init_resource.py: error: still broken"}
    result = start("provision", scenario=scenario)
    assert result.code == 1 and "provisioning failed" in result.stderr
    assert "still broken" in result.stdout


@pytest.mark.parametrize("command", ["provision", "status", "ls", "logs"])
def test_commands_on_a_stopped_stack_say_how_to_start_it(start, command):
    result = start(command, scenario={"services": {}})
    assert result.code == 1 and "the stack is not running: start it with ./start.sh" in result.stderr


@pytest.mark.parametrize("args", [["down"], ["down", "--volumes"], ["down", "-v"]])
def test_down_passes_the_right_options_to_compose(start, args):
    # `down` with no option must work under set -u even where an empty array counts as
    # unset (bash 3.2 on macOS)
    result = start(*args, scenario={})
    assert result.code == 0, result.stderr
    expected = ["compose", "down", "--remove-orphans"] + (["--volumes"] if len(args) > 1 else [])
    assert result.calls[-1] == expected


# --- the commands a user runs after start, against an emulator --------------------------


def container_env(dotenv: dict[str, str]) -> dict[str, str]:
    """The environment compose gives LocalStack for these .env values."""
    return {k: str(v) for k, v in compose(dotenv)["services"]["localstack"]["environment"].items()}


MIRROR_STATUS = "saved: 3 objects (0.1 MB) of s3://my-logs in /var/lib/pipeline"


@pytest.fixture
def stack_on_moto(aws, start):
    """A running stack whose LocalStack is moto, with BUCKET_NAME=my-logs in .env.

    init/bucket_mirror.py's `status` answers from a script (MIRROR_STATUS, or what a test
    passes), or, given `saved_logs`, is the real script reading that folder."""
    settings = {"BUCKET_NAME": "my-logs"}

    def _run(*args: str, mirror_status: dict | None = None, saved_logs: Path | None = None) -> Run:
        scenario = {**healthy_stack(), "exec_endpoint": aws, "container_env": container_env(settings)}
        scenario["services"] = {name: timeline((0, HEALTHY)) for name in ("localstack", "fluentd", "web")}
        if saved_logs is None:
            scenario["scripted"] = {"bucket_mirror.py status": mirror_status or {"output": MIRROR_STATUS}}
        else:  # the real bucket_mirror.py, the saved-logs mount being this folder
            scenario["container_env"]["PIPELINE_DATA_DIR"] = str(saved_logs)
        return start(*args, scenario=scenario, dotenv="BUCKET_NAME=my-logs # my own bucket\n")

    return _run


def test_status_uses_the_stacks_settings_and_hints_its_commands(stack_on_moto, aws):
    import init_resource

    # given the stack provisioned with BUCKET_NAME=my-logs
    assert init_resource.main(["--endpoint-url", aws, "--bucket", "my-logs", "--wait-timeout", "10"]) == 0
    result = stack_on_moto("status")
    assert result.code == 0, result.stdout + result.stderr
    assert "bucket    my-logs: 0 record object(s)" in result.stdout
    assert "nginx-accesslog:" not in result.stdout
    # and what the saved logs hold comes last
    assert result.stdout.rstrip().endswith(MIRROR_STATUS)


def test_status_fails_when_the_saved_logs_cannot_be_read(stack_on_moto, aws):
    import init_resource

    assert init_resource.main(["--endpoint-url", aws, "--bucket", "my-logs", "--wait-timeout", "10"]) == 0
    result = stack_on_moto("status", mirror_status={"exit": 1, "output": "bucket_mirror.py: error: no such folder"})
    assert result.code == 1
    assert "bucket    my-logs: 0 record object(s)" in result.stdout and "no such folder" in result.stdout


def test_status_hint_when_missing_names_start_sh_provision(stack_on_moto):
    result = stack_on_moto("status")
    assert result.code == 1
    assert "hint: something is missing: run ./start.sh provision" in result.stdout
    assert "init_resource.py" not in result.stdout


def test_ls_and_cat_show_what_the_handler_wrote(stack_on_moto, handler_module, s3_client, monkeypatch):
    from support.events import KinesisRecord, fluentd_message, kinesis_event, sequence_numbers

    # given the handler wrote two records into the stack's bucket
    s3_client.create_bucket(Bucket="my-logs")
    monkeypatch.setattr(handler_module, "BUCKET_NAME", "my-logs")
    lines = [
        '127.0.0.1 - - [27/Nov/2026:08:00:01 +0000] "GET /a HTTP/1.1" 200 612 "-" "curl/8.5.0" "-"',
        '127.0.0.1 - - [27/Nov/2026:08:00:02 +0000] "GET /b?q=1 HTTP/1.1" 404 153 "-" "curl/8.5.0" "-"',
    ]
    records = [KinesisRecord(fluentd_message(line), seq) for line, seq in zip(lines, sequence_numbers(2), strict=True)]
    handler_module.handler(kinesis_event(records), None)
    # when the user lists the bucket
    listing = stack_on_moto("ls")
    assert listing.code == 0, listing.stderr
    (key,) = [line.split()[-1] for line in listing.stdout.splitlines()]
    assert key.startswith("2026/11/27/08/nginx_access_log_") and "1 object(s)" in listing.stderr
    # then cat prints one record per line, and --pretty indents them
    shown = stack_on_moto("cat", key)
    records = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [r["request_uri"] for r in records] == ["/a", "/b?q=1"]
    pretty = stack_on_moto("cat", f"s3://my-logs/{key}", "--pretty")
    assert pretty.code == 0 and '\n  "status": 404,\n' in pretty.stdout
    # and a wrong key is one line, not a traceback
    missing = stack_on_moto("cat", "2026/no-such-key.json")
    assert missing.code == 1 and missing.stderr.count("\n") == 1 and "no object" in missing.stderr


def test_logs_prints_the_functions_log_lines(stack_on_moto, aws):
    import time

    import boto3

    logs = boto3.client("logs", endpoint_url=aws, region_name="us-east-1")
    group = "/aws/lambda/KinesisAccessLogToS3"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="s1")
    logs.put_log_events(
        logGroupName=group,
        logStreamName="s1",
        logEvents=[{"timestamp": int(time.time() * 1000), "message": '{"records": 2, "objects": 1}'}],
    )
    result = stack_on_moto("logs", "--since", "10m")
    assert result.code == 0, result.stderr
    assert result.stdout.rstrip().endswith('{"records": 2, "objects": 1}')


def test_logs_before_the_function_ran_says_so(stack_on_moto):
    result = stack_on_moto("logs")
    assert result.code == 1 and "the function has not run" in result.stderr


def test_landing_page_and_closing_message_name_only_commands_that_exist(start):
    # every ./start.sh command the page or the closing message names is one start.sh takes
    import re

    page = (ROOT / "nginx" / "html" / "index.html").read_text()
    result = start(scenario=healthy_stack())
    named = set(re.findall(r"\./start\.sh (\w+)", page + result.stdout))
    commands = {"up", "down", "provision", "status", "ls", "cat", "logs", "traffic", "query", "compact", "export"}
    commands.add("tail")  # docs/dashboard.md
    assert named and named <= commands
    assert "awslocal" not in page + result.stdout and "init_resource.py" not in page + result.stdout


def test_scripts_run_from_a_checkout_keep_their_exec_bits():
    for path in ("start.sh", "init/pipeline_cli.py", "init/ready.d/10-provision.sh"):
        assert os.access(ROOT / path, os.X_OK), path


def test_tests_pass_while_another_localstack_holds_4566(start):
    # given something on 127.0.0.1:4566 (a user's LocalStack, or this stack), the tests'
    # own start uses LOCALSTACK_PORT and is not disturbed
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", 4566))
        listener.listen()
    except OSError:
        pass  # already held by someone else: exactly the situation under test
    try:
        result = start(scenario=healthy_stack())
    finally:
        listener.close()
    assert result.code == 0, result.stderr


# --- the query tools (query/), run in their own image on the compose network ------------


@pytest.fixture
def tools_on_moto(aws, start):
    """A running stack whose LocalStack is moto, for ./start.sh query/traffic/compact."""

    def _run(
        *args: str, web_url: str = "", health: str = "healthy", dashboard: dict | None = None, env: dict | None = None
    ) -> Run:
        state = {**HEALTHY, "health": health}
        services = {name: timeline((0, state)) for name in ("localstack", "fluentd", "web")}
        if dashboard is not None:
            services["dashboard"] = timeline((0, dashboard))
        scenario = {
            **healthy_stack(),
            "exec_endpoint": aws,
            "web_url": web_url,
            "query_env": {k: str(v) for k, v in compose()["services"]["query"]["environment"].items()},
            "services": services,
        }
        return start(*args, scenario=scenario, env=env)

    return _run


def test_query_answers_sql_over_what_the_handler_wrote(tools_on_moto, handler_module, s3_client, tmp_path):
    from datetime import UTC, datetime

    from support.events import KinesisRecord, fluentd_message, kinesis_event, sequence_numbers

    # given two requests of this hour in the bucket, written by the real handler
    now = datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    lines = [
        f'127.0.0.1 - - [{now}] "GET /a HTTP/1.1" 200 612 "-" "curl/8.5.0" "-"',
        f'127.0.0.1 - - [{now}] "GET /b HTTP/1.1" 404 153 "-" "curl/8.5.0" "-"',
    ]
    records = [KinesisRecord(fluentd_message(line), seq) for line, seq in zip(lines, sequence_numbers(2), strict=True)]
    handler_module.handler(kinesis_event(records), None)
    # when the user asks a question, with SQL that a shell would expand if it were evaluated
    marker = tmp_path / "pwned"
    sql = f"SELECT status, count(*) AS n FROM logs GROUP BY status ORDER BY status -- $(touch {marker})"  # noqa: S608
    result = tools_on_moto("query", "--format", "csv", sql)
    # then the answer comes from the query image's tool, and the SQL stayed data
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == ["status,n", "200,1", "404,1"]
    assert BUILD in result.calls
    assert not marker.exists()


BUILD = ["compose", "--profile", "tools", "build", "--quiet", "query"]


def test_the_query_image_is_built_again_only_when_query_changed(tools_on_moto, bucket, tmp_path):
    sql = "SELECT 1 AS one"
    # the first query builds the image; the next one finds it built from these sources
    first, second = (tools_on_moto("query", "--format", "csv", sql) for _ in range(2))
    assert first.code == second.code == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout == "one\n1\n"
    assert BUILD in first.calls and BUILD not in second.calls
    # a changed query/ file is built in before the next query
    (tmp_path / "work" / "query").mkdir()
    (tmp_path / "work" / "query" / "logs_query.py").write_text("# edited\n")
    third = tools_on_moto("query", "--format", "csv", sql)
    assert third.code == 0 and BUILD in third.calls


@pytest.mark.parametrize("image", ["current", "older"])
def test_a_query_runs_in_the_dashboard_container_when_it_runs_the_current_sources(tools_on_moto, bucket, image):
    # which image id the dashboard runs does not matter (the fake reports none): `compose up
    # --build` on the engine left identical builds under three ids and moved the tag between
    # them, and the query ran in a container of its own (the journey test, issue 19)
    dashboard = {"status": "running", "health": "healthy"}
    if image == "older":  # started before query/ changed and the image was built again
        dashboard["source"] = "4242-an-older-query-folder"
    result = tools_on_moto("query", "--format", "csv", "SELECT 2 AS two", dashboard=dashboard)
    assert result.code == 0, result.stderr
    assert result.stdout == "two\n2\n"
    ran = [call for call in result.calls if "/opt/query/logs_query.py" in call]
    expected = ["exec", "dashboard-container-id"] if image == "current" else ["compose", "--profile", "tools", "run"]
    assert len(ran) == 1 and ran[0][: len(expected)] == expected, ran
    if image == "current":  # found by one `docker ps` (~0.35 s less than the checks, docs/performance.md)
        assert [call[0] for call in result.calls] == ["ps", "exec"], result.calls


@pytest.mark.parametrize(
    ("localstack", "dashboard", "said"),
    [
        ("unhealthy", {"status": "running"}, "the stack is not running (localstack: unhealthy)"),
        ("starting", {"status": "running"}, "the stack is not running (localstack: starting)"),
        ("healthy", {"status": "exited"}, None),  # then in a container of its own
    ],
)
def test_a_query_takes_the_quick_way_only_into_a_ready_stack(tools_on_moto, bucket, localstack, dashboard, said):
    result = tools_on_moto("query", "--format", "csv", "SELECT 2 AS two", health=localstack, dashboard=dashboard)
    assert not any(call[0] == "exec" for call in result.calls), result.calls
    if said:  # tool()'s checks ran after the quick look and say what is wrong
        assert result.code == 1 and said in result.stderr, result.stderr
    else:
        assert result.code == 0 and result.stdout == "two\n2\n", result.stderr
        assert any(call[:4] == ["compose", "--profile", "tools", "run"] for call in result.calls)


@pytest.fixture
def dashboard_port(handler_module, s3_client, aws, bucket, monkeypatch, tmp_path):
    """The dashboard's server in this process (tests/support/dashboard_server.py) with its
    query service, over traffic the handler wrote; told who may ask by the test."""
    import dashboard  # query/'s: on the path from support.dashboard_server on
    import logs_query
    from support.dashboard_data import NOW, write_traffic
    from support.query_data import Writer

    monkeypatch.setattr(handler_module, "log", lambda *args, **kwargs: None)
    write_traffic(Writer(handler_module))
    # it parses the arguments with the defaults of its own environment, as in its container
    for name, value in (("AWS_ENDPOINT_URL", aws), ("BUCKET_NAME", bucket), ("AWS_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    store = dashboard.Store(logs_query.Bucket(s3_client, bucket), workers=4, clock=lambda: NOW)
    server = Server(dashboard.App(store, tmp_path))
    server.app.queries = dashboard.QueryService(store, {"bucket": bucket, "endpoint": aws, "region": "us-east-1"})
    server.range = ["--from", (NOW - timedelta(minutes=50)).isoformat(), "--to", NOW.isoformat()]
    yield server
    server.stop()


def test_a_query_is_answered_on_the_dashboards_port_with_no_docker_call(tools_on_moto, dashboard_port, tmp_path):
    env = {"DASHBOARD_PORT": str(dashboard_port.port)}
    sql = "SELECT status, count(*) AS n FROM logs GROUP BY 1 ORDER BY 1 -- it's $(id) `id` *\n"
    args = ["query", "--format", "csv", *dashboard_port.range, sql]
    asked_by = {"X-Logs-Stack": "centralized-logging-pipeline", "X-Logs-Source": "4242-an-older-query-folder"}
    dashboard_port.app.asked_by = asked_by
    # a dashboard running other sources of query/ is refused: the tool runs as it did before
    before = tools_on_moto(*args, env=env)
    assert before.code == 0 and before.stdout.startswith("status,n\n200,"), before.stderr
    assert any(call[:4] == ["compose", "--profile", "tools", "run"] for call in before.calls), before.calls
    # one of this project and these sources answers, the same, and start.sh runs no docker
    asked_by["X-Logs-Source"] = fake_docker.built_query_source(tmp_path / "docker-state")
    quick = tools_on_moto(*args, env=env)
    assert (quick.code, quick.stdout, quick.calls) == (0, before.stdout, []), quick.stderr
    assert quick.stderr.startswith("logs_query: answered by the dashboard's loaded tables in "), quick.stderr
    assert quick.stderr.count("\n") == 1
    # no arguments at all: the summary of the last hour (an empty one: the traffic is older)
    dashboard_port.app.store.clock = lambda: datetime.now(UTC)
    summary = tools_on_moto("query", env=env)
    assert (summary.code, summary.calls) == (0, []) and "0 requests" in summary.stdout, summary.stderr
    # an error in the SQL: the tool's own line and exit code, still without docker
    bad = tools_on_moto(*args[:-1], "SELEC 1", env=env)
    assert (bad.code, bad.stdout, bad.calls) == (1, "", []) and bad.stderr.startswith("logs_query: error: SQL: ")
    # a mistake in the arguments is the tool's to report, in its own words
    wrong = tools_on_moto("query", "--since", "soon", env=env)
    assert wrong.code == 2 and "--since" in wrong.stderr and wrong.calls, wrong.stderr
    # as is every query on a machine without curl
    (tmp_path / "bin" / "curl").unlink()
    without = tools_on_moto(*args, env=env)
    assert without.code == 0 and without.stdout == before.stdout and without.calls


def test_traffic_goes_through_nginx(tools_on_moto, nginx):
    result = tools_on_moto("traffic", "--rate", "20", "--duration", "1", web_url=nginx.url)
    assert result.code == 0, result.stderr
    assert "traffic: sent 20 requests" in result.stdout + result.stderr
    assert len(nginx.log_lines()) >= 19  # the malformed ones nginx may answer without a line


def test_tail_runs_the_query_image_tool_with_its_options(tools_on_moto):
    # an empty emulator: the tool itself answers (no bucket), its option errors too
    result = tools_on_moto("tail", "--status", "5xx", "--json")
    assert result.code == 1 and result.stderr.startswith("tail: error: no bucket nginx-accesslog"), result.stderr
    assert any(call[-4:] == ["/opt/query/tail.py", "--status", "5xx", "--json"] for call in result.calls)
    bad = tools_on_moto("tail", "--status", "9xx")
    assert bad.code == 2 and "not a status or class: '9xx'" in bad.stderr


@pytest.mark.parametrize("command", ["query", "traffic", "compact", "tail"])
def test_tools_need_the_running_stack(tools_on_moto, command):
    result = tools_on_moto(command, health="starting")
    assert result.code == 1 and result.stderr.count("\n") == 1
    assert "the stack is not running" in result.stderr and "start it with ./start.sh" in result.stderr


# --- down: a graceful stop; down --volumes; export ------------------------------------------
#
# init/pipeline_cli.py drain and init/bucket_mirror.py (sync, export) are written on other
# branches: in these tests the fake docker answers for them from the scenario ("scripted":
# their output, exit code and how long they take), so what is proven here is start.sh's
# side: the order of the steps, the time each may take, the messages and the exit codes.
# fluentd's drain_status.sh is the real script where a test gives it files (fluentd_env).

SERVICES = ("localstack", "fluentd", "web")
DRAINED = "drain: 1 shard(s): every record before the marker is in S3 (2.1s)"
SYNCED = "sync: saved 12 objects (1.4 MB) of s3://nginx-accesslog"


def running_stack(**extra) -> dict:
    """Every service up and healthy since second 0; the stream drains in 3 s, the mirror
    saves in 1 s."""
    scenario = {
        "images_present": True,
        "services": {name: timeline((0, HEALTHY)) for name in SERVICES},
        "scripted": {
            "pipeline_cli.py drain": {"output": DRAINED, "seconds": 3},
            "bucket_mirror.py sync": {"output": SYNCED, "seconds": 1},
        },
    }
    return {**scenario, **extra}


def first(calls: list[list[str]], *prefix: str) -> int:
    """Index of the first call that starts with prefix (fails the test when none does)."""
    for index, call in enumerate(calls):
        if call[: len(prefix)] == list(prefix):
            return index
    raise AssertionError(f"no call {prefix} in {calls}")


DRAIN_STATUS = ("compose", "exec", "-T", "fluentd", "bash", "/fluentd/tools/drain_status.sh")
STREAM_DRAIN = ("compose", "exec", "-T", "localstack", "python3", "/opt/pipeline/init/pipeline_cli.py", "drain")
MIRROR_SYNC = ("compose", "exec", "-T", "localstack", "python3", "/opt/pipeline/init/bucket_mirror.py", "sync")


def test_down_stops_nginx_then_waits_for_fluentd_then_drains_and_saves(start):
    # given fluentd still has lines to read and send when the user stops the stack, and
    # sends the last of them 4 s later; stopping fluentd takes 3 s
    scenario = running_stack(
        drain_status=[[0, "unread=300 buffered=50"], [2, "unread=0 buffered=120"], [4, "unread=0 buffered=0"]],
        stop_seconds={"fluentd": 3},
    )
    result = start("down", scenario=scenario)
    assert result.code == 0, result.stderr
    calls = result.calls
    # then nginx stops before fluentd is asked, fluentd stops only once it is done and
    # before the stream's drain, the bucket is saved after the drain, and only then down
    stop_web, asked, stop_fluentd = first(calls, "compose", "stop", "web"), first(calls, *DRAIN_STATUS), 0
    stop_fluentd = first(calls, "compose", "stop", "fluentd")
    drain, sync = first(calls, *STREAM_DRAIN), first(calls, *MIRROR_SYNC)
    down = first(calls, "compose", "down", "--remove-orphans")
    assert stop_web < asked < stop_fluentd < drain < sync < down == len(calls) - 1
    assert not any(call[:6] == list(DRAIN_STATUS) for call in calls[stop_fluentd:])
    assert ["compose", "stop", "fluentd"] in [call for at, call in result.timed_calls if at == 4]
    # and the stream's drain gets what is left of DRAIN_TIMEOUT (120 - 4 - 3 s)
    assert calls[drain][-2:] == ["--timeout", "113"]
    assert calls[sync][-2:] == ["--timeout", "30"]
    # and the user sees each step, fluentd's progress, the tools' own lines, and where
    # the logs are kept
    out = result.stdout
    assert out.index("nginx stopped: no new requests") < out.index("fluentd: 300 bytes of the access log to read")
    assert "fluentd: 300 bytes of the access log to read, 50 bytes to send (0s)" in out
    assert "fluentd: 0 bytes of the access log to read, 120 bytes to send (2s)" in out
    assert "fluentd: every line read and sent to Kinesis (4s)" in out
    assert out.index("fluentd stopped") < out.index(DRAINED) < out.index(SYNCED)
    lines = out.rstrip().splitlines()
    assert "Docker volume centralized-logging-pipeline_saved-logs" in lines[-2] and "./start.sh" in lines[-2]
    assert "./start.sh export DIR" in lines[-1]


def test_fluentd_gets_at_most_DRAIN_TIMEOUT_and_what_is_left_is_kept_not_lost(start):
    # given Kinesis refuses fluentd's puts: its buffer never empties
    scenario = running_stack(drain_status=[[0, "unread=0 buffered=4096"]])
    result = start("down", scenario=scenario, dotenv="DRAIN_TIMEOUT=20\n")
    # then start.sh stops waiting within the bound (DRAIN_TIMEOUT from .env) ...
    assert result.code == 0, result.stderr
    (stopped_at,) = [at for at, call in result.timed_calls if call == ["compose", "stop", "fluentd"]]
    assert 20 <= stopped_at <= 20 + fake_docker_poll()
    # ... says how much is left and that it is not lost, and still drains the stream
    # (for at least 10 s, though the budget is spent) and stops everything
    assert "not done within DRAIN_TIMEOUT=20s: 4096 bytes are still in fluentd's volume" in result.stdout
    assert "they are not lost: fluentd sends them at the next start" in result.stdout
    (drain,) = [call for call in result.calls if call[:7] == list(STREAM_DRAIN)]
    assert drain[-2:] == ["--timeout", "10"]
    assert result.calls[-1] == ["compose", "down", "--remove-orphans"]


def test_the_real_drain_status_script_decides_when_fluentd_is_done(start, tmp_path):
    # given fluentd's files as the real drain_status.sh reads them in the container: two of
    # three lines unread, and a 100-byte chunk in the buffer, never changing
    log, state = tmp_path / "access.log", tmp_path / "fluentd-state"
    line = '127.0.0.1 - - [27/Nov/2026:08:00:01 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/8.5.0" "-"\n'
    log.write_text(line * 3)
    (state / "buffer" / "kinesis").mkdir(parents=True)
    (state / "nginx-access.pos").write_text(f"{log}\t{len(line):016x}\t{log.stat().st_ino:016x}\n")
    (state / "buffer" / "kinesis" / "buffer.b5f0c1a2b3c4d5e6f.log").write_bytes(b"x" * 100)
    fluentd_env = {"ACCESS_LOG_PATH": str(log), "FLUENTD_STATE_DIR": str(state)}
    result = start("down", scenario=running_stack(fluentd_env=fluentd_env), env={"DRAIN_TIMEOUT": "6"})
    assert result.code == 0, result.stderr
    left = 2 * len(line) + 100
    assert f"fluentd: {2 * len(line)} bytes of the access log to read, 100 bytes to send (0s)" in result.stdout
    assert f"{left} bytes are still in fluentd's volume" in result.stdout
    # and once fluentd has read and sent everything, the same script lets the stop go on
    (state / "nginx-access.pos").write_text(f"{log}\t{3 * len(line):016x}\t{log.stat().st_ino:016x}\n")
    (state / "buffer" / "kinesis" / "buffer.b5f0c1a2b3c4d5e6f.log").unlink()
    result = start("down", scenario=running_stack(fluentd_env=fluentd_env), env={"DRAIN_TIMEOUT": "6"})
    assert "fluentd: every line read and sent to Kinesis (0s)" in result.stdout


@pytest.mark.parametrize(
    ("failing", "named"),
    [
        ("pipeline_cli.py drain", "the records still in the Kinesis stream"),
        ("bucket_mirror.py sync", "the newest objects of the bucket"),
    ],
)
def test_a_failed_drain_or_save_still_stops_everything_and_exits_1_naming_the_loss(start, failing, named):
    scenario = running_stack()
    scenario["scripted"][failing] = {"exit": 1, "output": f"{failing}: not done within the timeout", "seconds": 5}
    result = start("down", scenario=scenario)
    # then the rest still runs (the save after a failed drain; the stop in every case) ...
    assert first(result.calls, *STREAM_DRAIN) < first(result.calls, *MIRROR_SYNC)
    assert result.calls[-1] == ["compose", "down", "--remove-orphans"]
    # ... and the exit code and the last line say what may be lost
    assert result.code == 1
    assert f"{failing}: not done within the timeout" in result.stdout
    assert "Docker volume centralized-logging-pipeline_saved-logs" in result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("start.sh: stopped, but these may be lost:") and named in last


def test_fluentd_not_running_is_skipped(start):
    scenario = running_stack()
    scenario["services"]["fluentd"] = timeline((0, {"status": "exited", "exit": 1, "health": "unhealthy"}))
    result = start("down", scenario=scenario)
    assert result.code == 0, result.stderr
    assert "fluentd is not running" in result.stdout
    assert not any(call[:6] == list(DRAIN_STATUS) for call in result.calls)
    assert first(result.calls, *STREAM_DRAIN) < first(result.calls, "compose", "down")


def test_localstack_not_running_skips_the_drain_and_the_save(start):
    scenario = running_stack(drain_status=[[0, "unread=0 buffered=0"]])
    del scenario["services"]["localstack"]
    result = start("down", scenario=scenario)
    assert result.code == 0, result.stderr
    assert "localstack is not running: nothing left to deliver or save" in result.stdout
    assert not any("/opt/pipeline/init/pipeline_cli.py" in call for call in result.calls)
    assert result.calls[-1] == ["compose", "down", "--remove-orphans"]


def test_fluentd_that_cannot_be_asked_is_stopped_anyway(start):
    scenario = running_stack(drain_status=[[0, {"exit": 126, "output": "OCI runtime exec failed: bash: not found"}]])
    result = start("down", scenario=scenario)
    assert result.code == 0, result.stderr
    assert "fluentd: could not ask what is left to send (OCI runtime exec failed" in result.stdout
    assert result.clock < fake_docker_poll() + 5  # no waiting on an answer that never comes


def test_a_wrong_DRAIN_TIMEOUT_stops_nothing(start):
    result = start("down", scenario=running_stack(), env={"DRAIN_TIMEOUT": "2m"})
    assert result.code == 1 and "DRAIN_TIMEOUT must be a number of seconds, not '2m'" in result.stderr
    assert not any(call[:2] == ["compose", "stop"] or call[:2] == ["compose", "down"] for call in result.calls)


def test_saved_logs_in_a_folder_are_named_by_their_path(start):
    result = start("down", scenario=running_stack(), dotenv="SAVED_LOGS=./my-saved-logs\n")
    assert result.code == 0, result.stderr
    assert f"Your logs are kept in {start.work}/my-saved-logs (SAVED_LOGS)" in result.stdout


# --- down --volumes -----------------------------------------------------------------------


def test_down_volumes_says_what_it_deletes_before_deleting_and_drains_nothing(start):
    # given a running stack and no terminal (a script: the flag is the consent)
    result = start("down", "--volumes", scenario=running_stack(), merged=True)
    assert result.code == 0, result.stdout
    out = result.stdout
    # then the warning names each thing deleted and how to keep the logs, before Compose
    # reports deleting anything
    warning = out.index("./start.sh down --volumes deletes, for good:")
    assert warning < out.index("Volume centralized-logging-pipeline_saved-logs  Removed")
    for deleted in (
        "the saved logs: every object of the bucket (Docker volume centralized-logging-pipeline_saved-logs)",
        "nginx's access log",
        "fluentd's position in it and its buffer",
    ):
        assert warning < out.index(deleted) < out.index(" Removed"), deleted
    # every volume the compose file declares is named (the saved logs above)
    for volume in set(compose()["volumes"]) - {"saved-logs"}:
        assert warning < out.index(f"(volume centralized-logging-pipeline_{volume}") < out.index(" Removed"), volume
    assert out.index("./start.sh export DIR") < out.index(" Removed")
    # and nothing is drained or saved first: all of it is going away
    assert result.calls[-1] == ["compose", "down", "--remove-orphans", "--volumes"]
    assert not any(call[:2] in (["compose", "stop"], ["compose", "exec"]) for call in result.calls)


@pytest.mark.parametrize("answer", ["n\n", "\n", "no\n", "whatever\n"])
def test_down_volumes_on_a_terminal_deletes_nothing_unless_the_user_says_yes(start, answer):
    result = start("down", "-v", scenario=running_stack(), tty_input=answer)
    assert result.code == 1
    assert "Delete them? [y/N]" in result.stderr
    assert "Nothing deleted." in result.stdout
    assert not any(call[:2] in (["compose", "down"], ["compose", "stop"]) for call in result.calls)


def test_uninstall_removes_the_stack_its_volumes_and_only_the_images_built_for_it(start):
    # given a running stack whose images are all present, and no terminal (the consent)
    result = start("uninstall", scenario=running_stack(), merged=True)
    assert result.code == 0, result.stdout
    services = compose()["services"]
    built = [services["fluentd"]["image"], services["query"]["image"]]
    removed = [call[2:] for call in result.calls if call[:2] == ["image", "rm"]]
    # then the containers and volumes go first, then exactly the two built images
    down = result.calls.index(["compose", "down", "--remove-orphans", "--volumes"])
    assert removed == [[image] for image in built]
    assert all(result.calls.index(["image", "rm", image]) > down for image in built)
    out = result.stdout
    assert out.index("./start.sh uninstall deletes, for good:") < out.index(" Removed")
    assert f"the images built for this project: {built[0]}, {built[1]}" in out
    # and what it keeps (shared with other projects, maybe) is named with the command to remove it
    kept = next(line for line in out.splitlines() if line.strip().startswith("docker image rm "))
    for image in (services["web"]["image"], "localstack/localstack:4.14.0", "public.ecr.aws/lambda/python:3.12"):
        assert image in kept
    assert "docker builder prune" in out


def test_uninstall_on_a_terminal_removes_nothing_unless_the_user_says_yes(start):
    result = start("uninstall", scenario=running_stack(), tty_input="n\n")
    assert result.code == 1 and "Nothing deleted." in result.stdout
    assert not any(call[:2] in (["compose", "down"], ["image", "rm"]) for call in result.calls)


@pytest.mark.parametrize("answer", ["y\n", "yes\n"])
def test_down_volumes_on_a_terminal_deletes_after_yes(start, answer):
    result = start("down", "-v", scenario=running_stack(), tty_input=answer)
    assert result.code == 0, result.stderr
    assert "Delete them? [y/N]" in result.stderr
    assert result.calls[-1] == ["compose", "down", "--remove-orphans", "--volumes"]


def test_down_volumes_keeps_a_folder_of_the_users_and_says_so(start):
    result = start("down", "--volumes", scenario={}, dotenv="SAVED_LOGS=/srv/pipeline-logs\n")
    assert result.code == 0, result.stderr
    assert "the saved logs:" not in result.stdout
    assert "Your saved logs in /srv/pipeline-logs (SAVED_LOGS) are kept: delete that folder by hand" in result.stdout


# --- export -------------------------------------------------------------------------------

EXPORTED = {
    "2026/11/27/08/nginx_access_log_0001.json": '{"request_uri": "/a"}\n',
    "2026/11/27/09/nginx_access_log_0002.json": '{"request_uri": "/b"}\n',
}


def exporting(services: tuple[str, ...], export: dict | None = None) -> dict:
    """A stack where `services` run; bucket_mirror.py export writes EXPORTED."""
    scenario = running_stack()
    scenario["services"] = {name: timeline((0, HEALTHY)) for name in services}
    scenario["scripted"]["bucket_mirror.py export"] = export or {
        "output": "export: 2 objects (44 bytes) to /tmp/export",
        "files": EXPORTED,
    }
    return scenario


def one_off(calls: list[list[str]]) -> tuple[int, str]:
    """The export's `compose run` call: its index and its container's name."""
    index = first(calls, "compose", "run")
    return index, calls[index][calls[index].index("--name") + 1]


def test_export_of_a_stopped_stack_copies_the_saved_files_into_the_users_folder(start, tmp_path):
    # given a stopped stack, and a folder that already holds a file of the same name and
    # one of the user's own; the user is elsewhere and names the folder relatively
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "out" / "2026/11/27/08").mkdir(parents=True)
    (elsewhere / "out" / "2026/11/27/08/nginx_access_log_0001.json").write_text("old\n")
    (elsewhere / "out" / "mine.txt").write_text("keep me\n")
    result = start("export", "out", scenario=exporting(()), cwd=elsewhere, command=str(start.work / "start.sh"))
    assert result.code == 0, result.stderr
    # then a one-off localstack container (no dependencies started) runs the export, its
    # files are copied out with `docker cp` (they belong to the user), and it is removed
    index, name = one_off(result.calls)
    run = result.calls[index]
    assert run[-5:] == ["localstack", "/opt/pipeline/init/bucket_mirror.py", "export", "--to", "/tmp/export"]
    assert "--no-deps" in run and run[run.index("--entrypoint") + 1] == "python3"
    assert result.calls[index + 1] == ["cp", f"{name}:/tmp/export/.", str(elsewhere / "out")]
    # and the network `compose run` created for it goes too (the stack was down)
    assert result.calls[-2:] == [["rm", "-f", name], ["compose", "down"]]
    assert not any(call[:2] == ["compose", "exec"] for call in result.calls)  # nothing runs to ask
    for key, text in EXPORTED.items():
        assert (elsewhere / "out" / key).read_text() == text
    assert (elsewhere / "out" / "mine.txt").read_text() == "keep me\n"
    assert f"export: 2 objects (44 bytes) to {elsewhere / 'out'}" in result.stdout  # the user's folder
    assert f"Copied to {elsewhere / 'out'}" in result.stdout


def test_export_of_a_running_stack_saves_the_newest_objects_first(start, tmp_path):
    result = start("export", str(tmp_path / "new" / "folder"), scenario=exporting(SERVICES))
    assert result.code == 0, result.stderr
    index, _ = one_off(result.calls)
    assert first(result.calls, *MIRROR_SYNC) < index
    assert SYNCED in result.stdout
    assert ["compose", "down"] not in result.calls  # the running stack stays as it is
    assert (tmp_path / "new" / "folder" / next(iter(EXPORTED))).exists()


def test_a_failed_export_copies_nothing_and_leaves_no_container(start, tmp_path):
    failed = {"exit": 1, "output": "bucket_mirror.py: error: /var/lib/pipeline is not readable"}
    result = start("export", str(tmp_path / "out"), scenario=exporting((), export=failed))
    assert result.code == 1
    assert "not readable" in result.stdout and "the export failed" in result.stderr
    _, name = one_off(result.calls)
    assert not any(call[:1] == ["cp"] for call in result.calls)
    assert result.calls[-2:] == [["rm", "-f", name], ["compose", "down"]]
    assert list((tmp_path / "out").iterdir()) == []


# --- the same commands with the real init/bucket_mirror.py --------------------------------


def saved_logs(folder, objects: dict[str, bytes]) -> None:
    """Files as the watcher saves them: <data dir>/<bucket>/<key>."""
    from bucket_mirror import Copy

    copy = Copy(folder, "nginx-accesslog")
    for key, body in objects.items():
        copy.save(key, body)


def test_export_runs_the_real_bucket_mirror_and_the_user_gets_the_same_bytes(start, tmp_path):
    # given the saved-logs volume (here a folder) holding what the watcher saved, and a
    # stopped stack
    objects = {
        "2026/11/27/08/nginx_access_log_a.json": b'{"request_uri":"/a"}\n',
        "errors/2026/11/27/08/nginx_access_log_b.json.gz": bytes(range(256)),
    }
    saved_logs(tmp_path / "volume", objects)
    scenario = exporting(())
    del scenario["scripted"]["bucket_mirror.py export"]
    scenario["container_env"] = {**container_env({}), "PIPELINE_DATA_DIR": str(tmp_path / "volume")}
    # when the user exports
    result = start("export", str(tmp_path / "out"), scenario=scenario)
    # then bucket_mirror.py's own line is shown, and the folder holds the objects' bytes
    assert result.code == 0, result.stderr
    assert f"exported 2 objects (277 B) of s3://nginx-accesslog to {tmp_path / 'out'}\n" in result.stdout
    out = tmp_path / "out"
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == objects


def test_status_ends_with_the_real_saved_logs_line(stack_on_moto, aws, tmp_path):
    import init_resource
    from bucket_mirror import Copy

    # given the stack provisioned, and one object saved in the saved-logs volume
    assert init_resource.main(["--endpoint-url", aws, "--bucket", "my-logs", "--wait-timeout", "10"]) == 0
    Copy(tmp_path / "volume", "my-logs").save("2026/11/27/08/a.json", b"{}\n")
    result = stack_on_moto("status", saved_logs=tmp_path / "volume")
    assert result.code == 0, result.stdout + result.stderr
    folder = tmp_path / "volume" / "my-logs"
    assert result.stdout.rstrip().endswith(f"saved: 1 objects (3 B) of s3://my-logs in {folder} (as of the last stop)")
