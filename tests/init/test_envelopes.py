"""Kinesis record data -> log lines: fluentd JSON, raw lines, KPL aggregation, garbage."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kinesis_event_to_s3 import Problem, kpl_user_records, record_lines
from support.events import captured_fluentd_records, captured_source_lines, fluentd_message, kpl_aggregate

LINE = '203.0.113.9 - - [27/May/2020:08:23:31 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/8.5.0"'


def lines_of(data: bytes) -> list[str | Problem]:
    return list(record_lines(base64.b64encode(data).decode()))


def test_captured_fluentd_records_yield_the_source_lines():
    # given the bytes real fluentd + fluent-plugin-kinesis wrote, one record per line
    captured = [r for r in captured_fluentd_records() if "aggregated" not in r["producer"]]
    source = captured_source_lines()
    assert len(captured) == len(source)
    # when each record is decoded, then it yields exactly its source line
    for record, line in zip(captured, source, strict=True):
        assert list(record_lines(record["data"])) == [line]


def test_our_fluentd_envelope_matches_the_captured_bytes():
    # The stand-in shipper and the tests build records with fluentd_message(): same bytes as fluentd.
    captured = [r for r in captured_fluentd_records() if "aggregated" not in r["producer"]]
    for record, line in zip(captured, captured_source_lines(), strict=True):
        assert fluentd_message(line) == base64.b64decode(record["data"])


def test_captured_kpl_aggregated_record_yields_every_source_line():
    (aggregated,) = [r for r in captured_fluentd_records() if "aggregated" in r["producer"]]
    assert list(record_lines(aggregated["data"])) == captured_source_lines()


def test_kpl_record_built_here_has_the_captured_layout():
    (aggregated,) = [r for r in captured_fluentd_records() if "aggregated" in r["producer"]]
    source = captured_source_lines()
    rebuilt = kpl_aggregate([fluentd_message(line) for line in source], aggregated["partitionKey"])
    assert rebuilt == base64.b64decode(aggregated["data"])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(LINE.encode(), id="raw"),
        pytest.param(LINE.encode() + b"\n", id="raw-lf"),
        pytest.param(LINE.encode() + b"\r\n", id="raw-crlf"),
        pytest.param(fluentd_message(LINE), id="fluentd-json"),
        pytest.param(fluentd_message(LINE).replace(b"\n", b"\r\n"), id="fluentd-json-crlf"),
        pytest.param(kpl_aggregate([LINE.encode()]), id="kpl-raw"),
        pytest.param(kpl_aggregate([fluentd_message(LINE)]), id="kpl-fluentd"),
    ],
)
def test_every_envelope_yields_the_line(data):
    assert lines_of(data) == [LINE]


def test_several_lines_in_one_record_in_order():
    other = LINE.replace("GET", "POST")
    assert lines_of(f"{LINE}\n{other}\r\n\n{LINE}".encode()) == [LINE, other, LINE]
    assert lines_of(fluentd_message(LINE) + fluentd_message(other)) == [LINE, other]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(b"", "EmptyRecord", id="empty"),
        pytest.param(b"\n\r\n ", "EmptyRecord", id="blank"),
        pytest.param(b'{"message": "unterminated', "InvalidJson", id="invalid-json"),
        pytest.param(b'{"log": "x"}', "MissingMessage", id="json-without-message"),
        pytest.param(b'{"message": 42}', "MissingMessage", id="json-message-not-string"),
        pytest.param(b"caf\xe9 " + LINE.encode(), "InvalidUtf8", id="invalid-utf8"),
        pytest.param(b'{"message":"\\ud800"}', "InvalidUtf8", id="json-lone-surrogate"),
        pytest.param(fluentd_message(LINE).replace(b"curl", b"\\udc80"), "InvalidUtf8", id="line-lone-surrogate"),
        pytest.param(b"\xf3\x89\x9a\xc2" + b"\xff" * 40, None, id="kpl-magic-bad-checksum"),
    ],
)
def test_bad_data_becomes_a_problem_with_its_bytes(data, code):
    items = lines_of(data)
    assert len(items) == 1
    (item,) = items
    if code is None:  # not a valid aggregate: handled as plain data, which is not UTF-8
        assert isinstance(item, Problem) and item.code == "InvalidUtf8"
        return
    assert isinstance(item, Problem) and item.code == code
    assert item.raw == data.removesuffix(b"\n") or code == "EmptyRecord"


def test_only_the_bad_line_of_a_record_is_set_aside():
    items = lines_of(LINE.encode() + b"\n\xff\xfe\n" + LINE.encode())
    assert items[0] == LINE and items[2] == LINE
    assert isinstance(items[1], Problem) and items[1].raw == b"\xff\xfe"


def test_invalid_base64_is_a_problem():
    (item,) = list(record_lines("not base64!"))
    assert isinstance(item, Problem) and item.code == "InvalidBase64"


def test_corrupt_kpl_protobuf_with_valid_checksum_is_a_problem():
    import hashlib

    message = b"\x1a\xff\xff\xff\x0f"  # field 3, length far past the end
    data = b"\xf3\x89\x9a\xc2" + message + hashlib.md5(message, usedforsecurity=False).digest()
    (item,) = lines_of(data)
    assert isinstance(item, Problem) and item.code == "InvalidAggregatedRecord"


def test_kpl_user_records_is_none_for_plain_data():
    assert kpl_user_records(LINE.encode()) is None


@settings(max_examples=500, deadline=None)
@given(
    st.binary(max_size=400),
    st.sampled_from(["raw", "json", "kpl", "kpl-json"]),
)
def test_arbitrary_bytes_in_any_envelope_never_raise(payload, envelope):
    if envelope == "json":
        data = b'{"message":"' + payload + b'"}\n'
    elif envelope == "kpl":
        data = kpl_aggregate([payload])
    elif envelope == "kpl-json":
        data = kpl_aggregate([b'{"message":"' + payload + b'"}'])
    else:
        data = payload
    for item in lines_of(data):
        assert isinstance(item, str | Problem)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec=None), max_size=200))
def test_any_text_as_ascii_json_never_raises(text):
    # json.dumps escapes everything, lone surrogates included, as \uXXXX
    data = json.dumps({"message": text}).encode() + b"\n"
    for item in lines_of(data):
        assert isinstance(item, str | Problem)
        if isinstance(item, str):
            item.encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=20, max_size=200))
def test_arbitrary_bytes_after_the_kpl_magic_never_raise(tail):
    for item in lines_of(b"\xf3\x89\x9a\xc2" + tail):
        assert isinstance(item, str | Problem)


def test_one_megabyte_line_is_set_aside_whole():
    line = "x" * 1_048_576
    items = lines_of(fluentd_message(line))
    assert items == [line]
