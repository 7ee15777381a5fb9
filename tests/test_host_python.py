"""The host tools run on the Python users have: 3.9 and newer (Ubuntu 22.04 has 3.10).

init/'s tools and query/'s run on a user's host as well as in containers. Each runs under
the oldest interpreters found on this machine (PATH, else pyenv), and an AST check names
what only Python 3.10/3.11 has, for machines without them. ruff's per-file target version
(pyproject.toml) holds their syntax to py39.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.compose import ROOT
from support.tools import unavailable

HOST_TOOLS = [
    "init/init_resource.py",
    "init/pipeline_cli.py",
    "init/bucket_mirror.py",
    "query/logs_query.py",
    "query/compact_hours.py",
    "query/traffic.py",
]
MODULES = [
    *HOST_TOOLS,
    "init/pipeline_target.py",
    "init/glue_catalog.py",
    "init/localstack_ready.py",
    "init/bucket_layout.py",
    "query/bucket_reader.py",
]
OLD_VERSIONS = ["3.9", "3.10"]

# names a 3.9 interpreter lacks: (module, name) imported, or module.name used
NEWER_NAMES = {
    ("datetime", "UTC"),
    ("typing", "Self"),
    ("typing", "TypeAlias"),
    ("typing", "ParamSpec"),
    ("enum", "StrEnum"),
    ("asyncio", "TaskGroup"),
    ("itertools", "pairwise"),
}
NEWER_MODULES = {"tomllib"}
NEWER_BUILTINS = {"ExceptionGroup", "BaseExceptionGroup", "aiter", "anext"}


def interpreter(version: str) -> str | None:
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(str(p) for p in (Path.home() / ".pyenv" / "versions").glob(f"{version}.*/bin/python{version}"))
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", "pass"], capture_output=True, check=False).returncode == 0:
            return candidate
    return None


@pytest.fixture(params=OLD_VERSIONS)
def old_python(request) -> str:
    found = interpreter(request.param)
    if found is None:
        unavailable(f"no python{request.param} on this machine (PATH or ~/.pyenv/versions)")
    return found


def run(python: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # -S: no site-packages, so the same outcome whatever that interpreter has installed
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BUCKET_", "PIPELINE_"))}
    return subprocess.run(
        [python, "-S", *args], capture_output=True, text=True, timeout=60, env={**clean, **(env or {})}
    )


def newer_than_39(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [f"{node.module}.{a.name}" for a in node.names if (node.module, a.name) in NEWER_NAMES]
            found += [node.module] if node.module in NEWER_MODULES else []
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name in NEWER_MODULES]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in NEWER_NAMES:
                found.append(f"{node.value.id}.{node.attr}")
        elif isinstance(node, ast.Name) and node.id in NEWER_BUILTINS:
            found.append(node.id)
        elif isinstance(node, ast.Match):
            found.append("match statement")
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            words = {k.arg for k in node.keywords}
            if name == "zip" and "strict" in words:
                found.append("zip(strict=)")
            if name == "dataclass" and words & {"slots", "kw_only"}:
                found.append("dataclass(slots=/kw_only=)")
    return found


@pytest.mark.parametrize("path", MODULES)
def test_no_name_newer_than_python_3_9(path):
    tree = ast.parse((ROOT / path).read_text(), path)
    assert newer_than_39(tree) == [], path


def test_the_check_finds_what_crashed_on_3_10():
    # the line the tools had: `from datetime import UTC` (ImportError before 3.11)
    assert newer_than_39(ast.parse("from datetime import UTC, datetime\nx = datetime.UTC")) == [
        "datetime.UTC",
        "datetime.UTC",
    ]


def test_ruff_holds_the_host_tools_to_python_3_9():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["per-file-target-version"]
    for path in MODULES:
        assert config.get(path) == "py39", path


@pytest.mark.parametrize("path", HOST_TOOLS)
def test_help_on_old_pythons(old_python, path):
    result = run(old_python, str(ROOT / path), "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_bucket_mirror_status_and_export_run_on_old_pythons(old_python, tmp_path):
    # a real command on the old interpreter: these two need no boto3
    saved = tmp_path / "saved" / "nginx-accesslog" / "2026" / "11" / "27" / "10"
    saved.mkdir(parents=True)
    (saved / "a.json").write_bytes(b'{"status": 200}\n')
    script = str(ROOT / "init" / "bucket_mirror.py")
    status = run(old_python, script, "--data-dir", str(tmp_path / "saved"), "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("saved: 1 objects (16 B) of s3://nginx-accesslog in ")
    exported = run(old_python, script, "--data-dir", str(tmp_path / "saved"), "export", "--to", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "out" / "2026" / "11" / "27" / "10" / "a.json").read_bytes() == b'{"status": 200}\n'


@pytest.mark.parametrize(
    ("path", "args", "says"),
    [
        ("init/init_resource.py", ["--status"], "needs boto3"),
        ("init/pipeline_cli.py", ["ls"], "needs boto3"),
        ("init/bucket_mirror.py", ["sync"], "needs boto3"),
        ("query/logs_query.py", [], "No module named 'boto3'"),
        ("query/compact_hours.py", [], "No module named 'boto3'"),
    ],
    ids=["init_resource", "pipeline_cli", "bucket_mirror", "logs_query", "compact_hours"],
)
def test_a_real_command_on_old_pythons_gets_as_far_as_boto3(old_python, path, args, says):
    # without boto3 (-S) each runs its parsing and set-up, then says in one line what it needs
    result = run(old_python, str(ROOT / path), *args, env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr


def test_traffic_runs_on_old_pythons(old_python):
    # stdlib only: a real (failed) run against a closed port
    result = run(
        old_python, str(ROOT / "query/traffic.py"), "--url", "http://127.0.0.1:9", "--rate", "5", "--duration", "1"
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert "sent" in result.stdout + result.stderr
