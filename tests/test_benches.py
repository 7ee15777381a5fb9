"""Every benchmark still starts: the benches run on their own, not in the test command,
so a module they import can move away unnoticed (two did in one merge)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support.compose import ROOT

BENCHES = sorted(p for p in (ROOT / "bench").glob("*.py") if p.name != "bench_env.py")


@pytest.mark.parametrize("bench", BENCHES, ids=lambda p: p.name)
def test_the_bench_imports_and_answers_help(bench):
    result = subprocess.run([sys.executable, str(bench), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:")
