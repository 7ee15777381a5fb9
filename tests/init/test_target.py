"""init/pipeline_target.py: one place for the stack's names, and one line for every failure.

The defaults agree with docker-compose.yml, .env.example and the query tools' own copy;
an endpoint that is a web server, or a Python without boto3, gives one line saying
what to do; hints on a host name this project's tools, never the AWS CLI.
"""

from __future__ import annotations

import http.server
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator

import pipeline_target
import pytest
from support.compose import ROOT
from support.query_data import QUERY

INIT = ROOT / "init"
PAGE = b"<!DOCTYPE html>\n<html>\n<head><title>Welcome</title></head>\n<body>\n<h1>It works</h1>\n</body>\n</html>\n"
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KINESIS_", "BUCKET_", "LAMBDA_"))}
CLEAN_ENV.pop("COMPRESSION", None)


def tool(*args: str, python: list[str] | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*(python or [sys.executable]), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**CLEAN_ENV, **(env or {})},
    )


# --- one place for the defaults ------------------------------------------------------------


def test_compose_defaults_agree_with_the_module():
    compose = (ROOT / "docker-compose.yml").read_text()
    found = {}
    for variable, value in re.findall(r"\$\{([A-Z_]+):-([^}]*)\}", compose):
        assert found.setdefault(variable, value) == value, f"{variable} has two defaults in docker-compose.yml"
    names = {variable: value for variable, value in pipeline_target.DEFAULTS.values()}
    shared = set(names) & set(found)
    assert {"KINESIS_STREAM", "KINESIS_SHARDS", "BUCKET_NAME", "AWS_REGION", "COMPRESSION"} <= shared
    for variable in shared:
        assert found[variable] == names[variable], variable


def test_env_example_shows_the_modules_defaults():
    example = dict(re.findall(r"^([A-Z_]+)=(.*)$", (ROOT / ".env.example").read_text(), re.M))
    for variable, value in pipeline_target.DEFAULTS.values():
        if variable in example:
            assert example[variable] == value, variable


def test_every_tool_takes_its_defaults_from_the_module(monkeypatch):
    for variable, _ in pipeline_target.DEFAULTS.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    import bucket_mirror
    import init_resource
    import pipeline_cli

    parsers = {
        "init_resource": init_resource.build_parser().parse_args([]),
        "pipeline_cli": pipeline_cli.build_parser().parse_args(["ls"]),
        "bucket_mirror": bucket_mirror.build_parser().parse_args(["status"]),
    }
    for name, args in parsers.items():
        for setting, (_, value) in pipeline_target.DEFAULTS.items():
            if hasattr(args, setting):
                assert str(getattr(args, setting)) == value, (name, setting)
        assert args.endpoint_url == pipeline_target.DEFAULT_ENDPOINT, name
    assert parsers["init_resource"].shards == 1


def test_the_query_tools_own_copy_agrees(monkeypatch):
    # query/ runs in its own image without init/: its defaults are a copy, kept equal here
    for variable in ("BUCKET_NAME", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(variable, raising=False)
    sys.path.insert(0, str(QUERY))
    try:
        import logs_query
    finally:
        sys.path.remove(str(QUERY))
    args = logs_query.build_parser().parse_args([])
    assert args.bucket == pipeline_target.DEFAULTS["bucket"][1]
    assert args.region == pipeline_target.DEFAULTS["region"][1]
    assert args.endpoint_url == pipeline_target.DEFAULT_ENDPOINT


def test_no_tool_spells_a_default_name_itself():
    # the module is the one place: no other host tool of init/ writes the names' defaults
    # (us-east-1 stays where AWS's own rule needs it: no LocationConstraint there)
    names = [value for name, (_, value) in pipeline_target.DEFAULTS.items() if len(value) > 4 and name != "region"]
    for path in INIT.glob("*.py"):
        if path.name in ("pipeline_target.py", "kinesis_event_to_s3.py"):
            continue
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        for name in names:
            assert f'"{name}"' not in code, (path.name, name)


# --- one line for every failure ----------------------------------------------------------------


class WebPage(http.server.BaseHTTPRequestHandler):
    status = 200

    def answer(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    do_GET = do_POST = do_PUT = do_HEAD = answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(params=[200, 403, 404])
def web_server(request) -> Iterator[str]:
    handler = type("Handler", (WebPage,), {"status": request.param})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "command",
    [
        ["init_resource.py", "--status", "--wait-timeout", "5"],
        ["pipeline_cli.py", "ls"],
        ["pipeline_cli.py", "cat", "a.json"],
        ["bucket_mirror.py", "sync", "--timeout", "5"],
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_an_endpoint_that_is_a_web_server_is_one_line(web_server, command):
    script, *rest = command
    result = tool(str(INIT / script), "--endpoint-url", web_server, *rest)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "answered with a web page, not an AWS API" in result.stderr
    assert "LocalStack's address" in result.stderr and "<html" not in result.stderr.lower()


@pytest.mark.parametrize(
    "command",
    [["init_resource.py", "--status"], ["pipeline_cli.py", "ls"], ["bucket_mirror.py", "sync"]],
    ids=lambda command: command[0],
)
def test_a_python_without_boto3_is_one_line_saying_how_to_get_it(command, tmp_path):
    # -S: no site-packages, so no boto3 whatever this machine has installed
    script, *rest = command
    result = tool(str(INIT / script), "--endpoint-url", "http://127.0.0.1:9", *rest, python=[sys.executable, "-S"])
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "needs boto3" in result.stderr and "-m pip install boto3" in result.stderr


def test_help_needs_no_boto3():
    for script in ("init_resource.py", "pipeline_cli.py", "bucket_mirror.py"):
        result = tool(str(INIT / script), "--help", python=[sys.executable, "-S"])
        assert result.returncode == 0 and "usage:" in result.stdout, script


# --- hints on a host: this project's tools, not the AWS CLI -------------------------------------


def test_host_hints_name_pipeline_cli_and_the_hinted_command_runs(aws, monkeypatch, capsys):
    import init_resource

    monkeypatch.delenv("PIPELINE_CLI", raising=False)
    init_resource.main(["--endpoint-url", aws, "--bucket", "other-bucket"])
    capsys.readouterr()
    # given a provisioned pipeline with no records yet, on a host
    assert init_resource.main(["--endpoint-url", aws, "--bucket", "other-bucket", "--status"]) == 0
    hints = [line for line in capsys.readouterr().out.splitlines() if line.startswith("hint:")]
    assert hints and not any(re.search(r"\baws (s3|logs)\b", hint) for hint in hints), hints
    commands = re.findall(r"\((python3 init/pipeline_cli\.py [^)]*)\)", " ".join(hints))
    assert any(command.endswith(" logs --follow") for command in commands), hints
    # when the user runs the hinted look-up (ls) with the same target, it lists that bucket
    listing = next(c for c in commands if c.endswith(" logs --follow")).replace(" logs --follow", " ls")
    words = shlex.split(listing)
    assert words[:2] == ["python3", "init/pipeline_cli.py"] and "other-bucket" in words
    result = tool(str(INIT / "pipeline_cli.py"), *words[2:], env={"AWS_ENDPOINT_URL": aws})
    assert result.returncode == 0 and "no objects under s3://other-bucket/ yet" in result.stderr, result.stderr
