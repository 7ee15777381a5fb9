"""The compose file as Compose sees it with an empty environment (defaults applied)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's `${NAME:-default}` substitution, over a parsed document."""
    if isinstance(value, str):
        parts = value.split("$$")  # `$$` is a literal `$`
        return "$".join(_VARIABLE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), p) for p in parts)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    # Compose gives the project's name (its top-level `name:` unless set) to interpolation
    return interpolate(document, {"COMPOSE_PROJECT_NAME": document["name"], **(env or {})})
