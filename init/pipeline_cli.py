#!/usr/bin/env python3
"""Look at what the pipeline delivered: list the bucket, print an object, read the
function's log lines.

`./start.sh ls|cat|logs` runs this inside the LocalStack container, whose python3 has
boto3 and whose environment holds the stack's settings (BUCKET_NAME, AWS_REGION, ...), so
a host with nothing but Docker needs no AWS CLI and no Python packages. It runs the same
on any host with boto3: `--endpoint-url URL` for another emulator, `--aws` for real AWS.

    pipeline_cli.py ls [PREFIX]            objects, oldest hour first, and a total
    pipeline_cli.py cat KEY [--pretty]     an object's records, one per line (gzip too)
    pipeline_cli.py logs [--since 10m] [--follow]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import init_resource  # beside this file: the same flags, endpoint and error wording

DURATION = re.compile(r"^(\d+)([smhd])$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Failure(Exception):
    """An error to report as one line, without a traceback."""


def duration(text: str) -> int:
    """argparse type: `90s`, `10m`, `2h`, `1d` in seconds."""
    match = DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"not a duration like 10m, 2h or 1d: {text!r}")
    return int(match.group(1)) * SECONDS[match.group(2)]


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


def log_line(event: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(event["timestamp"] / 1000, tz=UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S.%f}"[:-3] + "Z " + event["message"].rstrip("\n")


# --- I/O -----------------------------------------------------------------------------


def clients(args: argparse.Namespace) -> tuple[Any, Any]:
    import boto3  # imported here so --help and bad flags need no boto3

    session = boto3.session.Session(region_name=args.region)
    endpoint = None if args.aws else args.endpoint_url
    credentials = {}
    if endpoint and session.get_credentials() is None:
        credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    return (
        session.client("s3", endpoint_url=endpoint, **credentials),
        session.client("logs", endpoint_url=endpoint, **credentials),
    )


def list_objects(s3: Any, bucket: str, prefix: str) -> int:
    count = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
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


# --- command line --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="pipeline_cli.py", description="Look at what the pipeline delivered.")
    init_resource.add_target_arguments(parser)
    parser.add_argument("--bucket", default=env("BUCKET_NAME") or "nginx-accesslog", help="$BUCKET_NAME")
    parser.add_argument(
        "--function", default=env("LAMBDA_FUNCTION_NAME") or "KinesisAccessLogToS3", help="$LAMBDA_FUNCTION_NAME"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{ls,cat,logs}")
    listing = commands.add_parser("ls", help="list the bucket's objects")
    listing.add_argument("prefix", nargs="?", default="", help="e.g. 2026/11/27/ or errors/")
    show = commands.add_parser("cat", help="print an object's records, one per line")
    show.add_argument("key", help="a key as ls prints it, or s3://bucket/key")
    show.add_argument("--pretty", action="store_true", help="indent each record")
    logs = commands.add_parser("logs", help="the function's log lines")
    logs.add_argument("--since", type=duration, default=3600, help="how far back: 10m, 2h, 1d (default 1h)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines (Ctrl-C stops)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        s3, logs = clients(args)
        if args.command == "ls":
            return list_objects(s3, args.bucket, args.prefix)
        if args.command == "cat":
            return print_object(s3, args.bucket, object_key(args.key, args.bucket), args.pretty)
        return print_logs(logs, args.function, args.since, args.follow)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0  # e.g. `| head`
    except Exception as exc:
        print(f"pipeline_cli.py: error: {describe(exc)}", file=sys.stderr)
        return 1


def describe(exc: BaseException) -> str:
    """One line for any failure: init_resource.py's wording, and the bucket's absence."""
    if isinstance(exc, Failure):
        return str(exc)
    if init_resource.error_code(exc) == "NoSuchBucket":
        return "the bucket does not exist: is the pipeline provisioned? (status shows what is missing)"
    return init_resource.describe(exc)


if __name__ == "__main__":
    sys.exit(main())
