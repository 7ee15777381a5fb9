"""The main_timed format as the real nginx writes it behind upstreams: every field parses,
typed, including $upstream_response_time's lists (retries `, `, internal redirects ` : `)."""

from __future__ import annotations

import re

import pytest
from kinesis_event_to_s3 import parse_line
from support.net import free_port, wait_until
from support.nginx import Nginx, raw_request
from support.tools import require


@pytest.fixture
def proxy(tmp_path):
    """The project's nginx, plus a test server logging in main_timed that proxies to a
    dead port and to the project's server (the upstream), as a reverse proxy would."""
    binary = require("nginx", "the real web server of the stack")
    upstream = Nginx(binary, tmp_path / "upstream")
    dead, port = free_port(), free_port()
    log = tmp_path / "proxy.log"
    conf = f"""
upstream first_dead {{ server 127.0.0.1:{dead}; server 127.0.0.1:{upstream.port}; }}
upstream only_dead {{ server 127.0.0.1:{dead}; }}
server {{
    listen 127.0.0.1:{port};
    access_log {log} main_timed;
    location /retry/ {{ proxy_pass http://first_dead/v1/; }}
    location /redirect/ {{
        proxy_pass http://only_dead/;
        proxy_intercept_errors on;
        error_page 502 = @fallback;
    }}
    location @fallback {{ proxy_pass http://127.0.0.1:{upstream.port}; }}
    location /down/ {{ proxy_pass http://only_dead/; }}
}}
"""
    server = Nginx(binary, tmp_path / "proxy", extra_conf=conf)
    yield port, log
    server.stop()
    upstream.stop()


def test_proxied_requests_log_upstream_times_that_parse(proxy):
    port, log = proxy
    # given requests through upstreams: a retry past a dead server, an internal redirect
    # to a second upstream after a 502, a dead upstream alone
    for path in ("/retry/a", "/retry/b", "/redirect/c", "/down/d"):
        raw_request(port, f"GET {path} HTTP/1.1\r\nHost: Example.COM:8080\r\nConnection: close\r\n\r\n".encode())
    assert wait_until(lambda: log.exists() and len(log.read_text().splitlines()) == 4, 5, interval=0.02)
    lines = log.read_text().splitlines()
    # then every line parses fully, and each upstream time is the sum of the times logged
    records = {}
    for line in lines:
        record = parse_line(line)
        assert record is not None, line
        (urt,) = re.findall(r' urt="([^"]*)"', line)
        logged = [float(t) for t in re.split(r", | : ", urt) if t != "-"]
        assert record["upstream_response_time"] == pytest.approx(sum(logged)), line
        assert re.fullmatch(r"[0-9a-f]{32}", record["request_id"])
        assert record["host"] == "example.com"  # $host: lower case, without the port
        assert isinstance(record["request_time"], float) and record["request_length"] > 0
        records[record["request_uri"]] = (record, urt)
    assert ", " in records["/retry/a"][1]  # the dead server first, then the live one
    assert records["/retry/a"][0]["status"] == 200
    assert " : " in records["/redirect/c"][1]  # two upstream groups, one internal redirect
    assert records["/down/d"][0]["status"] == 502
    assert len({record["request_id"] for record, _ in records.values()}) == 4
