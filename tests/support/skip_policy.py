"""No test skips quietly (a pytest plugin, loaded by conftest).

A skipped suite looks green: without nginx, shellcheck or a Docker engine, tests would
skip and the run would still pass. So every skip is listed in a banner at the end of the
run, and under CI (CI=true), where .ci/run installs every prerequisite, the private Docker
engine's included, it fails the run.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_skipped: list[tuple[str, str]] = []


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append((report.nodeid, _reason(report)))


def pytest_terminal_summary(terminalreporter) -> None:
    if not _skipped:
        return
    reasons: dict[str, int] = {}
    for _, reason in _skipped:
        reasons[reason] = reasons.get(reason, 0) + 1
    write = terminalreporter.write_line
    terminalreporter.section("INCOMPLETE RUN", sep="!", red=True, bold=True)
    write(f"{len(_skipped)} test(s) did not run, so this run proves less than it says:", red=True, bold=True)
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        write(f"  {count:>4} x {reason}", red=True)
    write("Install the prerequisites (docs/testing.md) and run again." + (" CI fails on this." if IN_CI else ""))


def pytest_sessionfinish(session: pytest.Session) -> None:
    if IN_CI and _skipped and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
