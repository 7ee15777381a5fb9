#!/usr/bin/env python3
"""LocalStack healthcheck: healthy only once our ready.d provisioning hook succeeded.

`/_localstack/health` answers 200 while ready.d scripts still run, and a failing script
does not fail the stage, so this reads `/_localstack/init/ready` instead: the stage must
be completed and every script SUCCESSFUL. Standard library only (the healthcheck runs
with the container's plain python3). Exit 0 when ready, 1 otherwise, with a reason.
"""

from __future__ import annotations

import json
import sys
import urllib.request

DEFAULT_URL = "http://localhost:4566/_localstack/init/ready"


def verdict(report: dict) -> tuple[bool, str]:
    """(ready, reason) from the JSON LocalStack returns for an init stage."""
    scripts = report.get("scripts") or []
    if not scripts:
        return False, "no ready.d script registered (is init/ready.d mounted?)"
    failed = [s.get("name", "?") for s in scripts if s.get("state") == "ERROR"]
    if failed:
        return False, "provisioning failed: " + ", ".join(failed) + " (docker compose logs localstack)"
    pending = [s.get("name", "?") for s in scripts if s.get("state") != "SUCCESSFUL"]
    if pending or not report.get("completed"):
        return False, "provisioning still running: " + (", ".join(pending) or "stage not completed")
    return True, "provisioned"


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else DEFAULT_URL
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 - fixed local URL
            report = json.loads(response.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        print(f"not ready: {exc}")
        return 1
    ready, reason = verdict(report if isinstance(report, dict) else {})
    print(reason)
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
