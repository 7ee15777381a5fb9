"""A reader for fluentd's configuration syntax, enough to check our fluent.conf."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

# CLP_FLUENT_CONF: where the test engine's fluentd stand-in has the mounted file (tests/engine/)
FLUENT_CONF = Path(
    os.environ.get("CLP_FLUENT_CONF")
    or Path(__file__).resolve().parent.parent.parent / "fluentd" / "conf" / "fluent.conf"
)
_ENV_DEFAULT = re.compile(r"""#\{ENV\['([A-Z_]+)'\] \|\| '([^']*)'\}""")


@dataclass
class Section:
    """`<name arg>` with its `key value` parameters and nested sections."""

    name: str
    arg: str = ""
    params: dict[str, str] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)

    def find(self, name: str, **params: str) -> list[Section]:
        return [s for s in self.sections if s.name == name and all(s.params.get(k) == v for k, v in params.items())]

    def one(self, name: str, **params: str) -> Section:
        (found,) = self.find(name, **params)
        return found


def parse(text: str) -> Section:
    root = Section("root")
    stack = [root]
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("</"):
            closed = stack.pop()
            assert line == f"</{closed.name}>", f"unbalanced {line}"
            continue
        if line.startswith("<"):
            name, _, arg = line[1:-1].partition(" ")
            section = Section(name, arg.strip())
            stack[-1].sections.append(section)
            stack.append(section)
            continue
        key, _, value = line.partition(" ")
        stack[-1].params[key] = value.strip()
    assert len(stack) == 1, "unclosed section"
    return root


def fluent_conf() -> Section:
    return parse(FLUENT_CONF.read_text())


def fluent_conf_defaults() -> dict[str, str]:
    """Each environment variable fluent.conf reads, with its default; a path built from
    one (e.g. the position file) is not a separate variable."""
    defaults: dict[str, str] = {}
    for name, default in _ENV_DEFAULT.findall(FLUENT_CONF.read_text()):
        assert defaults.setdefault(name, default) == default, f"{name} has two defaults"
    return defaults


def resolve(value: str, env: dict[str, str] | None = None) -> str:
    """A quoted parameter with `#{ENV[...] || '...'}` evaluated, as fluentd would."""
    env = env or {}
    value = value.strip('"')
    return _ENV_DEFAULT.sub(lambda m: env.get(m.group(1)) or m.group(2), value)


def parse_size(value: str) -> int:
    """A fluentd size (`512k`, `1m`, `1024`) in bytes, as config/types.rb reads it."""
    units = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    value = value.strip().lower()
    if value and value[-1] in units:
        return int(float(value[:-1]) * units[value[-1]])
    return int(value)
