"""The README and docs/ cannot drift: the test command, settings, flags, links and pictures.

The README is short (what it is, the two commands, what you see, the commands, stopping)
and links docs/ pages for everything else; each check follows its content there.
"""

from __future__ import annotations

import re
import struct
import subprocess

import init_resource
import pytest
from support.compose import ROOT

README = (ROOT / "README.md").read_text()
README_KO = (ROOT / "README.ko.md").read_text()
DOCS = ROOT / "docs"
CONFIGURATION = (DOCS / "configuration.md").read_text()


def test_the_test_command_is_what_ci_runs():
    # the exact extraction .ci/run performs
    pipeline = "sed -n '/<!-- test-command -->/,/<!-- \\/test-command -->/p' README.md | grep -v -e '^<!--' -e '^```'"
    assert pipeline in (ROOT / ".ci" / "run").read_text()
    command = subprocess.run(["bash", "-c", pipeline], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert command.strip() == "./test.sh"
    assert "./test.sh" in README_KO and "./start.sh" in README_KO


def test_quick_start_is_two_commands():
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\n(.*?)```", quick, re.S)
    commands = [block.split("#")[0].strip() for block in blocks[:2]]
    assert commands == ["./start.sh", "./test.sh"]


@pytest.mark.parametrize("readme", [README, README_KO], ids=["en", "ko"])
def test_every_setting_and_flag_is_documented(readme):
    # the configuration page holds them (docs/ is English; both READMEs link it)
    assert "docs/configuration.md" in readme
    settings = re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M)
    assert settings
    for name in settings:
        assert f"`{name}`" in CONFIGURATION, name
    flags = [o for action in init_resource.build_parser()._actions for o in action.option_strings if o != "-h"]
    assert {"--status", "--teardown", "--aws", "--endpoint-url"} <= set(flags)
    for flag in flags:
        assert flag in CONFIGURATION, flag


MARKDOWN = [ROOT / "README.md", ROOT / "README.ko.md", ROOT / "query" / "README.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda path: str(path.relative_to(ROOT)))
def test_local_links_point_at_files(page):
    for target in re.findall(r"\]\(([^)#]+)\)", page.read_text()):
        if not target.startswith(("http://", "https://")):
            assert (page.parent / target).exists(), target


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda path: str(path.relative_to(ROOT)))
def test_anchor_links_point_at_headings(page):
    def anchors(path):
        headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
        return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}

    for target, anchor in re.findall(r"\]\(([^)#]*)#([^)]+)\)", page.read_text()):
        if not target.startswith(("http://", "https://")):
            assert anchor in anchors(page.parent / target if target else page), (target, anchor)


def test_every_docs_page_is_linked_from_both_readmes():
    for page in DOCS.glob("*.md"):
        assert f"(docs/{page.name})" in README, page.name
        assert f"(docs/{page.name})" in README_KO, page.name


def test_the_readme_reads_in_ten_minutes():
    # about 200 words a minute for prose, code blocks skimmed: the short README stays short
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    assert len(prose.split()) <= 1500 and README.count("\n") <= 200


def test_code_points_at_docs_that_exist():
    # comments and messages name docs/ pages instead of README sections that move
    sources = [ROOT / "docker-compose.yml", ROOT / "start.sh", ROOT / "test.sh", ROOT / ".env.example"]
    for folder in ("init", "query", "bench", "fluentd", "tests"):
        sources += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".sh", ".conf", ".md")]
    for path in sources:
        text = path.read_text(errors="replace")
        for page in re.findall(r"docs/([a-z-]+\.md)", text):
            assert (DOCS / page).exists(), (path.relative_to(ROOT), page)
        assert not re.search(r"README'?s? \(?\"[A-Z]", text), path.relative_to(ROOT)


@pytest.mark.parametrize("name", ["structure.png", "localhost.png", "dashboard.png"])
def test_pictures_are_pngs(name):
    data = (ROOT / "image" / name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 600 and height >= 300


START_COMMANDS = {
    "up",
    "down",
    "uninstall",
    "export",
    "provision",
    "status",
    "ls",
    "cat",
    "logs",
    "traffic",
    "query",
    "compact",
    "tail",
}


@pytest.mark.parametrize("readme", [README, README_KO], ids=["en", "ko"])
def test_after_start_commands_need_nothing_but_docker(readme):
    # every ./start.sh command the README names exists, and no after-start step needs
    # tools a Docker-only host lacks (awscli-local, a host boto3, python3 -m json.tool)
    named = set(re.findall(r"\./start\.sh (\w+)", readme))
    assert {"status", "ls", "cat", "logs", "provision"} <= named <= START_COMMANDS
    for needs_more in ("awslocal", "pip install awscli-local", "json.tool", "init_resource.py --status"):
        assert needs_more not in readme, needs_more


def test_every_setting_is_in_the_configuration_table_with_its_default():
    example = dict(re.findall(r"^([A-Z_]+)=(.*)$", (ROOT / ".env.example").read_text(), re.M))
    for name, value in example.items():
        row = re.search(rf"^\| `{name}` \| ([^|]*) \|", CONFIGURATION, re.M)
        assert row, name
        assert row.group(1).strip() == (f"`{value}`" if value else "empty"), name


@pytest.mark.parametrize("readme", [README, README_KO], ids=["en", "ko"])
def test_both_readmes_have_the_same_structure(readme):
    # the Korean README follows the English one: the same commands, pictures and docs links
    def skeleton(text):
        return (
            sorted(set(re.findall(r"\./start\.sh (\w+)", text))),
            re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text),
            re.findall(r"\]\((docs/[^)]+)\)", text),
        )

    assert skeleton(readme) == skeleton(README)
