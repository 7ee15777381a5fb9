"""External programs the tests need: skipped where absent, required under CI."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(program: str, why: str) -> str:
    """The program's path. Locally a missing one skips the test; in CI it fails it,
    because .ci/run installs it and a skip there would hide a broken install step."""
    for candidate in (shutil.which(program), f"/usr/sbin/{program}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    message = f"{program} not installed ({why}); .ci/run installs it"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def unavailable(message: str) -> None:
    """Skip locally, fail in CI (where .ci/run must have provided it); one line naming what is missing."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)
