"""The traffic generator against the project's real nginx (Debian's, on 127.0.0.1)."""

from __future__ import annotations

import io
import time
from collections import Counter

import pytest
import traffic
from kinesis_event_to_s3 import parse_line
from support.net import wait_until


def test_sends_a_bounded_varied_mix_that_the_pipeline_parses(nginx):
    # given the project's nginx; when 300 requests are sent at 300/s
    out = io.StringIO()
    started = time.monotonic()
    tally = traffic.run(traffic.parse_url(nginx.url), rate=300, duration=10, count=300, seed=7, out=out)
    elapsed = time.monotonic() - started
    # then exactly that many lines are logged, in bounded time, with a closing count
    assert wait_until(lambda: len(nginx.log_lines()) >= 300, 5)
    lines = nginx.log_lines()
    assert len(lines) == 300 and tally.done() == 300 and tally.failed == 0
    assert elapsed < 5
    assert out.getvalue().splitlines()[-1].startswith("traffic: sent 300 requests in ")
    records = [parse_line(line) for line in lines]
    parsed = [r for r in records if r is not None]
    assert len(parsed) >= 290  # TLS bytes and junk may be lines the handler keeps under errors/
    statuses = Counter(r["status"] for r in parsed)
    assert {200, 301, 404, 500, 503, 400} <= set(statuses), statuses
    assert {r["request_method"] for r in parsed} >= {"GET", "POST", "HEAD", "DELETE"}
    assert len({r["request_uri"] for r in parsed}) > 50
    assert any(r["http_x_forwarded_for"] for r in parsed) and any(r["http_referer"] for r in parsed)
    assert len({r["http_user_agent"] for r in parsed}) >= 5
    assert any("?" in (r["request_uri"] or "") for r in parsed)


def test_duration_bounds_the_run(nginx):
    out = io.StringIO()
    started = time.monotonic()
    tally = traffic.run(traffic.parse_url(nginx.url), rate=20, duration=0.5, count=1000, seed=1, out=out)
    assert time.monotonic() - started < 3
    assert 5 <= tally.done() <= 12


def test_no_server_is_one_line_and_exit_1(capsys):
    from support.net import free_port

    code = traffic.main(["--url", f"http://127.0.0.1:{free_port()}", "--rate", "10", "--count", "3"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "no answer from" in err


@pytest.mark.parametrize(
    "args",
    [["--rate", "0"], ["--rate", "5000"], ["--duration", "-1"], ["--count", "x"], ["--url", "ftp://x"],
     ["--url", "localhost"], ["--url", "http://h:99999"]],
)  # fmt: skip
def test_bad_flags_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exited:
        traffic.main(args)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "traffic.py: error:" in err and "Traceback" not in err
