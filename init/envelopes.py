"""Kinesis record data -> log lines: fluentd's `{"message": ...}`, raw lines, KPL
aggregated records, drain markers; what cannot be decoded becomes a Problem. Standard
library only; part of the function's package.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from json.decoder import scanstring

from access_line import _FLUENTD_HEAD, _FLUENTD_TAIL

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
