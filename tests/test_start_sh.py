"""start.sh without a Docker engine: usage, and each prerequisite check's message.

A fake `docker` on PATH (written by each test) stands in for the Docker CLI at the
edge: it answers `docker info` / `docker compose version` as a given machine would.
The full run with a real engine is tests/test_stack.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from support.compose import ROOT
from support.net import free_port

START = ROOT / "start.sh"
TOOLS = ["bash", "dirname", "sed", "grep", "cut", "tail", "head", "cat", "sleep"]


def run_start(tmp_path: Path, *args: str, docker: str | None = None, env: dict[str, str] | None = None):
    """Run start.sh with PATH holding only basic tools and, if given, a fake docker."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in TOOLS:
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(shutil.which(tool))
    if docker is not None:
        fake = bin_dir / "docker"
        fake.write_text("#!/bin/bash\n" + docker)
        fake.chmod(0o755)
    return subprocess.run(
        [str(START), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path), **(env or {})},
    )


def test_help(tmp_path):
    result = run_start(tmp_path, "--help")
    assert result.returncode == 0 and "./start.sh down --volumes" in result.stdout


@pytest.mark.parametrize("args", [["--bogus"], ["down", "--bogus"], ["up", "extra"], ["down", "-v", "x"]])
def test_wrong_arguments_one_line_exit_2(tmp_path, args):
    result = run_start(tmp_path, *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("start.sh: ")


def test_no_docker(tmp_path):
    result = run_start(tmp_path)
    assert result.returncode == 1 and "docker not found" in result.stderr


def test_engine_not_running(tmp_path):
    result = run_start(tmp_path, docker='[[ "$1" == info ]] && exit 1\nexit 0\n')
    assert result.returncode == 1 and "the Docker engine is not running" in result.stderr


def test_compose_v1_only(tmp_path):
    result = run_start(tmp_path, docker='[[ "$1" == compose ]] && exit 1\nexit 0\n')
    assert result.returncode == 1 and "Docker Compose v2 not found" in result.stderr


def test_web_port_taken(tmp_path):
    # given another program listening on the web port, and our stack not running
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = run_start(tmp_path, docker="exit 0\n", env={"WEB_PORT": str(port)})
    assert result.returncode == 1
    assert f"port {port} is taken" in result.stderr and "WEB_PORT" in result.stderr


def test_newer_localstack_without_token_gets_a_hint(tmp_path):
    # docker answers everything but fails `compose up`, so start.sh stops there
    docker = '[[ "$1 $2" == "compose up" ]] && { echo "up failed" >&2; exit 1; }\nexit 0\n'
    port = free_port()  # nothing listens there: the web port check passes
    result = run_start(
        tmp_path, docker=docker, env={"LOCALSTACK_IMAGE": "localstack/localstack:2026.3.0", "WEB_PORT": str(port)}
    )
    assert "needs LOCALSTACK_AUTH_TOKEN" in result.stderr
    assert result.returncode == 1 and "up failed" in result.stderr


def test_settings_are_read_from_dot_env_as_data(tmp_path):
    # a .env line is never executed: command substitution stays text
    work = tmp_path / "work"
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(".venv", ".git", "*.log"))
    marker = tmp_path / "pwned"
    (work / ".env").write_text(f"WEB_PORT=$(touch {marker})\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / "docker").write_text('#!/bin/bash\n[[ "$1 $2" == "compose up" ]] && exit 1\nexit 0\n')
    (bin_dir / "docker").chmod(0o755)
    subprocess.run(
        [str(work / "start.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
    )
    assert not marker.exists()
    assert os.access(work / "start.sh", os.X_OK)


@pytest.mark.parametrize("args", [["down"], ["down", "--volumes"]])
def test_down_passes_the_right_options_to_compose(tmp_path, args):
    # the fake docker records its arguments; `down` with no option must work under set -u
    # even where an empty array counts as unset (bash 3.2 on macOS)
    record = tmp_path / "calls"
    result = run_start(tmp_path, *args, docker=f'echo "$*" >> {record}\nexit 0\n')
    assert result.returncode == 0, result.stderr
    calls = record.read_text().splitlines()
    expected = "compose down --remove-orphans" + (" --volumes" if "--volumes" in args else "")
    assert calls[-1] == expected
