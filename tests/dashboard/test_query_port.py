"""./start.sh query on the dashboard's loopback port (POST /api/query), against moto server:
the tool's arguments, answered as the tool alone answers them; refused to a browser's page
and to another stack; what it declines, or cannot parse, is left to the tool.
(start.sh's side, curl and its fallback: tests/test_start_sh.py.)"""

from __future__ import annotations

import http.client
from datetime import timedelta

import dashboard
import logs_query
import pytest
from support.dashboard_data import NOW, write_traffic
from support.query_data import Writer

RANGE = ["--from", (NOW - timedelta(minutes=50)).isoformat(), "--to", NOW.isoformat()]
ASKED_BY = {"X-Logs-Stack": "test-stack", "X-Logs-Source": "1234-5678"}
NOTE = "logs_query: answered by the dashboard's loaded tables in "


@pytest.fixture
def port(serve, aws, bucket, handler_module, monkeypatch):
    """The dashboard's server with its query service, over traffic written by the handler.
    It parses the arguments with the defaults of its own environment, as in its container."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
    monkeypatch.setenv("BUCKET_NAME", bucket)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setattr(handler_module, "log", lambda *args, **kwargs: None)
    write_traffic(Writer(handler_module))
    server = serve()
    target = {"bucket": bucket, "endpoint": aws, "region": "us-east-1"}
    server.app.queries = dashboard.QueryService(server.app.store, target)
    server.app.asked_by = dict(ASKED_BY)
    return server


def post(server, args: list[str], headers: dict[str, str] | None = None, body: bytes | None = None):
    """(status, note header, text) of a POST /api/query as start.sh sends it: each argument
    ended by a NUL."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    data = b"".join(arg.encode() + b"\0" for arg in args) if body is None else body
    sent = {**ASKED_BY, "Content-Type": "application/octet-stream", **(headers or {})}
    connection.request("POST", "/api/query", body=data, headers={k: v for k, v in sent.items() if v is not None})
    response = connection.getresponse()
    answer = (response.status, response.getheader("X-Logs-Note"), response.read().decode())
    connection.close()
    return answer


def alone(aws: str, capsys, args: list[str]) -> tuple[int, str, str]:
    code = logs_query.main(["--endpoint-url", aws, "--socket", "", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "args",
    [
        [],  # the summary
        ["--format", "json", "SELECT status, count(*) AS n, max(timestamp) AS newest FROM logs GROUP BY 1 ORDER BY 1"],
        ["--format", "csv", "SELECT * FROM logs ORDER BY timestamp, request_uri, request_id"],
        # what a shell would split, expand or choke on, and a line break: data, as typed
        ["--format=csv", "SELECT 'it''s $(id) `id` * ; \"q\"' AS s,\n  count(*) AS n FROM logs -- é"],
    ],
    ids=["summary", "group-by", "all-rows", "as-typed"],
)
def test_the_port_answers_as_the_tool_does_alone(aws, capsys, port, args):
    status, note, text = post(port, [*RANGE, *args])
    code, out, _ = alone(aws, capsys, [*RANGE, *args])
    assert (status, text) == (200, out) and code == 0 and out.strip()
    assert note.startswith(NOTE) and "SQL" in note, note
    # --quiet: the answer without its note
    assert post(port, ["--quiet", *RANGE, *args]) == (200, None, out)


def test_the_port_reads_a_closed_hour_as_the_tool_does_and_keeps_nothing(aws, capsys, port):
    args = ["--from", "2026-11-26T15:00Z", "--to", "2026-11-26T16:00Z", "SELECT status, count(*) FROM logs GROUP BY 1"]
    status, note, text = post(port, args)
    code, out, _ = alone(aws, capsys, args)
    assert (status, text) == (200, out) and code == 0 and out.strip()
    assert note.startswith("logs_query: answered by the dashboard in ") and " it read " in note, note
    assert not port.app.store.hours


@pytest.mark.parametrize("sql", ["SELEC 1", "SELECT nothing FROM logs", "SELECT * FROM read_text('/etc/hostname')"])
def test_an_error_in_the_sql_is_the_tools_own_line(aws, capsys, port, sql):
    status, note, text = post(port, [*RANGE, sql])
    code, out, err = alone(aws, capsys, [*RANGE, sql])
    assert (status, note, text) == (422, None, err) and (code, out) == (1, "")
    assert text.startswith("logs_query: error: SQL: ") and text.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--help"], "arguments it leaves to the tool"),
        (["--since", "soon"], "arguments it leaves to the tool"),
        (["--since", "1h", "--to", NOW.isoformat()], "arguments it leaves to the tool"),
        (["--no-such-option"], "arguments it leaves to the tool"),
        ([*RANGE, "   "], "arguments it leaves to the tool"),
        ([*RANGE, "CREATE TABLE t AS SELECT 1"], "SELECT over logs and errors only"),
        (["--from", (NOW - timedelta(hours=30)).isoformat(), "--to", NOW.isoformat()], "older than the last hour"),
        (["--bucket", "other-bucket", *RANGE], "it reads another bucket"),
        (["--aws", *RANGE], "it reads another endpoint"),
    ],
    ids=["help", "bad-since", "since-and-to", "unknown-option", "empty-sql", "create", "older", "bucket", "aws"],
)
def test_what_it_declines_is_left_to_the_tool(capsys, port, args, why):
    status, note, text = post(port, args)
    assert (status, note) == (409, None) and why in text, text
    # the tool then says what is wrong, itself: the dashboard printed nothing (no --help)
    assert capsys.readouterr() == ("", "")
    assert not port.app.store.hours  # and loaded nothing for it


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"Host": "evil.example:8081"}, "only for localhost"),  # a page that rebound its name
        ({"Origin": "http://localhost:8081"}, "not for a page"),  # any browser's POST, same site too
        ({"Origin": "null"}, "not for a page"),
        ({"X-Logs-Stack": None}, "X-Logs-Stack"),
        ({"X-Logs-Stack": "another-stack"}, "X-Logs-Stack"),
        ({"X-Logs-Source": "4242-an-older-query-folder"}, "X-Logs-Source"),
    ],
    ids=["rebound-host", "origin", "null-origin", "no-stack", "other-stack", "other-source"],
)
def test_only_start_sh_of_this_stack_is_answered(port, headers, why):
    status, note, text = post(port, [*RANGE, "SELECT count(*) FROM logs"], headers)
    assert (status, note) == (403, None) and why in text, text
    assert not port.app.store.hours  # nothing was read for it


def test_a_browser_is_granted_no_preflight(port):
    # a page of another origin must ask first (its X-Logs-* headers are not CORS-safelisted)
    connection = http.client.HTTPConnection("127.0.0.1", port.port, timeout=10)
    connection.request(
        "OPTIONS",
        "/api/query",
        headers={
            "Origin": "http://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-logs-stack, x-logs-source",
        },
    )
    response = connection.getresponse()
    response.read()
    assert response.status >= 400
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]


@pytest.mark.parametrize(
    ("body", "length"),
    [(b"\xff\xfe\0", None), (b"", str(dashboard.MAX_REQUEST + 1)), (b"--since\0", "-1")],
    ids=["not-utf8", "too-long", "negative-length"],
)
def test_a_malformed_request_is_left_to_the_tool(port, body, length):
    headers = {"Content-Length": length} if length else {}
    connection = http.client.HTTPConnection("127.0.0.1", port.port, timeout=10)
    connection.request("POST", "/api/query", body=body, headers={**ASKED_BY, **headers})
    response = connection.getresponse()
    assert response.status == 409 and response.read()


def test_a_dashboard_not_told_who_asks_answers_no_query(port):
    port.app.queries = None  # run by hand, without --query-asked-by
    status, _, text = post(port, [*RANGE, "SELECT 1"])
    assert status == 405 and "only answers GET" in text


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_only_a_post_is_a_query(port, method):
    connection = http.client.HTTPConnection("127.0.0.1", port.port, timeout=10)
    connection.request(method, "/api/query", body=b"SELECT 1\0", headers=ASKED_BY)
    response = connection.getresponse()
    assert response.status == 405 and "only answers GET" in response.read().decode()
