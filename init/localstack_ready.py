#!/usr/bin/env python3
"""LocalStack healthcheck: healthy only once provisioning succeeded.

`/_localstack/health` answers 200 while ready.d scripts still run, and a failing script
does not fail the stage, so this reads `/_localstack/init/ready`: the stage must be
completed. The provisioning hook (init/ready.d/10-provision.sh) also writes its outcome
to a state file; when present, that outcome decides, because `./start.sh provision` can
run the hook again after a failure while LocalStack keeps reporting the first ERROR.
Standard library only (the healthcheck runs with the container's plain python3).
Exit 0 when ready, 1 otherwise, printing the reason on one line.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import pipeline_target  # beside this file: the endpoint and state folder's defaults

DEFAULT_URL = pipeline_target.DEFAULT_ENDPOINT + "/_localstack/init/ready"
FIX = "fix the cause, then run ./start.sh provision"


def state_file() -> Path:
    return Path(os.environ.get("PIPELINE_STATE_DIR") or pipeline_target.DEFAULT_STATE_DIR) / "provision.state"


def verdict(report: dict, provision_state: str | None = None) -> tuple[bool, str]:
    """(ready, reason) from LocalStack's ready-stage report and the hook's state file."""
    scripts = report.get("scripts") or []
    if not scripts:
        return False, "no ready.d script registered (is init/ready.d mounted?)"
    failed = [s.get("name", "?") for s in scripts if s.get("state") == "ERROR"]
    pending = [s.get("name", "?") for s in scripts if s.get("state") not in ("SUCCESSFUL", "ERROR")]
    if pending or not report.get("completed"):
        return False, "provisioning still running: " + (", ".join(pending) or "stage not completed")
    if provision_state is not None:
        if provision_state == "ok":
            return True, "provisioned" + (" (by a re-run after the hook failed)" if failed else "")
        if provision_state == "running":
            return False, "provisioning running again (./start.sh provision)"
        return False, f"provisioning {provision_state}: {FIX}"
    if failed:
        return False, "provisioning failed: " + ", ".join(failed) + f"; {FIX}"
    return True, "provisioned"


def restore_progress(log: Path) -> str | None:
    """The restore's last progress line in the hook's log, while it is the last line: a
    start after a long day of traffic spends minutes putting the saved objects back."""
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - 4096))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    last = lines[-1].strip() if lines else ""
    return last if last.startswith("restoring s3://") else None


def read_state(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else DEFAULT_URL
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 - fixed local URL
            report = json.loads(response.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        print(f"not ready: {exc}")
        return 1
    ready, reason = verdict(report if isinstance(report, dict) else {}, read_state(state_file()))
    progress = None if ready else restore_progress(state_file().with_name("provision.log"))
    print(f"{reason}; {progress}" if progress else reason)
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
