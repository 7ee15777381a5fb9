"""Lambda `KinesisAccessLogToS3`: nginx access-log lines from Kinesis to S3 as JSON Lines.

Each Kinesis record carries fluentd's `{"message": "<line>"}\\n`, a raw line (or several),
or a KPL aggregated record holding either. Every accepted nginx `combined`/`main` line
becomes one typed JSON object in `YYYY/MM/DD/HH/` (the request's own UTC hour); every
other line, and every record that cannot be decoded, is kept under `errors/` (hour of
arrival) with its bytes in base64, in the spirit of Firehose's `processing-failed`.

Delivery is at least once, so object keys are derived from the batch alone (arrival
time, shard and sequence number of the object's first record): a re-delivered batch
rewrites the same keys with the same bytes, and two different batches never share one.

The file is deployed on its own (standard library + the runtime's boto3): no endpoint
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from json.decoder import scanstring
from json.encoder import encode_basestring
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

BUCKET_NAME = os.environ.get("BUCKET_NAME", "nginx-accesslog")
COMPRESSION = os.environ.get("COMPRESSION", "").strip().lower()
KEY_PREFIX = "nginx_access_log"
ERROR_PREFIX = "errors/"

s3 = boto3.client("s3")  # created once per execution environment, reused by every call

# --- parsing: pure functions ---------------------------------------------------------


def _line_pattern(quoted: str) -> re.Pattern[str]:
    """nginx's `combined` format, plus `main`'s optional `"$http_x_forwarded_for"`."""
    return re.compile(
        r"([0-9A-Fa-f.:]+|unix:) - (\S+) "  # $remote_addr - $remote_user
        r"\[([0-9]{2}/[A-Z][a-z]{2}/[0-9]{4}:[0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4})\] "  # [$time_local]
        + quoted  # "$request"
        + r" ([0-9]{3}) (0|[1-9][0-9]*|-) "  # $status $body_bytes_sent
        + quoted  # "$http_referer"
        + " "
        + quoted  # "$http_user_agent"
        + f"(?: {quoted})?",  # "$http_x_forwarded_for"
        re.DOTALL,
    )


# A quoted field as nginx (`\xHH`) or Apache (`\"`, `\\`) escapes it: no bare quote inside.
LINE_RE = _line_pattern(r'"([^"\\]*(?:\\.[^"\\]*)*)"')
# The same for a line without backslashes, where it means `[^"]*`: three times faster in `re`.
_PLAIN_LINE_RE = _line_pattern(r'"([^"]*)"')
_METHOD_RE = re.compile(r"[A-Z_-]+")
_PROTOCOL_RE = re.compile(r"HTTP/[0-9]+(?:\.[0-9]+)?")
_COMMON = {"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "HTTP/1.0", "HTTP/1.1", "HTTP/2.0", "HTTP/2"}
_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}

FIELDS = (
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


def _utc(time_local: str, with_seconds: bool) -> datetime | None:
    """The instant (or, without seconds, the start of the local hour) in UTC; None if none."""
    month = _MONTHS.get(time_local[3:6])
    if month is None:
        return None
    sign = -1 if time_local[21] == "-" else 1
    offset = timedelta(hours=int(time_local[22:24]), minutes=int(time_local[24:26]))
    minute, second = (int(time_local[15:17]), int(time_local[18:20])) if with_seconds else (0, 0)
    try:
        local = datetime(
            int(time_local[7:11]),
            month,
            int(time_local[0:2]),
            int(time_local[12:14]),
            minute,
            second,
            tzinfo=timezone(sign * offset),
        )
    except ValueError:  # 31/Feb, hour 25, an offset of a day or more
        return None
    return local.astimezone(UTC)


@lru_cache(maxsize=1024)
def _utc_hour(time_local: str) -> tuple[str, str] | None:
    """(`2020-05-27T08`, `2020/05/27/08`) for a time whose offset is whole hours."""
    utc = _utc(time_local, with_seconds=False)
    return None if utc is None else (utc.strftime("%Y-%m-%dT%H"), utc.strftime("%Y/%m/%d/%H"))


def _utc_instant_exact(time_local: str) -> tuple[str, str] | None:
    utc = _utc(time_local, with_seconds=True)
    return None if utc is None else (utc.strftime("%Y-%m-%dT%H:%M:%SZ"), utc.strftime("%Y/%m/%d/%H"))


_instants: dict[str, tuple[str, str] | None] = {}


def utc_instant(time_local: str) -> tuple[str, str] | None:
    """`27/May/2020:10:23:31 +0200` -> (`2020-05-27T08:23:31Z`, `2020/05/27/08`), or None.

    Cached per second (a busy server writes many lines a second). With a whole-hour
    offset, minute and second carry over unchanged, so a new second costs a string
    format; an offset such as `+0330` takes the exact path.
    """
    try:
        return _instants[time_local]
    except KeyError:
        pass
    minute, second = time_local[15:17], time_local[18:20]
    if minute > "59" or second > "59":
        instant = None
    elif time_local[24:26] == "00":
        hour = _utc_hour(time_local[0:15] + "00:00" + time_local[20:26])
        instant = None if hour is None else (f"{hour[0]}:{minute}:{second}Z", hour[1])
    else:
        instant = _utc_instant_exact(time_local)
    if len(_instants) >= 4096:
        _instants.clear()
    _instants[time_local] = instant
    return instant


def split_request(request: str) -> tuple[str, str, str] | None:
    """`METHOD URI HTTP/x[.y]` -> its parts (the URI may hold spaces); None for anything else."""
    method, _, rest = request.partition(" ")
    uri, _, protocol = rest.rpartition(" ")
    if not uri or uri[0].isspace():
        return None
    if method not in _COMMON and _METHOD_RE.fullmatch(method) is None:
        return None
    if protocol not in _COMMON and _PROTOCOL_RE.fullmatch(protocol) is None:
        return None
    return method, uri, protocol


def line_to_json(line: str) -> tuple[str, str] | None:
    """One nginx `combined`/`main` line -> (hour prefix, its record as a JSON object); None
    for any other line.

    The JSON text is written straight from the match, keys in schema order, UTF-8 kept
    readable: this is the hot path. Strings need JSON escaping only when the line holds a
    backslash or a control character; otherwise quoting them is enough.
    """
    plain = "\\" not in line and line.isprintable()
    match = (_PLAIN_LINE_RE if plain else LINE_RE).fullmatch(line)
    if match is None:
        return None
    addr, user, time_local, request, status, body, referer, agent, forwarded = match.groups()
    instant = utc_instant(time_local)
    if instant is None:
        return None
    quote = _quote if plain else encode_basestring
    parts = None if request == "-" else split_request(request)
    if parts is None:
        request_parts = '"request_method":null,"request_uri":null,"server_protocol":null'
    else:
        request_parts = f'"request_method":"{parts[0]}","request_uri":{quote(parts[1])},"server_protocol":"{parts[2]}"'
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
        f'"http_x_forwarded_for":{"null" if forwarded is None or forwarded == "-" else quote(forwarded)}}}'
    )


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
        lines = [line.removesuffix("\r") for line in message.split("\n")]
        if not any(lines):
            yield Problem("EmptyRecord", "the message is empty", message.encode("utf-8"))
        yield from (line for line in lines if line)


_FLUENTD_HEAD, _FLUENTD_TAIL = '{"message":"', '"}\n'


def _fluentd_line(payload: bytes) -> str | None:
    """Fast path for fluentd's exact `{"message":"<line>"}\n`: one C-level string scan."""
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
    if end != len(text) - len(_FLUENTD_TAIL) + 1 or not line or "\n" in line:
        return None
    return line


def record_lines(data: str) -> list[str | Problem]:
    """Log lines of one Kinesis record's base64 `data`, through any KPL aggregation."""
    try:
        decoded = binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        return [Problem("InvalidBase64", "record data is not base64", data.encode("utf-8", "replace"))]
    try:
        inner = kpl_user_records(decoded)
    except ProtobufError as exc:
        return [Problem("InvalidAggregatedRecord", f"KPL record: {exc}", decoded)]
    lines: list[str | Problem] = []
    for payload in inner if inner is not None else (decoded,):
        line = _fluentd_line(payload)
        if line is not None:
            lines.append(line)
        else:
            lines.extend(payload_lines(payload))
    return lines


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
    return f"{prefix_hour}/{KEY_PREFIX}_{stamp}_{shard_id}_{sequence_number}{extension}"


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
    """What one invocation turns into: objects by hour, and counts for the log line."""

    compression: str = ""
    objects: dict[str, S3Object] = field(default_factory=dict)
    records: int = 0
    lines: int = 0
    parsed: int = 0
    errors: int = 0

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


def build_batch(event_records: list[dict[str, Any]], compression: str = "") -> Batch:
    """Parse every record of an event into per-hour record objects and error objects."""
    batch = Batch(compression, records=len(event_records))
    objects = batch.objects
    for event_record in event_records:
        kinesis = event_record["kinesis"]
        sequence_number = kinesis["sequenceNumber"]
        for item in record_lines(kinesis.get("data", "")):
            if isinstance(item, str):
                batch.lines += 1
                parsed = line_to_json(item)
                if parsed is not None:
                    batch.parsed += 1
                    hour, text = parsed
                    slot = objects.get(hour) or batch.slot(hour, event_record)
                    slot.lines.append(text)
                    slot.sequence_numbers.append(sequence_number)
                    continue
                item = Problem("UnparsableLine", "not an nginx combined or main line", item.encode("utf-8"))
            batch.errors += 1
            slot = batch.slot(ERROR_PREFIX + _arrival(kinesis).strftime("%Y/%m/%d/%H"), event_record)
            slot.lines.append(error_line(item, _shard_id(event_record), kinesis))
            slot.sequence_numbers.append(sequence_number)
    return batch


# --- I/O at the edge -----------------------------------------------------------------


def put_object(key: str, body: bytes, compression: str) -> None:
    extra = {"ContentEncoding": "gzip"} if compression == "gzip" else {}
    s3.put_object(Bucket=BUCKET_NAME, Key=key, Body=body, ContentType="application/x-ndjson", **extra)


def _try_put(s3_object: S3Object, compression: str) -> bool:
    try:
        put_object(s3_object.key, s3_object.body(compression), compression)
    except (BotoCoreError, ClientError) as exc:
        log("put_object failed", key=s3_object.key, error=type(exc).__name__)
        return False
    return True


def write_batch(batch: Batch, compression: str) -> str | None:
    """Put every object; return the sequence number the mapping must retry from, if any.

    The retry re-reads the shard from that number, so an object that landed must not hold
    lines of records at or after it (they would land twice): such an object is rewritten,
    under its own key, without them. Should that rewrite fail, the retry point moves down
    to the object's first record, whose key the retry then writes again, and we check anew.
    """
    landed = []
    retry_from: str | None = None
    for s3_object in batch.objects.values():
        if _try_put(s3_object, compression):
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
        if _try_put(trimmed, compression):
            landed.append(trimmed)
        else:
            retry_from = spill.first_sequence_number()
    return None


def handler(event: dict[str, Any], context: Any = None) -> dict[str, list[dict[str, str]]]:
    """Parse the batch, write one object per hour; report where a retry must start."""
    started = time.perf_counter()
    batch = build_batch(event.get("Records", []), COMPRESSION)
    retry_from = write_batch(batch, COMPRESSION)
    log(
        "batch processed",
        records=batch.records,
        lines=batch.lines,
        parsed=batch.parsed,
        errors=batch.errors,
        objects=len(batch.objects),
        retryFrom=retry_from,
        milliseconds=round((time.perf_counter() - started) * 1000, 1),
    )
    return {"batchItemFailures": [] if retry_from is None else [{"itemIdentifier": retry_from}]}


def log(message: str, **fields: Any) -> None:
    """One JSON line to stdout, which Lambda sends to CloudWatch Logs. Never log contents."""
    print(json.dumps({"level": "INFO", "message": message, **fields}), flush=True)
