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
    assets, base = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
    # the dashboard's chart library: an exact node image, npm ci from the lock file
    assert re.fullmatch(r"node:\d+\.\d+\.\d+-slim", assets), assets
    assert "npm ci" in text and "assets/package-lock.json" in text
    assert "-r /opt/query/requirements.txt" in text and "--only-binary=:all:" in text
    assert re.search(r"^USER query$", text, re.MULTILINE) and "EXPOSE" not in text
    for tool in ("bucket_reader.py", "logs_query.py", "compact_hours.py", "traffic.py", "tail.py", "dashboard.py"):
        assert tool in text and (QUERY / tool).is_file()
    for page in ("index.html", "app.js", "app.css"):
        assert f"static/{page}" in text and (QUERY / "static" / page).is_file()
    assert "uPlot.iife.min.js" in text and "uPlot.min.css" in text


def test_the_chart_library_is_pinned_exactly_in_the_lock_file():
    import json

    package = json.loads((QUERY / "assets" / "package.json").read_text())
    lock = json.loads((QUERY / "assets" / "package-lock.json").read_text())
    for name, version in package["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} {version} is not exact"
        locked = lock["packages"][f"node_modules/{name}"]
        assert locked["version"] == version and locked["integrity"].startswith("sha512-")


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
