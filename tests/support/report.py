"""Reading init_resource.py's report: one `resource  name: outcome (detail)` line each."""

from __future__ import annotations

RESOURCES = ("stream", "bucket", "role", "function", "mapping")


def outcomes(stdout: str) -> dict[str, str]:
    """`resource  name: outcome (detail)` lines -> {resource: outcome}."""
    found = {}
    for line in stdout.splitlines():
        resource, _, rest = line.partition(" ")
        if resource in RESOURCES and ": " in rest:
            found[resource] = rest.split(": ", 1)[1].split(" (")[0]
    return found
