#!/usr/bin/env python3
"""Look at what the pipeline delivered: list the bucket, print an object, read the
function's log lines; and drain the stream before LocalStack stops.

`./start.sh ls|cat|logs` runs this inside the LocalStack container, whose python3 has
boto3 and whose environment holds the stack's settings (BUCKET_NAME, AWS_REGION, ...), so
a host with nothing but Docker needs no AWS CLI and no Python packages. It runs the same
on any host with boto3: `--endpoint-url URL` for another emulator, `--aws` for real AWS.

    pipeline_cli.py ls [PREFIX]            objects, oldest hour first, and a total
    pipeline_cli.py cat KEY [--pretty]     an object's records, one per line (gzip too)
    pipeline_cli.py logs [--since 10m] [--follow]
    pipeline_cli.py drain [--timeout 60] [--interval 0.5]
                                           wait until the function has consumed every
                                           record now in the stream (exit 1 if not)

drain: the stream is not kept when LocalStack stops, so whatever the function has not read
by then is lost. drain puts a marker record `{"pipeline_drain": "<id>"}` into every open
shard; the function writes `_pipeline/drain/<id>/<shardId>.json` once every record before
the marker on that shard is in S3 (kinesis_event_to_s3.py); drain waits for all of them,
then deletes them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import secrets
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pipeline_target  # beside this file: the names' defaults, flags, clients, error wording
from bucket_layout import CONTROL_PREFIX, DRAIN_PREFIX, drain_ack_key  # where the function writes
from pipeline_target import Failure, describe, duration, error_code, positive_seconds

UTC = timezone.utc  # datetime.UTC is Python 3.11+; host tools run on 3.9+
PROGRESS_EVERY = 5.0  # seconds between drain's progress lines
DRAIN_STAMP = re.compile(r"\d{8}T\d{6}Z")  # how a drain id starts: when it was made


def object_key(text: str, bucket: str) -> str:
    """A key as given, or taken from `s3://<bucket>/<key>` (as `ls` prints it)."""
    if text.startswith("s3://"):
        named, _, key = text[5:].partition("/")
        if named != bucket:
            raise Failure(f"{text} is not in the pipeline's bucket {bucket}")
        return key
    return text.lstrip("/")


def records(body: bytes, key: str) -> Iterator[str]:
    """The JSON lines of an object, decompressed when it is gzip."""
    if key.endswith(".gz") or body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    for line in body.decode("utf-8").splitlines():
        if line.strip():
            yield line


def pretty(line: str) -> str:
    return json.dumps(json.loads(line), indent=2, ensure_ascii=False)


def open_shards(shards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The shards records can still be put into: those without an ending sequence number."""
    return [shard for shard in shards if "EndingSequenceNumber" not in shard.get("SequenceNumberRange", {})]


def drain_id(now: datetime) -> str:
    """A new drain's id: when, and a random part so that two drains never share one."""
    return f"{now:%Y%m%dT%H%M%S}Z-{secrets.token_hex(4)}"


def ack_key(drain: str, shard_id: str) -> str:
    """Where the function acknowledges a marker (the same key as kinesis_event_to_s3.drain_ack)."""
    return drain_ack_key(drain, shard_id)


def marker_data(drain: str) -> bytes:
    return json.dumps({"pipeline_drain": drain}).encode()


def log_line(event: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(event["timestamp"] / 1000, tz=UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S.%f}"[:-3] + "Z " + event["message"].rstrip("\n")


# --- I/O -----------------------------------------------------------------------------


def client(args: argparse.Namespace, service: str) -> Any:
    return pipeline_target.clients(args.region, None if args.aws else args.endpoint_url, (service,))[0]


def list_objects(s3: Any, bucket: str, prefix: str) -> int:
    """The bucket's objects, without the function's control objects (unless asked for)."""
    count = size = 0
    hide_control = not prefix.startswith(CONTROL_PREFIX)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if hide_control and item["Key"].startswith(CONTROL_PREFIX):
                continue
            modified = item["LastModified"].astimezone(UTC)
            print(f"{modified:%Y-%m-%d %H:%M:%S} {item['Size']:>10} {item['Key']}")
            count += 1
            size += item["Size"]
    where = f"s3://{bucket}/{prefix}"
    if count == 0:
        print(f"no objects under {where} yet: browse the site, then wait a few seconds", file=sys.stderr)
    else:
        print(f"{count} object(s), {size} bytes under {where}", file=sys.stderr)
    return 0


def print_object(s3: Any, bucket: str, key: str, indent: bool) -> int:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        raise Failure(f"no object {key} in s3://{bucket} (ls lists the keys)") from None
    for line in records(body, key):
        print(pretty(line) if indent else line)
    return 0


def print_logs(logs: Any, function: str, since: int, follow: bool) -> int:
    group = f"/aws/lambda/{function}"
    start = int((time.time() - since) * 1000)
    seen: set[str] = set()
    while True:
        try:
            pages = logs.get_paginator("filter_log_events").paginate(logGroupName=group, startTime=start)
            for page in pages:
                for event in page.get("events", []):
                    if event["eventId"] not in seen:
                        seen.add(event["eventId"])
                        start = max(start, event["timestamp"])
                        print(log_line(event), flush=True)
        except logs.exceptions.ResourceNotFoundException:
            if not follow:
                raise Failure(f"no log group {group} yet: the function has not run (browse the site first)") from None
        if not follow:
            return 0
        time.sleep(2)  # CloudWatch Logs has no push API for a client; poll


def drain(kinesis: Any, s3: Any, stream: str, bucket: str, timeout: float, interval: float) -> int:
    """Put a marker into every open shard, wait until the function acknowledged each, then
    delete the acknowledgements. 0: every record put before the markers is in S3."""
    try:
        shards = open_shards(list_shards(kinesis, stream))
    except kinesis.exceptions.ResourceNotFoundException:
        print(f"no stream: nothing to drain (there is no stream {stream})")
        return 0
    if not shards:
        print(f"no open shard in stream {stream}: nothing to drain")
        return 0
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchBucket"):
            raise Failure(
                f"the bucket {bucket} does not exist, so the function cannot store what is in stream {stream}"
                " (status shows what is missing)"
            ) from None
        raise
    started = time.monotonic()
    before = datetime.now(UTC)
    marker = drain_id(before)
    pending = {}
    for shard in shards:
        shard_id = shard["ShardId"]
        landed = kinesis.put_record(
            StreamName=stream,
            Data=marker_data(marker),
            PartitionKey="pipeline-drain",
            ExplicitHashKey=shard["HashKeyRange"]["StartingHashKey"],
        )["ShardId"]
        if landed != shard_id:
            raise Failure(f"the drain marker meant for {shard_id} of stream {stream} landed in {landed}")
        pending[shard_id] = ack_key(marker, shard_id)
    acknowledged: list[str] = []
    next_progress = PROGRESS_EVERY
    while True:
        for shard_id, key in list(pending.items()):
            if object_exists(s3, bucket, key):
                acknowledged.append(key)
                del pending[shard_id]
        elapsed = time.monotonic() - started
        if not pending or elapsed >= timeout:
            break
        if elapsed >= next_progress:
            print(
                f"waiting for the function to consume the stream: {len(acknowledged)} of {len(shards)}"
                f" shards done ({elapsed:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            next_progress = elapsed + PROGRESS_EVERY
        time.sleep(min(interval, max(0.0, timeout - elapsed)))
    for key in acknowledged + leftover_acks(s3, bucket, marker):
        s3.delete_object(Bucket=bucket, Key=key)
    if pending:
        print(
            f"pipeline_cli.py: drain: not drained within {timeout:g} s: the function has not consumed"
            f" {', '.join(sorted(pending))} of stream {stream} up to the drain marker: records still in"
            " those shards are lost when LocalStack stops; ./start.sh logs shows why the function is not"
            " keeping up",
            file=sys.stderr,
        )
        return 1
    print(
        f"stream drained: every record put before {before:%Y-%m-%dT%H:%M:%S}Z is in s3://{bucket}"
        f" ({len(shards)} shard{'s' if len(shards) != 1 else ''}, {time.monotonic() - started:.1f} s)"
    )
    return 0


def list_shards(kinesis: Any, stream: str) -> list[dict[str, Any]]:
    shards: list[dict[str, Any]] = []
    response = kinesis.list_shards(StreamName=stream)
    while True:
        shards.extend(response.get("Shards", []))
        token = response.get("NextToken")
        if not token:
            return shards
        response = kinesis.list_shards(NextToken=token)


def leftover_acks(s3: Any, bucket: str, drain: str) -> list[str]:
    """Acknowledgements of drains started before this one: late ones, of drains that timed
    out or were interrupted before the function caught up. (Drains run one at a time.)"""
    started = drain.split("-", 1)[0]
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=DRAIN_PREFIX):
        for item in page.get("Contents", []):
            other = item["Key"][len(DRAIN_PREFIX) :].split("/", 1)[0]
            if DRAIN_STAMP.fullmatch(other.split("-", 1)[0]) and other.split("-", 1)[0] < started:
                keys.append(item["Key"])
    return keys


def object_exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


# --- command line --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline_cli.py", description="Look at what the pipeline delivered; drain its stream."
    )
    pipeline_target.add_target_arguments(parser)
    for name in ("bucket", "stream", "function"):
        pipeline_target.add_name_argument(parser, name)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{ls,cat,logs,drain}")
    listing = commands.add_parser("ls", help="list the bucket's objects")
    listing.add_argument("prefix", nargs="?", default="", help="e.g. 2026/11/27/ or errors/")
    show = commands.add_parser("cat", help="print an object's records, one per line")
    show.add_argument("key", help="a key as ls prints it, or s3://bucket/key")
    show.add_argument("--pretty", action="store_true", help="indent each record")
    logs = commands.add_parser("logs", help="the function's log lines")
    logs.add_argument("--since", type=duration, default=3600, help="how far back: 10m, 2h, 1d (default 1h)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines (Ctrl-C stops)")
    draining = commands.add_parser("drain", help="wait until the function has consumed every record in the stream")
    draining.add_argument("--timeout", type=positive_seconds, default=60.0, help="seconds (default 60)")
    draining.add_argument("--interval", type=positive_seconds, default=0.5, help="seconds between checks (default 0.5)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "ls":
            return list_objects(client(args, "s3"), args.bucket, args.prefix)
        if args.command == "cat":
            return print_object(client(args, "s3"), args.bucket, object_key(args.key, args.bucket), args.pretty)
        if args.command == "drain":
            s3, kinesis = client(args, "s3"), client(args, "kinesis")
            return drain(kinesis, s3, args.stream, args.bucket, args.timeout, args.interval)
        return print_logs(client(args, "logs"), args.function, args.since, args.follow)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0  # e.g. `| head`
    except Exception as exc:
        print(f"pipeline_cli.py: error: {describe(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
