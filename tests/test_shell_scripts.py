"""Every shell script passes shellcheck and is strict (`set -euo pipefail`)."""

from __future__ import annotations

import subprocess

import pytest
from support.compose import ROOT
from support.tools import require

SCRIPTS = sorted(
    {
        *ROOT.glob("*.sh"),
        *ROOT.glob("init/**/*.sh"),
        *ROOT.glob("fluentd/**/*.sh"),
        *ROOT.glob("bench/**/*.sh"),
        *ROOT.glob("image/**/*.sh"),
        *ROOT.glob("tests/engine/**/*.sh"),
        ROOT / ".ci" / "run",
    }
)


def test_scripts_found():
    names = {p.relative_to(ROOT).as_posix() for p in SCRIPTS}
    assert {"start.sh", "test.sh", ".ci/run", "init/ready.d/10-provision.sh", "init/shutdown.d/10-save.sh"} <= names
    assert "fluentd/tools/drain_status.sh" in names
    assert {"tests/engine/install.sh", "tests/engine/images/localstack/entrypoint.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shellcheck_clean(script):
    shellcheck = require("shellcheck", "lints the shell scripts")
    result = subprocess.run([shellcheck, "--external-sources", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_strict_mode(script):
    text = script.read_text()
    assert text.startswith(("#!/usr/bin/env bash\n", "#!/bin/bash\n"))
    assert "\nset -euo pipefail\n" in text
