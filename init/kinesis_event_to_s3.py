"""Lambda `KinesisAccessLogToS3`: nginx access-log lines from Kinesis to S3 as JSON Lines.

Each Kinesis record carries fluentd's `{"message": "<line>"}\\n`, a raw line (or several),
or a KPL aggregated record holding either. Every accepted nginx `combined`/`main` line
(and the stack's `main_timed`: `main` plus request time, upstream time, request length,
request id and host, docs/request-timing.md) becomes one typed JSON object in
`YYYY/MM/DD/HH/` (the request's own UTC hour); every other line, and every record that
cannot be decoded, is kept under `errors/` (hour of arrival) with its bytes in base64, in the spirit of
Firehose's `processing-failed`.

A record `{"pipeline_drain": "<id>"}` is a drain marker (`pipeline_cli.py drain`): it
becomes no line; once every record before it on its shard is in S3, the function writes
`_pipeline/drain/<id>/<shardId>.json`, which the drain waits for.

Delivery is at least once, so object keys are derived from the batch alone (arrival
time, shard and sequence number of the object's first record): a re-delivered batch
rewrites the same keys with the same bytes, and two different batches never share one.

It is deployed with bucket_layout.py (standard library + the runtime's boto3): no endpoint
logic here, boto3 reads `AWS_ENDPOINT_URL`, which LocalStack injects into the function.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from json.decoder import scanstring
from json.encoder import encode_basestring
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from bucket_layout import ERROR_PREFIX, RECORD_NAME, drain_ack_key  # beside this file, in the same package

BUCKET_NAME = os.environ.get("BUCKET_NAME", "nginx-accesslog")
COMPRESSION = os.environ.get("COMPRESSION", "").strip().lower()

s3 = boto3.client("s3")  # created once per execution environment, reused by every call

# --- parsing: pure functions ---------------------------------------------------------


# Seconds as nginx writes them (`%T.%03M`: `0.004`), each a valid JSON number as it stands.
_SECONDS = r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?"
# $upstream_response_time: `-` (no upstream), or one time per upstream tried, `, ` between
# servers of one group and ` : ` between groups (an internal redirect); a server not
# reached may read `-` inside the list.
_UPSTREAM = rf"(?:{_SECONDS}|-)(?:(?:, | : )(?:{_SECONDS}|-))*"


def _line_pattern(content: str, quote: str = '"', timed: bool = False) -> str:
    """nginx's `combined` format, plus `main`'s optional `"$http_x_forwarded_for"`; `timed`:
    then the tail of the stack's `main_timed` format (nginx/templates/default.conf.template):
    ` rt=$request_time urt="$upstream_response_time" rl=$request_length rid=$request_id host="$host"`.

    `content` is what may stand between the quotes of a field, `quote` what a quote is.
    `$request` is split into method, URI and protocol when it is `METHOD URI HTTP/x[.y]`
    (the URI may hold spaces: the protocol is the last word); else those groups are None.
    """
    quoted = f"{quote}({content}){quote}"
    request = rf"{quote}((?:([A-Z_-]+) (?=\S)({content}) (HTTP/[0-9]+(?:\.[0-9]+)?))|{content}){quote}"
    return (
        r'([0-9A-Fa-f.:]+|unix:) - ([^\s"]+) '  # $remote_addr - $remote_user
        r"\[([0-9]{2}/[A-Z][a-z]{2}/[0-9]{4}:[0-9]{2}:[0-5][0-9]:[0-5][0-9] [+-][0-9]{4})\] "  # [$time_local]
        + request  # "$request"
        + r" ([0-9]{3}) (0|[1-9][0-9]*|-) "  # $status $body_bytes_sent
        + quoted  # "$http_referer"
        + " "
        + quoted  # "$http_user_agent"
        + f"(?: {quoted})?"  # "$http_x_forwarded_for"
        + (
            f" rt=({_SECONDS}|-) urt={quote}({_UPSTREAM}){quote} rl=(0|[1-9][0-9]*|-)"
            + rf' rid=([^\s"\\]+) host={quoted}'  # the main_timed tail
            if timed
            else ""
        )
    )


# A field as nginx (`\xHH`) or Apache (`\"`, `\\`) escapes it: no bare quote inside.
_ESCAPED = r'[^"\\]*(?:\\.[^"\\]*)*'
LINE_RE = re.compile(_line_pattern(_ESCAPED), re.DOTALL)
# The same for a line without backslashes, where it means `[^"]*`: three times faster in `re`.
_PLAIN_LINE_RE = re.compile(_line_pattern(r'[^"]*'), re.DOTALL)
# Each again with the main_timed tail, tried first on lines that hold ` rt=` (a separate
# pattern keeps combined/main lines as fast as before: no optional tail to try).
_TIMED_MARK = " rt="
_TIMED_LINE_RE = re.compile(_line_pattern(_ESCAPED, timed=True), re.DOTALL)
_PLAIN_TIMED_RE = re.compile(_line_pattern(r'[^"]*', timed=True), re.DOTALL)
# The same again, read straight from fluentd's JSON `{"message":"<line>"}\n` of such a line,
# where each of the line's quotes is `\"`: the fields come out as valid JSON already.
_FLUENTD_HEAD, _FLUENTD_TAIL = '{"message":"', '"}\n'
_FLUENTD_PLAIN_RE = re.compile(
    re.escape(_FLUENTD_HEAD) + _line_pattern(r'[^"]*', r'\\"') + re.escape(_FLUENTD_TAIL), re.DOTALL
)
_FLUENTD_TIMED_RE = re.compile(
    re.escape(_FLUENTD_HEAD) + _line_pattern(r'[^"]*', r'\\"', timed=True) + re.escape(_FLUENTD_TAIL), re.DOTALL
)


def _fullmatch(text: str, main: re.Pattern[str], timed: re.Pattern[str]) -> re.Match[str] | None:
    """The line by the main_timed pattern when it may be one, else by combined/main's."""
    if _TIMED_MARK in text:
        match = timed.fullmatch(text)
        if match is not None:
            return match
    return main.fullmatch(text)


_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}

# Every record's keys; a main_timed line's record also has TIMING_FIELDS (the tables read
# them as null for the others).
MAIN_FIELDS = (
    "remote_addr",
    "remote_user",
    "time_local",
    "timestamp",
    "request",
    "request_method",
    "request_uri",
    "server_protocol",
    "status",
    "body_bytes_sent",
    "http_referer",
    "http_user_agent",
    "http_x_forwarded_for",
)
TIMING_FIELDS = ("request_time", "upstream_response_time", "request_length", "request_id", "host")
FIELDS = MAIN_FIELDS + TIMING_FIELDS


def _utc_hour_start(key: str) -> datetime | None:
    """`27/May/2020:10 +0330` (a local hour and offset) -> when it starts, in UTC; None
    for no such hour (31/Feb, hour 25, an offset of a day or more)."""
    month = _MONTHS.get(key[3:6])
    if month is None:
        return None
    sign = -1 if key[15] == "-" else 1
    offset = timedelta(hours=int(key[16:18]), minutes=int(key[18:20]))
    try:
        local = datetime(int(key[7:11]), month, int(key[0:2]), int(key[12:14]), tzinfo=timezone(sign * offset))
    except ValueError:
        return None
    return local.astimezone(UTC)


# Per local hour and offset: the UTC minute at which that local hour starts, and the UTC
# hour (ISO prefix, S3 prefix) of its first and of its next hour.
_Hour = tuple[int, tuple[str, str], tuple[str, str]]
_hours: dict[str, _Hour | None] = {}


def _utc_hour(key: str) -> _Hour | None:
    """For `27/May/2020:10 +0330`: (30, (`2020-05-27T06`, `2020/05/27/06`), (`...T07`, ...)).

    Cached: it is the same for every line of that hour. None when no such hour exists.
    """
    if len(_hours) >= 4096:
        _hours.clear()
    start = _utc_hour_start(key)
    if start is None:
        hour = None
    else:
        after = start + timedelta(hours=1)
        hour = (
            start.minute,
            (start.strftime("%Y-%m-%dT%H"), start.strftime("%Y/%m/%d/%H")),
            (after.strftime("%Y-%m-%dT%H"), after.strftime("%Y/%m/%d/%H")),
        )
    _hours[key] = hour
    return hour


def utc_instant(time_local: str) -> tuple[str, str] | None:
    """`27/May/2020:10:23:31 +0200` -> (`2020-05-27T08:23:31Z`, `2020/05/27/08`), or None.

    Only the local hour is converted (once per hour and offset); minute and second are
    added to it. Minutes and seconds above 59 never get here: the line pattern admits
    00-59 only.
    """
    key = time_local[:14] + time_local[20:]
    hour = _hours[key] if key in _hours else _utc_hour(key)
    if hour is None:
        return None
    if hour[0] == 0:  # an offset of whole hours: minute and second carry over as written
        return f"{hour[1][0]}{time_local[14:20]}Z", hour[1][1]
    minute = hour[0] + int(time_local[15:17])
    iso, path = hour[1] if minute < 60 else hour[2]
    return f"{iso}:{minute % 60:02d}:{time_local[18:20]}Z", path


def line_to_json(line: str) -> tuple[str, str] | None:
    """One nginx `combined`/`main` line -> (hour prefix, its record as a JSON object); None
    for any other line. Strings need JSON escaping only when the line holds a backslash or
    a control character; otherwise quoting them is enough.
    """
    plain = "\\" not in line and line.isprintable()
    match = _fullmatch(line, _PLAIN_LINE_RE, _PLAIN_TIMED_RE) if plain else _fullmatch(line, LINE_RE, _TIMED_LINE_RE)
    return None if match is None else _record_json(match.groups(), _quote if plain else encode_basestring)


def _record_json(groups: tuple[str | None, ...], quote: Callable[[str], str]) -> tuple[str, str] | None:
    """(hour prefix, JSON object) from a line pattern's groups: keys in schema order, UTF-8
    kept readable, written straight from the strings (the hot path: no dict, no dumps)."""
    addr, user, time_local, request, method, uri, protocol, status, body, referer, agent, forwarded = groups[:12]
    instant = utc_instant(time_local)
    if instant is None:
        return None
    if method is None:
        request_parts = '"request_method":null,"request_uri":null,"server_protocol":null'
    else:
        request_parts = f'"request_method":"{method}","request_uri":{quote(uri)},"server_protocol":"{protocol}"'
    if len(groups) == 12:  # combined/main: the record as it always was, without the timing keys
        tail = "}"
    else:  # times in seconds (JSON numbers as logged), `-` as null
        request_time, upstream, length, request_id, host = groups[12:]
        if not upstream.replace(".", "").isdigit():  # type: ignore[union-attr]
            upstream = upstream_seconds(upstream)  # type: ignore[arg-type]  # `-`, or a list
        tail = (
            f',"request_time":{"null" if request_time == "-" else request_time},'
            f'"upstream_response_time":{upstream},'
            f'"request_length":{"null" if length == "-" else length},'
            f'"request_id":{"null" if request_id == "-" else quote(request_id)},'  # type: ignore[arg-type]
            f'"host":{"null" if host == "-" else quote(host)}}}'  # type: ignore[arg-type]
        )
    return instant[1], (
        f'{{"remote_addr":"{addr}",'
        f'"remote_user":{"null" if user == "-" else quote(user)},'
        f'"time_local":"{time_local}",'
        f'"timestamp":"{instant[0]}",'
        f'"request":{"null" if request == "-" else quote(request)},'
        f"{request_parts},"
        f'"status":{int(status)},'
        f'"body_bytes_sent":{"null" if body == "-" else body},'
        f'"http_referer":{"null" if referer == "-" else quote(referer)},'
        f'"http_user_agent":{"null" if agent == "-" else quote(agent)},'
        f'"http_x_forwarded_for":{"null" if forwarded is None or forwarded == "-" else quote(forwarded)}'
        f"{tail}"
    )


def upstream_seconds(value: str) -> str:
    """$upstream_response_time as one JSON number: the seconds spent on every upstream
    tried (retries `, ` and internal redirects ` : ` add up), `null` when none was reached."""
    if value == "-":
        return "null"
    if "," not in value and ":" not in value:
        return value  # one upstream: already a JSON number
    times = [Decimal(part) for part in re.split(r", | : ", value) if part != "-"]
    return "null" if not times else str(sum(times, Decimal(0)))


_quote = '"{}"'.format


def parse_line(line: str) -> dict[str, Any] | None:
    """One nginx `combined` or `main` line -> its record (a dict); None for any other line."""
    parsed = line_to_json(line)
    return None if parsed is None else json.loads(parsed[1])


# --- envelopes: Kinesis data -> lines ------------------------------------------------

KPL_MAGIC = b"\xf3\x89\x9a\xc2"


class ProtobufError(ValueError):
    """The bytes are not the protobuf message the KPL format promises."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ProtobufError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _protobuf_fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs of one message: varints as int, length-delimited as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _varint(buf, pos)
            yield number, value
        elif wire_type == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ProtobufError("field runs past the end")
            yield number, buf[pos : pos + length]
            pos += length
        elif wire_type in (1, 5):  # fixed64 / fixed32: not in the KPL schema, skipped
            pos += 8 if wire_type == 1 else 4
        else:
            raise ProtobufError(f"unsupported wire type {wire_type}")
    if pos != len(buf):
        raise ProtobufError("field runs past the end")


def kpl_user_records(data: bytes) -> list[bytes] | None:
    """The inner records' data of a KPL aggregated record; None when `data` is not one.

    Format: magic, protobuf `AggregatedRecord` (records = field 3, Record.data = field 3),
    then the MD5 of the protobuf bytes. A bad checksum means "not aggregated", as in the KCL.
    """
    if len(data) < len(KPL_MAGIC) + 16 or not data.startswith(KPL_MAGIC):
        return None
    message, digest = data[len(KPL_MAGIC) : -16], data[-16:]
    if hashlib.md5(message, usedforsecurity=False).digest() != digest:
        return None
    inner = []
    for number, value in _protobuf_fields(message):
        if number == 3 and isinstance(value, bytes):
            payload = b""
            for sub_number, sub_value in _protobuf_fields(value):
                if sub_number == 3 and isinstance(sub_value, bytes):
                    payload = sub_value
            inner.append(payload)
    return inner


@dataclass(frozen=True)
class Problem:
    """Why some bytes produced no record."""

    code: str
    message: str
    raw: bytes


@dataclass(frozen=True)
class DrainMarker:
    """A record put by `pipeline_cli.py drain`: acknowledge it once all before it landed."""

    drain_id: str


DRAIN_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DRAIN_KEY = b'"pipeline_drain"'


def drain_marker(payload: bytes) -> DrainMarker | Problem | None:
    """`{"pipeline_drain": "<id>"}` -> its marker; a Problem for such an object with a bad id
    (kept in errors/ like any undecodable record); None for anything else. An object with a
    "message" is a log line (fluentd sends nothing else), never a marker."""
    if _DRAIN_KEY not in payload or not payload.lstrip().startswith(b"{"):
        return None
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(document, dict) or "pipeline_drain" not in document or "message" in document:
        return None
    drain_id = document["pipeline_drain"]
    if not isinstance(drain_id, str) or DRAIN_ID_RE.fullmatch(drain_id) is None:
        return Problem("InvalidDrainMarker", "pipeline_drain is not an id of 1-64 letters, digits, _ or -", payload)
    return DrainMarker(drain_id)


def payload_lines(payload: bytes) -> Iterator[str | Problem]:
    """Log lines of one user record: fluentd JSON (`{"message": ...}`) or raw lines."""
    if not payload.strip():
        yield Problem("EmptyRecord", "the record holds no data", payload)
        return
    for raw in payload.split(b"\n"):
        raw = raw.removesuffix(b"\r")
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Problem("InvalidUtf8", f"not UTF-8: {exc.reason} at byte {exc.start}", raw)
            continue
        if not text.startswith("{"):
            yield text
            continue
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:
            yield Problem("InvalidJson", f"not valid JSON: {exc}"[:200], raw)
            continue
        message = document.get("message") if isinstance(document, dict) else None
        if not isinstance(message, str):
            yield Problem("MissingMessage", 'JSON without a string "message"', raw)
            continue
        if not _encodable(message):
            yield Problem("InvalidUtf8", "the message holds a lone surrogate (\\uD800-\\uDFFF)", raw)
            continue
        lines = [line.removesuffix("\r") for line in message.split("\n")]
        if not any(lines):
            yield Problem("EmptyRecord", "the message is empty", message.encode("utf-8"))
        yield from (line for line in lines if line)


def _fluentd_line(payload: bytes) -> str | None:
    """fluentd's exact `{"message":"<line>"}\n`: the line, by one C-level string scan."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not (text.startswith(_FLUENTD_HEAD) and text.endswith(_FLUENTD_TAIL)):
        return None
    try:
        line, end = scanstring(text, len(_FLUENTD_HEAD), True)
    except ValueError:
        return None
    if end != len(text) - len(_FLUENTD_TAIL) + 1 or not line or "\n" in line or not _encodable(line):
        return None
    return line


def _encodable(text: str) -> bool:
    """False when JSON escapes smuggled in a lone surrogate, which UTF-8 cannot hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def record_lines(data: str) -> list[str | Problem | DrainMarker]:
    """Log lines of one Kinesis record's base64 `data`, through any KPL aggregation; or the
    record's drain marker. A marker inside an aggregated record is not one (it becomes an
    error record): the acknowledgement speaks of the records before the marker's own
    sequence number, which a user record inside an aggregate does not have."""
    try:
        decoded = binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        return [Problem("InvalidBase64", "record data is not base64", data.encode("utf-8", "replace"))]
    try:
        inner = kpl_user_records(decoded)
    except ProtobufError as exc:
        return [Problem("InvalidAggregatedRecord", f"KPL record: {exc}", decoded)]
    if inner is None:
        line = _fluentd_line(decoded)
        if line is not None:
            return [line]
        marker = drain_marker(decoded)
        return [marker] if marker is not None else list(payload_lines(decoded))
    lines: list[str | Problem | DrainMarker] = []
    for payload in inner:
        line = _fluentd_line(payload)
        if line is not None:
            lines.append(line)
        else:
            lines.extend(payload_lines(payload))
    return lines


def fluentd_record_json(data: str) -> tuple[str, str] | None:
    """The hot path: a record holding fluentd's JSON of one plain combined/main line
    (no backslash or control character in the line, so each backslash in the JSON
    escapes one of its quotes) -> (hour prefix, its record as JSON), read without
    decoding the line first. None for any other record: the general path takes it.
    """
    try:
        text = binascii.a2b_base64(data, strict_mode=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    if text.count("\\") != text.count('\\"'):
        return None
    match = _fullmatch(text, _FLUENTD_PLAIN_RE, _FLUENTD_TIMED_RE)
    return None if match is None else _record_json(match.groups(), _quote)


# --- batching: records -> objects ----------------------------------------------------


@dataclass
class S3Object:
    """One JSON Lines object; each line with the sequence number of the record it came from."""

    key: str
    lines: list[str] = field(default_factory=list)
    sequence_numbers: list[str] = field(default_factory=list)

    def first_sequence_number(self) -> str:
        """The lowest sequence number in the object: where a retry has to start."""
        return min(self.sequence_numbers, key=int)

    def holds_from(self, sequence_number: str) -> bool:
        return any(int(seq) >= int(sequence_number) for seq in self.sequence_numbers)

    def before(self, sequence_number: str) -> S3Object:
        """The same object without the lines of records at or after `sequence_number`."""
        kept = [
            (line, seq)
            for line, seq in zip(self.lines, self.sequence_numbers, strict=True)
            if int(seq) < int(sequence_number)
        ]
        return S3Object(self.key, [line for line, _ in kept], [seq for _, seq in kept])

    def body(self, compression: str) -> bytes:
        data = ("\n".join(self.lines) + "\n").encode("utf-8")
        return gzip.compress(data, mtime=0) if compression == "gzip" else data


def _arrival(kinesis: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(float(kinesis["approximateArrivalTimestamp"]), UTC)


def object_key(prefix_hour: str, arrival: datetime, shard_id: str, sequence_number: str, compression: str) -> str:
    """Deterministic key of the object whose first record is (shard, sequence number).

    The first record's arrival time is part of the name, so an emulator that restarts its
    sequence numbers (or a re-created stream) never reuses the key of an earlier object.
    """
    stamp = arrival.strftime("%Y%m%dT%H%M%S") + f"{arrival.microsecond // 1000:03d}Z"
    extension = ".json.gz" if compression == "gzip" else ".json"
    return f"{prefix_hour}/{RECORD_NAME}_{stamp}_{shard_id}_{sequence_number}{extension}"


def _shard_id(event_record: dict[str, Any]) -> str:
    event_id = event_record.get("eventID", "")
    return event_id.rsplit(":", 1)[0] if ":" in event_id else "shardId-unknown"


def error_line(problem: Problem, shard_id: str, kinesis: dict[str, Any]) -> str:
    return json.dumps(
        {
            "errorCode": problem.code,
            "errorMessage": problem.message,
            "rawData": base64.b64encode(problem.raw).decode("ascii"),
            "shardId": shard_id,
            "sequenceNumber": kinesis["sequenceNumber"],
            "partitionKey": kinesis.get("partitionKey"),
            "approximateArrivalTimestamp": kinesis["approximateArrivalTimestamp"],
        },
        ensure_ascii=False,
    )


@dataclass
class Batch:
    """What one invocation turns into: objects by hour, and counts for the log line.

    A drain marker ends the batch: `ack` acknowledges it, and the records after it
    (from `resume_from`) are left to the next invocation. So no object of this batch holds
    a record after the marker, and a failed acknowledgement is retried from the marker
    without rewriting anything.
    """

    compression: str = ""
    objects: dict[str, S3Object] = field(default_factory=dict)
    records: int = 0
    lines: int = 0
    parsed: int = 0
    errors: int = 0
    ack: S3Object | None = None
    resume_from: str | None = None

    def slot(self, prefix_hour: str, event_record: dict[str, Any]) -> S3Object:
        """The object of this hour, named after the first record that goes into it."""
        slot = self.objects.get(prefix_hour)
        if slot is None:
            kinesis = event_record["kinesis"]
            key = object_key(
                prefix_hour, _arrival(kinesis), _shard_id(event_record), kinesis["sequenceNumber"], self.compression
            )
            slot = self.objects[prefix_hour] = S3Object(key)
        return slot


def drain_ack(marker: DrainMarker, event_record: dict[str, Any]) -> S3Object:
    """The acknowledgement object of a marker: one JSON line, keyed by drain id and shard."""
    shard_id = _shard_id(event_record)
    sequence_number = event_record["kinesis"]["sequenceNumber"]
    line = json.dumps({"drain": marker.drain_id, "shardId": shard_id, "sequenceNumber": sequence_number})
    return S3Object(drain_ack_key(marker.drain_id, shard_id), [line], [sequence_number])


def record_results(data: str) -> Iterator[tuple[str, str] | Problem | DrainMarker]:
    """(hour prefix, record JSON) for each parsed line of one record, a Problem for the rest,
    or the record's drain marker."""
    fast = fluentd_record_json(data)
    if fast is not None:
        yield fast
        return
    for item in record_lines(data):
        if isinstance(item, str):
            parsed = line_to_json(item)
            yield parsed or Problem("UnparsableLine", "not an nginx combined or main line", item.encode("utf-8"))
        else:
            yield item


def build_batch(event_records: list[dict[str, Any]], compression: str = "") -> Batch:
    """Parse the records of an event, up to the first drain marker, into per-hour record
    objects, error objects and the marker's acknowledgement."""
    batch = Batch(compression, records=len(event_records))
    objects = batch.objects
    lines = parsed = 0
    for index, event_record in enumerate(event_records):
        kinesis = event_record["kinesis"]
        sequence_number = kinesis["sequenceNumber"]
        marker = None
        for item in record_results(kinesis.get("data", "")):
            if item.__class__ is tuple:
                lines += 1
                parsed += 1
                slot = objects.get(item[0]) or batch.slot(item[0], event_record)
                slot.lines.append(item[1])
            elif item.__class__ is DrainMarker:
                marker = item  # a marker is its record's only item
                break
            else:
                lines += item.code == "UnparsableLine"
                batch.errors += 1
                slot = batch.slot(ERROR_PREFIX + _arrival(kinesis).strftime("%Y/%m/%d/%H"), event_record)
                slot.lines.append(error_line(item, _shard_id(event_record), kinesis))
            slot.sequence_numbers.append(sequence_number)
        if marker is not None:  # acknowledge it; the records after it go to the next invocation
            batch.ack = drain_ack(marker, event_record)
            batch.records = index + 1
            if index + 1 < len(event_records):
                batch.resume_from = event_records[index + 1]["kinesis"]["sequenceNumber"]
            break
    batch.lines, batch.parsed = lines, parsed
    return batch


# --- I/O at the edge -----------------------------------------------------------------


def put_object(key: str, body: bytes, compression: str) -> None:
    extra = {"ContentEncoding": "gzip"} if compression == "gzip" else {}
    s3.put_object(Bucket=BUCKET_NAME, Key=key, Body=body, ContentType="application/x-ndjson", **extra)


def _try_put(s3_object: S3Object, compression: str, failures: list[str]) -> bool:
    """Put one object; on failure note the error's code (never the data) and say False."""
    try:
        put_object(s3_object.key, s3_object.body(compression), compression)
    except (BotoCoreError, ClientError) as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
        failures.append(code)
        return False
    return True


def write_batch(batch: Batch, compression: str, failures: list[str]) -> str | None:
    """Put every object, then the drain acknowledgement; return the sequence number the
    mapping must retry (or, after a marker, resume) from, if any.

    The acknowledgement is put only when every object landed, so it exists only once every
    record before the marker is in S3; it is the last put, so nothing after it can undo
    that. Should it fail, the retry starts at the marker (no object holds a later record).
    """
    retry_from = write_objects(batch, compression, failures)
    if retry_from is not None or batch.ack is None:
        return retry_from
    if not _try_put(batch.ack, "", failures):
        return batch.ack.first_sequence_number()
    return batch.resume_from


def write_objects(batch: Batch, compression: str, failures: list[str]) -> str | None:
    """Put every record and error object; return the sequence number to retry from, if any.

    The retry re-reads the shard from that number, so an object that landed must not hold
    lines of records at or after it (they would land twice): such an object is rewritten,
    under its own key, without them. Should that rewrite fail, the retry point moves down
    to the object's first record, whose key the retry then writes again, and we check anew.
    """
    landed = []
    retry_from: str | None = None
    for s3_object in batch.objects.values():
        if _try_put(s3_object, compression, failures):
            landed.append(s3_object)
        elif retry_from is None or int(s3_object.first_sequence_number()) < int(retry_from):
            retry_from = s3_object.first_sequence_number()
    while retry_from is not None:
        boundary = int(retry_from)
        spill = next(
            (o for o in landed if int(o.first_sequence_number()) < boundary and o.holds_from(retry_from)), None
        )
        if spill is None:
            return retry_from
        landed.remove(spill)
        trimmed = spill.before(retry_from)
        if _try_put(trimmed, compression, failures):
            landed.append(trimmed)
        else:
            retry_from = spill.first_sequence_number()
    return None


def handler(event: dict[str, Any], context: Any = None) -> dict[str, list[dict[str, str]]]:
    """Parse the batch, write one object per hour; report where a retry must start."""
    started = time.perf_counter()
    batch = build_batch(event.get("Records", []), COMPRESSION)
    failures: list[str] = []
    retry_from = write_batch(batch, COMPRESSION, failures)
    log(
        "batch processed",
        records=batch.records,
        lines=batch.lines,
        parsed=batch.parsed,
        errors=batch.errors,
        objects=len(batch.objects),
        drainMarkers=0 if batch.ack is None else 1,
        putFailures=failures,
        retryFrom=retry_from,
        milliseconds=round((time.perf_counter() - started) * 1000, 1),
    )
    return {"batchItemFailures": [] if retry_from is None else [{"itemIdentifier": retry_from}]}


def log(message: str, **fields: Any) -> None:
    """One JSON line to stdout, which Lambda sends to CloudWatch Logs. Never log contents."""
    print(json.dumps({"level": "INFO", "message": message, **fields}), flush=True)
