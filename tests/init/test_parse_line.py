"""parse_line on real logs, named edge cases and generated lines."""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kinesis_event_to_s3 import FIELDS, MAIN_FIELDS, fluentd_record_json, line_to_json, parse_line, utc_instant
from support.corpus import corpus_files, corpus_lines
from support.events import fluentd_message
from support.nginx_format import rebuild, scan

# Files documented (data/corpus/README.md) as nothing but combined/main traffic.
PURE_FILES = {
    "ddoser_access.log",
    "lnav_shop_access.log",
    "parse-accesslog_apache.log",
    "parse-accesslog_nginx.log",
}


def _check_record(line: str, record: dict) -> None:
    fields = scan(line)
    assert fields is not None, "the handler accepted a line the independent scanner rejects"
    timed = bool(fields["timing"])
    assert tuple(record) == (FIELDS if timed else MAIN_FIELDS)  # combined/main: the keys as before
    assert line in (rebuild(record, main=False, timed=timed), rebuild(record, main=True, timed=timed)) or (
        timed and ("," in fields["timing"]["urt"] or ":" in fields["timing"]["urt"])  # a sum rebuilds no list
    )
    assert isinstance(record["status"], int) and f"{record['status']:03d}" == fields["status"]
    assert record["body_bytes_sent"] is None or isinstance(record["body_bytes_sent"], int)
    expected_time = dt.datetime.strptime(record["time_local"], "%d/%b/%Y:%H:%M:%S %z").astimezone(dt.UTC)
    assert record["timestamp"] == expected_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    if record["request_method"] is not None:
        assert record["request"] == f"{record['request_method']} {record['request_uri']} {record['server_protocol']}"
    for key in ("remote_user", "request", "http_referer", "http_user_agent", "http_x_forwarded_for"):
        assert record[key] != "-"


def fast_path(line: str) -> tuple[str, str] | None:
    """The handler's hot path, on the record fluentd would send for this line."""
    return fluentd_record_json(base64.b64encode(fluentd_message(line)).decode())


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_fluentd_fast_path_agrees_with_the_line_parser(path):
    # given each real line as fluentd ships it
    for raw in corpus_lines(path):
        line = raw.decode("utf-8")
        fast, general = fast_path(line), line_to_json(line)
        # then the hot path gives the same bytes, or leaves the line to the general path
        assert fast is None or fast == general, line
        if general is not None and "\\" not in line and line.isprintable():
            assert fast == general, f"a plain line missed the fast path: {line!r}"
        if fast is not None:
            json.loads(fast[1])


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_lines_round_trip_or_are_rejected_like_the_independent_scanner(path):
    # given real access logs
    lines = corpus_lines(path)
    accepted = 0
    for raw in lines:
        line = raw.decode("utf-8")
        # when each line is parsed
        record = parse_line(line)
        # then accepted lines rebuild byte for byte, and the scanner agrees on what is a line
        if record is None:
            assert scan(line) is None, f"rejected a combined/main line: {line[:200]!r}"
        else:
            accepted += 1
            _check_record(line, record)
    if path.name in PURE_FILES:
        assert accepted == len(lines)
    else:
        assert 0 < accepted < len(lines) or path.name == "lnav_fixtures.log"


COMBINED = '203.0.113.9 - - [27/May/2020:08:23:31 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/8.5.0"'


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(
            COMBINED.replace("+0000", "-0700"),
            {"timestamp": "2020-05-27T15:23:31Z", "time_local": "27/May/2020:08:23:31 -0700"},
            id="negative-offset",
        ),
        pytest.param(
            COMBINED.replace("+0000", "+0330").replace("08:23", "02:23"),
            {"timestamp": "2020-05-26T22:53:31Z"},
            id="half-hour-offset-crosses-midnight",
        ),
        pytest.param(
            COMBINED.replace("203.0.113.9", "2001:db8::1"),
            {"remote_addr": "2001:db8::1"},
            id="ipv6",
        ),
        pytest.param(
            COMBINED.replace("GET / HTTP/1.1", r"GET /q?a=\x22b\x22 HTTP/1.1"),
            {"request_uri": r"/q?a=\x22b\x22", "request_method": "GET"},
            id="nginx-x22",
        ),
        pytest.param(
            COMBINED.replace('"curl/8.5.0"', r'"say \"hi\" \\ bye"'),
            {"http_user_agent": r"say \"hi\" \\ bye"},
            id="apache-backslash-quote",
        ),
        pytest.param(
            COMBINED.replace('"GET / HTTP/1.1"', '"-"'),
            {"request": None, "request_method": None, "request_uri": None, "server_protocol": None},
            id="dash-request",
        ),
        pytest.param(
            COMBINED.replace('"GET / HTTP/1.1"', '""'),
            {"request": "", "request_method": None},
            id="empty-request",
        ),
        pytest.param(
            COMBINED.replace("HTTP/1.1", "HTTP/2.0"),
            {"server_protocol": "HTTP/2.0"},
            id="http2",
        ),
        pytest.param(
            COMBINED.replace("HTTP/1.1", "HTTP/2"),
            {"server_protocol": "HTTP/2"},
            id="http2-no-minor",
        ),
        pytest.param(
            COMBINED.replace('"GET / HTTP/1.1"', r'"\x16\x03\x01\x00\xA5\x01\x00\x00\xA1\x03\x03"'),
            {"request": r"\x16\x03\x01\x00\xA5\x01\x00\x00\xA1\x03\x03", "request_method": None, "status": 200},
            id="tls-garbage",
        ),
        pytest.param(
            COMBINED.replace(" 612 ", " - "),
            {"body_bytes_sent": None},
            id="bytes-dash",
        ),
        pytest.param(
            COMBINED.replace("GET / HTTP/1.1", "GET /a file with spaces.txt HTTP/1.0"),
            {"request_uri": "/a file with spaces.txt", "server_protocol": "HTTP/1.0"},
            id="uri-with-spaces",
        ),
        pytest.param(
            COMBINED + ' "198.51.100.7, 10.0.0.1"',
            {"http_x_forwarded_for": "198.51.100.7, 10.0.0.1", "http_user_agent": "curl/8.5.0"},
            id="main-format-xff",
        ),
        pytest.param(COMBINED + ' "-"', {"http_x_forwarded_for": None}, id="main-format-dash-xff"),
        pytest.param(
            COMBINED.replace("- -", "- alice"),
            {"remote_user": "alice"},
            id="remote-user",
        ),
    ],
)
def test_named_cases(line, expected):
    record = parse_line(line)
    assert record is not None
    for key, value in expected.items():
        assert record[key] == value
    _check_record(line, record)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(COMBINED.removesuffix(' "curl/8.5.0"'), id="common-format"),
        pytest.param("www.example.com " + COMBINED, id="vhost-prefix"),
        pytest.param(COMBINED.replace("27/May", "31/Feb"), id="no-such-date"),
        pytest.param(COMBINED.replace("27/May", "27/Foo"), id="no-such-month"),
        pytest.param(COMBINED.replace('"curl/8.5.0"', '"ua "with" raw quotes"') + ' "-"', id="raw-quotes"),
        pytest.param(COMBINED + " trailing", id="trailing-text"),
        pytest.param(COMBINED.replace("- -", '- a"b'), id="quote-in-user"),
        pytest.param(COMBINED + "\n" + COMBINED, id="two-lines-in-one"),
        pytest.param(COMBINED.replace(" 200 ", " 2000 "), id="four-digit-status"),
        pytest.param("", id="empty"),
        pytest.param("x" * 1_000_000, id="one-megabyte"),
        pytest.param(COMBINED[:60], id="truncated"),
    ],
)
def test_other_lines_are_rejected_never_guessed(line):
    assert parse_line(line) is None


def test_crlf_line_end_is_not_part_of_the_record():
    # The envelope layer strips `\r\n`; a bare `\r` inside a line is not a valid line end.
    assert parse_line(COMBINED + "\r") is None


def test_utc_instant_rejects_impossible_offsets():
    assert utc_instant("27/May/2020:08:23:31 +2400") is None
    assert utc_instant("27/May/2020:24:00:00 +0000") is None


# --- property tests: generated lines ---------------------------------------------------

_escape = st.one_of(
    st.sampled_from([r"\x22", r"\x5C", r"\x0A", r"\x16", r"\"", r"\\", r"\xEC\x95\x88"]),
    st.text(alphabet=st.characters(blacklist_characters='"\\\n\r', blacklist_categories=("Cs",)), max_size=8),
)
escaped = st.lists(_escape, max_size=8).map("".join)
nullable = st.one_of(st.just(None), escaped.filter(lambda s: s != "-"))
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.lists(st.integers(0, 0xFFFF).map(lambda n: f"{n:x}"), min_size=8, max_size=8).map(":".join)
instant = st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2090, 1, 1))
offset = st.integers(-14 * 60, 14 * 60).map(lambda m: m - m % 15)


@st.composite
def log_records(draw):
    local = draw(instant)
    minutes = draw(offset)
    sign = "-" if minutes < 0 else "+"
    time_local = local.strftime("%d/%b/%Y:%H:%M:%S ") + f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    method = draw(st.sampled_from(["GET", "POST", "M-SEARCH", "PROPFIND"]))
    uri = "/" + draw(escaped)
    request = draw(st.one_of(st.just(None), nullable, st.just(f"{method} {uri} HTTP/1.1")))
    return {
        "remote_addr": draw(st.one_of(ipv4, ipv6)),
        "remote_user": draw(st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_.@]{1,12}", fullmatch=True))),
        "time_local": time_local,
        "request": request,
        "status": draw(st.integers(100, 599)),
        "body_bytes_sent": draw(st.one_of(st.none(), st.integers(0, 2**40))),
        "http_referer": draw(nullable),
        "http_user_agent": draw(nullable),
        "http_x_forwarded_for": draw(nullable),
    }


@settings(max_examples=400, deadline=None)
@given(log_records(), st.booleans())
def test_generated_lines_round_trip(fields, main):
    # given a line written from arbitrary escaped field values
    if not main:
        fields["http_x_forwarded_for"] = None
    line = rebuild(fields, main=main)
    # when it is parsed
    record = parse_line(line)
    # then every field comes back as written and the line rebuilds byte for byte
    assert record is not None, line
    for key, value in fields.items():
        assert record[key] == value, key
    assert rebuild(record, main=main) == line


@settings(max_examples=300, deadline=None)
@given(log_records(), st.booleans())
def test_generated_lines_take_the_fast_path_with_the_same_result(fields, main):
    if not main:
        fields["http_x_forwarded_for"] = None
    line = rebuild(fields, main=main)
    fast, general = fast_path(line), line_to_json(line)
    assert general is not None
    assert fast is None or fast == general
    if "\\" not in line and line.isprintable():
        assert fast == general


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text):
    record = parse_line(text)
    assert record is None or scan(text) is not None
    fast = fast_path(text)
    assert fast is None or fast == line_to_json(text)


# --- the stack's main_timed format (nginx/templates/default.conf.template) --------------

RID = "0123456789abcdef0123456789abcdef"
TIMED = COMBINED + f' "-" rt=0.004 urt="0.003" rl=77 rid={RID} host="example.com"'


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(
            TIMED,
            {
                "request_time": 0.004,
                "upstream_response_time": 0.003,
                "request_length": 77,
                "request_id": RID,
                "host": "example.com",
                "http_x_forwarded_for": None,
            },
            id="timed",
        ),
        pytest.param(TIMED.replace('urt="0.003"', 'urt="-"'), {"upstream_response_time": None}, id="no-upstream"),
        pytest.param(
            TIMED.replace('urt="0.003"', 'urt="0.001, 0.250, 1.002"'),
            {"upstream_response_time": 1.253},
            id="upstream-retries-add-up",
        ),
        pytest.param(
            TIMED.replace('urt="0.003"', 'urt="0.010 : 0.020, 0.005"'),
            {"upstream_response_time": 0.035},
            id="internal-redirect-adds-up",
        ),
        pytest.param(
            TIMED.replace('urt="0.003"', 'urt="-, 0.020"'), {"upstream_response_time": 0.02}, id="unreached-upstream"
        ),
        pytest.param(TIMED.replace('urt="0.003"', 'urt="- : -"'), {"upstream_response_time": None}, id="none-reached"),
        pytest.param(
            TIMED.replace("rt=0.004", "rt=-").replace("rl=77", "rl=-").replace(f"rid={RID}", "rid=-"),
            {"request_time": None, "request_length": None, "request_id": None},
            id="dash-values",
        ),
        pytest.param(TIMED.replace("rt=0.004", "rt=3601.250"), {"request_time": 3601.25}, id="slow-request"),
        pytest.param(
            TIMED.replace('host="example.com"', r'host="a\x22b\x5C"'), {"host": r"a\x22b\x5C"}, id="host-escaped"
        ),
        pytest.param(TIMED.replace('host="example.com"', 'host="-"'), {"host": None}, id="host-dash"),
        pytest.param(
            TIMED.replace("203.0.113.9", "2001:db8::7"), {"remote_addr": "2001:db8::7", "request_id": RID}, id="ipv6"
        ),
        pytest.param(
            TIMED.replace(' "-" rt=', ' "203.0.113.1, 10.0.0.2" rt='),
            {"http_x_forwarded_for": "203.0.113.1, 10.0.0.2", "request_time": 0.004},
            id="with-xff",
        ),
        pytest.param(
            TIMED.replace(' "-" rt=', " rt="),
            {"http_x_forwarded_for": None, "request_id": RID},
            id="combined-plus-tail",
        ),
    ],
)
def test_timed_named_cases(line, expected):
    record = parse_line(line)
    assert record is not None, line
    for key, value in expected.items():
        assert record[key] == value, key
    _check_record(line, record)
    # the fluentd fast path reads the same, where it applies
    assert fast_path(line) in (None, line_to_json(line))
    if "\\" not in line:
        assert fast_path(line) == line_to_json(line)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(TIMED.replace("rt=0.004", "rt=.004"), id="time-without-whole-seconds"),
        pytest.param(TIMED.replace("rt=0.004", "rt=00.004"), id="leading-zero"),
        pytest.param(TIMED.replace('urt="0.003"', "urt=0.003"), id="unquoted-upstream"),
        pytest.param(TIMED.replace('urt="0.003"', 'urt="0.003,0.004"'), id="upstream-separator"),
        pytest.param(TIMED.replace('urt="0.003"', 'urt="fast"'), id="upstream-word"),
        pytest.param(TIMED.replace(f"rid={RID}", 'rid=a"b'), id="quote-in-id"),
        pytest.param(TIMED.replace(" rl=77", ""), id="field-missing"),
        pytest.param(TIMED + " extra=1", id="unknown-field"),
        pytest.param(TIMED.replace('host="example.com"', 'host="a"b"'), id="raw-quote-in-host"),
    ],
)
def test_timed_lines_out_of_form_are_rejected(line):
    assert parse_line(line) is None
    assert scan(line) is None  # the independent scanner agrees


def _seconds_text(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}"


seconds = st.integers(0, 10**7)
upstream_item = st.one_of(st.just("-"), seconds.map(_seconds_text))


@st.composite
def upstream_times(draw) -> str:
    items = draw(st.lists(upstream_item, min_size=1, max_size=4))
    text = items[0]
    for item in items[1:]:
        text += draw(st.sampled_from([", ", " : "])) + item
    return text


def expected_upstream(text: str) -> float | None:
    times = [Decimal(item) for item in text.replace(" : ", ", ").split(", ") if item != "-"]
    return None if not times else float(sum(times))


@settings(max_examples=400, deadline=None)
@given(
    log_records(),
    st.booleans(),
    st.one_of(st.just("-"), seconds.map(_seconds_text)),
    st.one_of(st.just("-"), upstream_times()),
    st.one_of(st.just("-"), st.integers(0, 2**40).map(str)),
    st.one_of(st.just("-"), st.from_regex(r"[0-9a-f]{32}", fullmatch=True)),
    st.one_of(st.just("-"), escaped.filter(lambda s: s != "-")),
)
def test_generated_timed_lines_parse_fully_and_typed(fields, main, rt, urt, rl, rid, host):
    # given a main_timed line written from arbitrary values nginx can log (escapes, `-`, IPv6)
    if not main:
        fields["http_x_forwarded_for"] = None
    line = rebuild(fields, main=main) + f' rt={rt} urt="{urt}" rl={rl} rid={rid} host="{host}"'
    # when it is parsed, on the general path and on fluentd's fast path
    record = parse_line(line)
    # then every field comes back typed: times as seconds, the id and host as text
    assert record is not None, line
    for key, value in fields.items():
        assert record[key] == value, key
    assert record["request_time"] == (None if rt == "-" else float(rt))
    assert record["upstream_response_time"] == expected_upstream(urt)
    assert record["request_length"] == (None if rl == "-" else int(rl))
    assert record["request_id"] == (None if rid == "-" else rid)
    assert record["host"] == (None if host == "-" else host)
    assert scan(line) is not None
    assert fast_path(line) in (None, line_to_json(line))
