"""A run that skipped tests cannot pass for complete: a banner locally, a failure in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

PROBE = """
import pytest

def test_runs():
    assert True

@pytest.mark.skipif(True, reason="nginx not installed (the real web server)")
def test_needs_nginx():
    pass

@pytest.mark.docker
@pytest.mark.skipif(True, reason="no Docker engine")
def test_needs_docker():
    pass
"""


def run_probe(tmp_path: Path, source: str, ci: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(source)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    docker: needs Docker\n")
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(TESTS)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "support.skip_policy", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize(("ci", "code"), [("", 0), ("true", 1)])
def test_a_skipped_test_is_shown_and_fails_ci(tmp_path, ci, code):
    result = run_probe(tmp_path, PROBE, ci)
    assert result.returncode == code, result.stdout
    assert "INCOMPLETE RUN" in result.stdout
    banner = result.stdout.split("INCOMPLETE RUN", 1)[1]
    assert "1 x nginx not installed (the real web server)" in banner
    # the engine tests too: CI starts a private engine, so none of them may skip there
    assert "1 x no Docker engine" in banner


def test_the_docker_test_alone_skipping_still_fails_ci(tmp_path):
    source = PROBE.split('@pytest.mark.skipif(True, reason="nginx')[0] + PROBE.split("pass\n", 1)[1]
    result = run_probe(tmp_path, source, "true")
    assert result.returncode == 1, result.stdout
    assert "1 x no Docker engine" in result.stdout.split("INCOMPLETE RUN", 1)[1]


def test_a_run_without_skips_passes_ci(tmp_path):
    source = PROBE.split("@pytest.mark.skipif")[0]
    result = run_probe(tmp_path, source, "true")
    assert result.returncode == 0, result.stdout
    assert "INCOMPLETE RUN" not in result.stdout
