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

The algorithm reads here: parse the batch into objects (batching.py, on envelopes.py and
access_line.py), write them, report where a retry must start. Those modules and
bucket_layout.py ship in the same package (standard library + the runtime's boto3): no
endpoint logic, boto3 reads `AWS_ENDPOINT_URL`, which LocalStack injects into the function.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import boto3
from access_line import FIELDS, MAIN_FIELDS, TIMING_FIELDS, fluentd_record_json, line_to_json, parse_line, utc_instant
from batching import Batch, S3Object, build_batch, object_key
from botocore.exceptions import BotoCoreError, ClientError
from envelopes import DrainMarker, Problem, drain_marker, kpl_user_records, record_lines

# What the tests and benches read from the handler module, beside `handler`.
__all__ = [
    "FIELDS",
    "MAIN_FIELDS",
    "TIMING_FIELDS",
    "DrainMarker",
    "Problem",
    "S3Object",
    "build_batch",
    "drain_marker",
    "fluentd_record_json",
    "handler",
    "kpl_user_records",
    "line_to_json",
    "object_key",
    "parse_line",
    "record_lines",
    "utc_instant",
]

BUCKET_NAME = os.environ.get("BUCKET_NAME", "nginx-accesslog")
COMPRESSION = os.environ.get("COMPRESSION", "").strip().lower()

s3 = boto3.client("s3")  # created once per execution environment, reused by every call

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
