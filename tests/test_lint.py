"""The Python code is ruff clean (lint rules and format, as configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support.compose import ROOT


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(command):
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "--no-cache", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
