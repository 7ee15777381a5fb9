"""The project's nginx config in a real nginx: the page, and a parsable line per request."""

from __future__ import annotations

import re
import urllib.request

import pytest
from kinesis_event_to_s3 import parse_line
from support.net import wait_until
from support.nginx import MAIN_FORMAT, TEMPLATE, raw_request


def wait_for_lines(nginx, count: int, timeout: float = 5) -> list[str]:
    """nginx writes a request's line once the response is done: wait for it."""
    wait_until(lambda: len(nginx.log_lines()) >= count, timeout, interval=0.02)
    return nginx.log_lines()


def test_serves_the_landing_page_without_its_version(nginx):
    with urllib.request.urlopen(nginx.url + "/", timeout=5) as response:
        body = response.read().decode()
        server = response.headers["Server"]
    assert response.status == 200
    assert server == "nginx"  # server_tokens off
    assert "./start.sh ls" in body and "./start.sh status" in body
    assert "What happens to this request" in body
    # the stack's default names stand where the page has placeholders
    assert "<code>nginx-accesslog-stream</code>" in body and "<code>nginx-accesslog</code>" in body
    # and it links the dashboard on compose's default port
    assert '<a href="http://localhost:8081/">' in body
    assert "@" not in body.split("<body>", 1)[1]


def test_the_landing_page_names_the_configured_stream_and_bucket(tmp_path):
    # given a stack whose .env sets other names (compose passes them as NGINX_* variables)
    from support.nginx import Nginx
    from support.tools import require

    server = Nginx(
        require("nginx", "the real web server of the stack"),
        tmp_path / "nginx",
        settings={"NGINX_KINESIS_STREAM": "my-stream", "NGINX_BUCKET_NAME": "my-logs", "NGINX_DASHBOARD_PORT": "9090"},
    )
    try:
        with urllib.request.urlopen(server.url + "/", timeout=5) as response:
            body = response.read().decode()
    finally:
        server.stop()
    # then the page names those, and not the defaults
    assert "<code>my-stream</code>" in body and "<code>my-logs</code>" in body
    assert "nginx-accesslog" not in body
    assert '<a href="http://localhost:9090/">' in body and "8081" not in body


def test_healthcheck_is_answered_and_not_logged(nginx):
    with urllib.request.urlopen(nginx.url + "/healthz", timeout=5) as response:
        assert response.read() == b"ok\n"
    urllib.request.urlopen(nginx.url + "/", timeout=5).read()
    lines = wait_for_lines(nginx, 1)
    assert len(lines) == 1 and '"GET / HTTP/1.1"' in lines[0]


REQUESTS = [
    pytest.param(
        b"GET /search?q=caf%C3%A9&x=%22y%22 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8.5.0\r\n"
        b"Connection: close\r\n\r\n",
        {
            "request_method": "GET",
            "request_uri": "/search?q=caf%C3%A9&x=%22y%22",
            "status": 404,
            "http_user_agent": "curl/8.5.0",
            "http_x_forwarded_for": None,
        },
        id="query-string",
    ),
    pytest.param(
        b'GET /a"b HTTP/1.1\r\nHost: localhost\r\nUser-Agent: "quoted" \xec\x95\x88 back\\slash\r\n'
        b"Referer: https://example.com/r\r\nX-Forwarded-For: 203.0.113.7, 10.0.0.1\r\nConnection: close\r\n\r\n",
        {
            "request_uri": r"/a\x22b",
            "http_user_agent": r"\x22quoted\x22 \xEC\x95\x88 back\x5Cslash",
            "http_referer": "https://example.com/r",
            "http_x_forwarded_for": "203.0.113.7, 10.0.0.1",
        },
        id="quotes-utf8-backslash-xff",
    ),
    pytest.param(
        b"POST /api/orders HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
        {"request_method": "POST", "server_protocol": "HTTP/1.0", "status": 404, "http_user_agent": None},
        id="post-http10",
    ),
    pytest.param(
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32)) + b"\r\n\r\n",
        {"request_method": None, "request_uri": None, "server_protocol": None, "status": 400},
        id="tls-hello-on-http",
    ),
    pytest.param(
        b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        {"request_uri": "/index.html", "status": 200, "remote_addr": "127.0.0.1", "remote_user": None},
        id="page",
    ),
]


@pytest.mark.parametrize(("request_bytes", "expected"), REQUESTS)
def test_each_request_writes_one_line_the_handler_parses(nginx, request_bytes, expected):
    # given the real nginx running our config
    # when a request is sent byte for byte
    raw_request(nginx.port, request_bytes)
    # then exactly one access-log line appears, which the Lambda handler parses as expected
    (line,) = wait_for_lines(nginx, 1)
    record = parse_line(line)
    assert record is not None, line
    for key, value in expected.items():
        assert record[key] == value, (key, line)
    assert record["timestamp"].endswith("Z")
    # and the main_timed tail parses fully: no upstream here, a time, a length, an id, the host
    assert re.fullmatch(r"[0-9a-f]{32}", record["request_id"]), line
    assert isinstance(record["request_time"], float) and 0 <= record["request_time"] < 5
    assert record["upstream_response_time"] is None
    assert record["request_length"] <= len(request_bytes) and (record["request_length"] > 0 or record["status"] == 400)
    assert record["host"] == "localhost"


def test_template_logs_main_fields_first_then_the_timed_tail():
    text = TEMPLATE.read_text()
    assert "access_log ${NGINX_ACCESS_LOG} main_timed;" in text
    assert "server_tokens off;" in text
    assert '"$http_x_forwarded_for"' in MAIN_FORMAT
    # the timed format starts with the image's `main` format, word for word
    (timed,) = re.findall(r"log_format main_timed (.*?);\n", text, re.DOTALL)
    pieces = "".join(re.findall(r"'([^']*)'", timed))
    assert pieces.startswith("".join(re.findall(r"'([^']*)'", MAIN_FORMAT)) + " rt=$request_time ")
