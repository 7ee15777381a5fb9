"""The query image is pinned and matches what the tests run."""

from __future__ import annotations

import ast
import re
import tomllib

from support.query_data import QUERY

ROOT = QUERY.parent


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[0-9][0-9A-Za-z.]*", version), f"not an exact pin: {line!r}"
            found[name.lower()] = version
    return found


def test_image_packages_are_exact_pins_matching_the_test_group():
    image = pins((QUERY / "requirements.txt").read_text().splitlines())
    test_group = pins(tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]["test"])
    assert {"duckdb", "boto3"} <= set(image)
    assert image["duckdb"] == test_group["duckdb"] and image["boto3"] == test_group["boto3"]


def test_dockerfile_uses_a_pinned_base_runs_unprivileged_and_ships_the_tools():
    text = (QUERY / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
    assert "-r /opt/query/requirements.txt" in text and "--only-binary=:all:" in text
    assert re.search(r"^USER query$", text, re.MULTILINE) and "EXPOSE" not in text
    for tool in ("bucket_reader.py", "logs_query.py", "compact_hours.py", "traffic.py"):
        assert tool in text and (QUERY / tool).is_file()


def test_the_image_ships_every_module_the_tools_import():
    # the Dockerfile copies files one by one: a module the tools import but the image
    # lacks would fail only inside the image
    shipped = set(re.findall(r"\b(\w+)\.py\b", (QUERY / "Dockerfile").read_text()))
    local = {path.stem for path in QUERY.glob("*.py")}
    for tool in shipped & local:
        imported = set()
        for node in ast.walk(ast.parse((QUERY / f"{tool}.py").read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert imported & local <= shipped, (tool, imported & local - shipped)
