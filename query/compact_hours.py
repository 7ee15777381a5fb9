#!/usr/bin/env python3
"""Compact closed hours: one object per hour prefix instead of one per batch.

    python3 query/compact_hours.py                    # closed hours of the last 24 h, LocalStack
    python3 query/compact_hours.py --since 7d --aws --bucket my-bucket

The stack writes one object per poll that finds records: about 13,000-16,000 objects an
hour under traffic (docs/performance.md); reading them costs one request each. This
merges an hour's objects (`YYYY/MM/DD/HH/` and `errors/YYYY/MM/DD/HH/`) into
one, deterministically (same objects in, same bytes and key out) and idempotently (a
second run changes nothing), each request id once (a line fluentd re-sent is dropped:
docs/request-timing.md), in steps that keep every line visible exactly once to
query/logs_query.py at every moment, a crash between any two included:

1. write the merged object, named after a hash of its bytes (`..._compacted_<hash>`);
   readers skip a compacted object that no manifest names, so alone it changes nothing;
2. write the hour's manifest `_compaction.json` naming it and every object it replaces
   (one PUT: readers switch from the sources to the merged object at once);
3. delete the replaced objects; 4. delete merged objects of earlier runs.

Objects that arrive later (a retried batch) are read beside the merged one, and the next
run merges them in. Athena and other readers that do not know the manifest see sources
and merged object twice between steps 1 and 3: run it when nobody queries, and run it
again after a failure.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import bucket_reader  # beside this file: python3 puts the script's folder on sys.path
from bucket_reader import COMPACTED_MARK, ERROR_PREFIX, MANIFEST_NAME, Bucket, Failure, Missing

UTC = timezone.utc  # datetime.UTC is Python 3.11+; the tools run on 3.9+
STEPS = ("merged object written", "manifest written", "sources deleted", "old merged objects deleted")


@dataclass
class Outcome:
    prefix: str
    merged: int  # objects merged in this run (0: nothing to do)
    deleted: int
    dropped: int = 0  # re-sent lines (a request id seen before) left out

    def __str__(self) -> str:
        if not self.merged and not self.deleted:
            return f"{self.prefix}: unchanged"
        resent = f", {self.dropped} re-sent line(s) dropped" if self.dropped else ""
        return f"{self.prefix}: {self.merged} object(s) merged, {self.deleted} deleted{resent}"


# The record's request id, as the handler writes it (no `"` or `\` in it). `,"` can only
# stand outside a JSON string (inside one every `"` is escaped): no field's text fakes it.
_REQUEST_ID = b',"request_id":"'


def first_of_each_request(data: bytes) -> bytes:
    """The JSON Lines without later copies of a request id seen before (fluentd re-sends);
    lines without an id (combined/main, error lines) are all kept. Same lines in, same out."""
    if _REQUEST_ID not in data:
        return data
    seen: set[bytes] = set()
    kept = []
    for line in data.splitlines(keepends=True):
        at = line.find(_REQUEST_ID)
        if at >= 0:
            start = at + len(_REQUEST_ID)
            request_id = line[start : line.find(b'"', start)]
            if b"\\" not in request_id:
                if request_id in seen:
                    continue
                seen.add(request_id)
        kept.append(line)
    return b"".join(kept)


def compacted_key(prefix: str, data: bytes, compression: str) -> str:
    """The merged object's key: named by its content, so a rerun writes the same key."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    return f"{prefix}nginx_access_log{COMPACTED_MARK}{digest}.json" + (".gz" if compression == "gzip" else "")


def compact_hour(
    bucket: Bucket,
    prefix: str,
    compression: str = "gzip",
    workers: int = 16,
    after_step: Callable[[str], None] | None = None,
) -> Outcome:
    """Merge one hour prefix (`.../HH/`) in the four steps above; `after_step` sees each."""
    done = after_step or (lambda step: None)
    keys = bucket.list(prefix)
    manifest = bucket_reader.read_manifest(bucket, prefix, keys)
    current = bucket_reader.objects_to_read(keys, manifest)
    merged_before = bucket_reader.manifest_objects(manifest)
    fresh = [key for key in current if key not in merged_before]
    replaced = sorted(set(manifest["sources"] if manifest else ()) | set(fresh))
    if fresh or len(merged_before) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            try:
                bodies = list(pool.map(bucket.get, current))
            except Missing as exc:
                raise Failure(f"{exc} vanished while compacting {prefix}: is another compaction running?") from None
        joined = b"".join(bucket_reader.plain(body) for body in bodies)
        data = first_of_each_request(joined)
        dropped = joined.count(b"\n") - data.count(b"\n")
        body = gzip.compress(data, mtime=0) if compression == "gzip" else data
        merged = compacted_key(prefix, data, compression)
        extra = {"ContentEncoding": "gzip"} if compression == "gzip" else {}
        bucket.client.put_object(Bucket=bucket.name, Key=merged, Body=body, ContentType="application/x-ndjson", **extra)
        done(STEPS[0])
        document = {"objects": [merged], "sources": replaced}
        bucket.client.put_object(
            Bucket=bucket.name,
            Key=prefix + MANIFEST_NAME,
            Body=json.dumps(document, indent=0).encode(),
            ContentType="application/json",
        )
        done(STEPS[1])
    elif manifest:
        merged, dropped = merged_before[0], 0
    else:
        return Outcome(prefix, 0, 0)
    listed = set(keys)
    sources = [key for key in replaced if key in listed]
    stale = [key for key in keys if COMPACTED_MARK in key.rsplit("/", 1)[-1] and key != merged and key not in sources]
    _delete(bucket, sources)
    done(STEPS[2])
    _delete(bucket, stale)
    done(STEPS[3])
    return Outcome(prefix, len(fresh), len(sources) + len(stale), dropped)


def _delete(bucket: Bucket, keys: Sequence[str]) -> None:
    for start in range(0, len(keys), 1000):
        chunk = [{"Key": key} for key in keys[start : start + 1000]]
        answer = bucket.client.delete_objects(Bucket=bucket.name, Delete={"Objects": chunk, "Quiet": True})
        if answer.get("Errors"):
            error = answer["Errors"][0]
            raise Failure(f"could not delete {error.get('Key')}: {error.get('Code')} {error.get('Message', '')}")


def compact(bucket: Bucket, prefixes: Sequence[str], compression: str = "gzip", workers: int = 16) -> str:
    """Compact each prefix; one line saying what changed."""
    outcomes = [compact_hour(bucket, prefix, compression, workers) for prefix in prefixes]
    merged = sum(o.merged for o in outcomes)
    deleted = sum(o.deleted for o in outcomes)
    return f"{len(prefixes)} prefix(es), {merged} object(s) merged, {deleted} deleted"


def closed_hours(start: datetime, end: datetime, now: datetime, settle: timedelta) -> list[str]:
    """Hour prefixes (records and errors) in [start, end) that ended at least `settle` ago."""
    hours = [
        hour
        for hour in bucket_reader.hour_prefixes(start, end)
        if datetime.strptime(hour, "%Y/%m/%d/%H").replace(tzinfo=UTC) + timedelta(hours=1) + settle <= now
    ]
    return [p for hour in hours for p in (f"{hour}/", f"{ERROR_PREFIX}{hour}/")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="compact_hours.py", description="Merge each closed hour's objects into one (safe to rerun)."
    )
    bucket_reader.add_target_arguments(parser)
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--since", default=None, help="hours of this long back from now (default 24h)")
    when.add_argument("--from", dest="start", help="range start, ISO 8601")
    parser.add_argument("--to", dest="end", help="range end, ISO 8601 (default now)")
    parser.add_argument(
        "--settle",
        default="15m",
        help="leave hours that ended less than this long ago (default %(default)s): late batches still land",
    )
    parser.add_argument(
        "--compression",
        choices=["none", "gzip"],
        default="gzip",
        help="merged objects as .json.gz (default: a tenth of the bytes to store and read) or .json",
    )
    args = parser.parse_args(argv)
    try:
        now = datetime.now(UTC)
        since = args.since or ("24h" if not args.start else None)
        start, end = bucket_reader.time_range(since, args.start, args.end, now)
        prefixes = closed_hours(start, end, now, bucket_reader.parse_duration(args.settle))
    except ValueError as exc:
        parser.error(str(exc))
    try:
        endpoint = None if args.aws else args.endpoint_url
        bucket = Bucket(bucket_reader.s3_client(endpoint, args.region, args.workers), args.bucket)
        began = time.perf_counter()
        compression = "" if args.compression == "none" else args.compression
        for prefix in prefixes:
            outcome = compact_hour(bucket, prefix, compression, args.workers)
            if outcome.merged or outcome.deleted:
                print(outcome, flush=True)
        print(f"compact_hours: {len(prefixes)} prefix(es) checked in {time.perf_counter() - began:.1f} s")
        return 0
    except KeyboardInterrupt:
        print("compact_hours: interrupted (run it again: it resumes safely)", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"compact_hours: error: {bucket_reader.describe(exc, args.bucket)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
