"""A Lambda batch -> the objects to write: one JSON Lines object per hour (and per error
hour), keyed by the batch alone, up to the first drain marker. Standard library only;
part of the function's package.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from access_line import fluentd_record_json, line_to_json
from bucket_layout import ERROR_PREFIX, RECORD_NAME, drain_ack_key
from envelopes import DrainMarker, Problem, record_lines


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
