"""Kinesis events exactly as Lambda's event source mapping delivers them."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "data"
STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/nginx-accesslog-stream"


@dataclass
class KinesisRecord:
    """One record on a shard: what PutRecords stored and GetRecords returns."""

    data: bytes
    sequence_number: str
    arrival: float = 1_590_567_811.123  # 2020-05-27T08:23:31.123Z
    partition_key: str = "af790285b58aeb5b30877325eb18dc52"


def event_record(record: KinesisRecord, shard_id: str = "shardId-000000000000", region: str = "us-east-1") -> dict:
    """The Lambda event entry for one Kinesis record (AWS's documented shape)."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": record.partition_key,
            "sequenceNumber": record.sequence_number,
            "data": base64.b64encode(record.data).decode("ascii"),
            "approximateArrivalTimestamp": record.arrival,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{record.sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/kinesis-lambda-role",
        "awsRegion": region,
        "eventSourceARN": STREAM_ARN,
    }


def kinesis_event(records: list[KinesisRecord], shard_id: str = "shardId-000000000000") -> dict[str, Any]:
    """A whole invocation payload: records of one shard, in order."""
    return {"Records": [event_record(r, shard_id) for r in records]}


def sequence_numbers(
    count: int, start: int = 49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898
):
    """Kinesis-like sequence numbers: long decimal strings, increasing."""
    return [str(start + i * 1_000_000) for i in range(count)]


def fluentd_message(line: str) -> bytes:
    """What fluent.conf's kinesis_streams output puts in a record: `{"message":"<line>"}\\n`.

    Ruby's JSON keeps non-ASCII as raw UTF-8 and escapes `"` and `\\`, as json.dumps does with
    ensure_ascii=False; compared against the captured records in test_fluentd_envelope.
    """
    return (json.dumps({"message": line}, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def captured_fluentd_records() -> list[dict[str, str]]:
    """Records captured from real fluentd + fluent-plugin-kinesis (see data/fluentd/README.md)."""
    path = DATA / "fluentd" / "fluentd-kinesis-records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def captured_source_lines() -> list[str]:
    path = DATA / "fluentd" / "fluentd-kinesis-records.source-lines.log"
    return path.read_text(encoding="utf-8").splitlines()


# --- KPL aggregation, written from the format's description, for tests only -----------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def kpl_aggregate(user_records: list[bytes], partition_key: str = "pk") -> bytes:
    """A KPL aggregated record as `kinesis_streams_aggregated` writes it (key table ["a", pk])."""
    message = _field(1, b"a") + _field(1, partition_key.encode())
    for data in user_records:
        message += _field(3, _field(1, 1) + _field(3, data))
    return b"\xf3\x89\x9a\xc2" + message + hashlib.md5(message, usedforsecurity=False).digest()
