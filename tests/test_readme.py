"""The README cannot drift: its test command, settings, flags, links and pictures."""

from __future__ import annotations

import re
import struct
import subprocess

import init_resource
import pytest
from support.compose import ROOT

README = (ROOT / "README.md").read_text()
README_KO = (ROOT / "README.ko.md").read_text()


def test_the_test_command_is_what_ci_runs():
    # the exact extraction .ci/run performs
    pipeline = "sed -n '/<!-- test-command -->/,/<!-- \\/test-command -->/p' README.md | grep -v -e '^<!--' -e '^```'"
    assert pipeline in (ROOT / ".ci" / "run").read_text()
    command = subprocess.run(["bash", "-c", pipeline], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert command.strip() == "./test.sh"
    assert "./test.sh" in README_KO and "./start.sh" in README_KO


def test_quick_start_is_two_commands():
    quick = README.split("## Quick start", 1)[1].split("## How it works", 1)[0]
    blocks = re.findall(r"```\n(.*?)```", quick, re.S)
    commands = [block.split("#")[0].strip() for block in blocks[:2]]
    assert commands == ["./start.sh", "./test.sh"]


@pytest.mark.parametrize("readme", [README, README_KO], ids=["en", "ko"])
def test_every_setting_and_flag_is_documented(readme):
    settings = re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M)
    assert settings
    for name in settings:
        assert f"`{name}`" in readme, name
    flags = [o for action in init_resource.build_parser()._actions for o in action.option_strings if o != "-h"]
    assert {"--status", "--teardown", "--aws", "--endpoint-url"} <= set(flags)
    for flag in flags:
        assert flag in readme, flag


@pytest.mark.parametrize("readme", [README, README_KO], ids=["en", "ko"])
def test_local_links_point_at_files(readme):
    for target in re.findall(r"\]\(([^)#]+)\)", readme):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), target


@pytest.mark.parametrize("name", ["structure.png", "localhost.png"])
def test_pictures_are_pngs(name):
    data = (ROOT / "image" / name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 600 and height >= 300


START_COMMANDS = {"up", "down", "export", "provision", "status", "ls", "cat", "logs", "traffic", "query", "compact"}
START_COMMANDS.add("tail")  # docs/dashboard.md


@pytest.mark.parametrize("readme", [README, README_KO], ids=["en", "ko"])
def test_after_start_commands_need_nothing_but_docker(readme):
    # every ./start.sh command the README names exists, and no after-start step needs
    # tools a Docker-only host lacks (awscli-local, a host boto3, python3 -m json.tool)
    named = set(re.findall(r"\./start\.sh (\w+)", readme))
    assert {"status", "ls", "cat", "logs", "provision"} <= named <= START_COMMANDS
    for needs_more in ("awslocal", "pip install awscli-local", "json.tool", "init_resource.py --status"):
        assert needs_more not in readme, needs_more


def test_every_setting_is_in_the_configuration_table():
    for name in re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M):
        assert f"| `{name}` |" in README, name
