#!/usr/bin/env python3
"""Compact closed hours: a few objects per hour prefix instead of one per batch.

    python3 query/compact_hours.py                    # closed hours of the last 24 h, LocalStack
    python3 query/compact_hours.py --since 7d --aws --bucket my-bucket

The stack writes one object per poll that finds records: about 13,000-16,000 objects an
hour under traffic (docs/performance.md); reading them costs one request each. This
merges an hour's objects (`YYYY/MM/DD/HH/` and `errors/YYYY/MM/DD/HH/`) into parts of
at most 64 MB of JSON Lines (PART_BYTES: an hour at 200 req/s is 6, read on every core),
deterministically (same objects in, same bytes and keys out) and idempotently (a
second run changes nothing), each request id once (a line fluentd re-sent is dropped:
docs/request-timing.md), in steps that keep every line visible exactly once to
query/logs_query.py at every moment, a crash between any two included:

1. write the merged parts, each named after a hash of its bytes (`..._compacted_<hash>`);
   readers skip a compacted object that no manifest names, so alone it changes nothing;
2. write the hour's manifest `_compaction.json` naming them and every object they replace
   (one PUT: readers switch from the sources to the merged parts at once);
3. delete the replaced objects; 4. delete merged objects of earlier runs.

Objects that arrive later (a retried batch) are read beside the merged ones, and the
next run merges them in; so is a source written again after the manifest named it (a
batch delivered again from its start). Athena and other readers that do not know the manifest see sources
and merged object twice between steps 1 and 3: run it when nobody queries, and run it
again after a failure.

    python3 query/compact_hours.py --follow           # the stack's `compactor` service

`--follow` keeps every hour small while it is written: every `--every` (30 s) a rolling
pass over the current hour (and the previous one until it is closed) merges the raw
objects that settled (unchanged for `--settle-open`, 90 s: longer than the function's
timeout, within which it may rewrite an object under its key) into one new compacted
object, in the same three steps; the manifest then names several compacted objects. A
new object takes in the newest compacted objects no larger than itself, so an hour holds
about log2(passes) of them, none much over a part. Closed hours are merged as above. One
compactor per bucket: two that race on one hour can overwrite each other's manifest.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

import bucket_reader  # beside this file: python3 puts the script's folder on sys.path
import logs_query
from bucket_reader import COMPACTED_MARK, ERROR_PREFIX, MANIFEST_NAME, Bucket, Failure, LocalCopies, Missing

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


def _merged_objects(
    bucket: Bucket, prefix: str, keys: Sequence[str], compression: str, workers: int
) -> tuple[list[tuple[str, bytes]], dict[str, list[str]], int]:
    """The merge of `keys`, in their order, as parts of at most PART_BYTES: [(key, stored
    bytes)], each part's time range (time_range), and the re-sent lines dropped."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            bodies = list(pool.map(bucket.get, keys))
        except Missing as exc:
            raise Failure(f"{exc} vanished while compacting {prefix}: is another compaction running?") from None
    joined = b"".join(bucket_reader.plain(body) for body in bodies)
    data = first_of_each_request(joined)
    dropped = joined.count(b"\n") - data.count(b"\n")
    parts, ranges = [], {}
    for part in split_parts(data, PART_BYTES):
        body = gzip.compress(part, compresslevel=GZIP_LEVEL, mtime=0) if compression == "gzip" else part
        key = compacted_key(prefix, part, compression)
        parts.append((key, body))
        span = time_range(prefix, part)
        if span is not None:
            ranges[key] = span
    return parts, ranges, dropped


# The field a query's range filters on, as the handler writes it: a record's `timestamp`
# (access_line.py: `,"timestamp":"...Z",`), an error line's arrival time (batching.py).
# `,"` stands only outside a JSON string: no field's text can fake either.
_RECORD_TIME = re.compile(rb',"timestamp":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)"')
_ARRIVAL_TIME = re.compile(rb',\s*"approximateArrivalTimestamp":\s*"?(\d+(?:\.\d+)?)')


def time_range(prefix: str, data: bytes) -> list[str] | None:
    """[earliest, latest] (ISO 8601, UTC) of the times a query filters `data`'s lines by, or
    None when no line has one. Readers skip a compacted object whose range lies outside the
    query's (bucket_reader.objects_to_read); lines without a time never match a range."""
    if prefix.startswith(ERROR_PREFIX):
        found = [float(t) for t in _ARRIVAL_TIME.findall(data)]
        if not found:
            return None
        return [datetime.fromtimestamp(t, UTC).isoformat() for t in (min(found), max(found))]
    stamps = _RECORD_TIME.findall(data)
    return [min(stamps).decode(), max(stamps).decode()] if stamps else None


# A compacted object holds at most this much JSON Lines: an hour at 200 req/s (~380 MB)
# becomes 6 parts, which DuckDB reads on every core (it inflates one gzip file on one
# thread: one object took 5.5-8.7 s to query, docs/performance.md).
PART_BYTES = 64 * 1024 * 1024


def split_parts(data: bytes, limit: int = PART_BYTES) -> list[bytes]:
    """`data` cut after line ends into parts of at most `limit` bytes (a longer line alone);
    the same data always gives the same parts."""
    parts, start = [], 0
    while len(data) - start > limit:
        cut = data.rfind(b"\n", start, start + limit)
        if cut < start:  # one line longer than the limit
            cut = data.find(b"\n", start + limit)
            if cut < 0:
                break
        parts.append(data[start : cut + 1])
        start = cut + 1
    parts.append(data[start:])
    return parts


def _put_parts(
    bucket: Bucket, parts: Sequence[tuple[str, bytes]], compression: str, cache: LocalCopies | None = None
) -> None:
    """Put the parts; with a `cache`, keep each there too under its ETag, and a records'
    part also as Parquet (logs_query.columnar_suffix()): a reader right after the merge
    loads that in about a third of the time, when the CPU is short most
    (docs/performance.md)."""
    columnar = True
    for key, body in parts:
        etag = _put_merged(bucket, key, body, compression)
        if cache is None or cache.cache is None:
            continue
        try:
            cache.keep(etag, body)
        except OSError as exc:  # costs a reader a fetch, never the merge
            print(f"compact_hours: not keeping merged parts in {cache.cache}: {exc}", file=sys.stderr, flush=True)
            cache.cache = None
            continue
        if columnar and not key.startswith(ERROR_PREFIX):
            try:
                cache.keep_columnar(etag, logs_query.columnar_suffix(), logs_query.write_columnar)
            except Exception as exc:  # no DuckDB here, a full disk: the part is still kept
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                said = f"compact_hours: not keeping Parquet copies in {cache.cache}: {first}"
                print(said, file=sys.stderr, flush=True)
                columnar = False


def _rewritten(listed: dict[str, tuple[datetime, int]], prefix: str, sources: Sequence[str]) -> list[str]:
    """Sources written again after the manifest that names them: a batch delivered again
    after its first copy was merged, maybe with more records than that copy (a whole
    batch retried from its start). Merged again, never deleted unread as a leftover."""
    manifest = listed.get(prefix + MANIFEST_NAME)
    if manifest is None:
        return []
    return sorted(key for key in sources if key in listed and listed[key][0] > manifest[0])


# zlib's default level, not 9: the rolling compactor re-compresses each line a few times an
# hour beside the pipeline, and 9 costs about twice the CPU for ~3 % fewer bytes.
GZIP_LEVEL = 6


def _put_merged(bucket: Bucket, key: str, body: bytes, compression: str) -> str:
    """Put one merged object; its ETag."""
    extra = {"ContentEncoding": "gzip"} if compression == "gzip" else {}
    answer = bucket.client.put_object(
        Bucket=bucket.name, Key=key, Body=body, ContentType="application/x-ndjson", **extra
    )
    return str(answer.get("ETag", ""))


def _put_manifest(
    bucket: Bucket,
    prefix: str,
    objects: list[str],
    sources: list[str],
    ranges: dict[str, list[str]],
    closed: bool = False,
) -> None:
    document: dict[str, Any] = {"objects": objects, "sources": sources}
    document["ranges"] = {key: ranges[key] for key in objects if key in ranges}
    if closed:  # compact_hour's whole parts: a rerun leaves them as they are
        document["closed"] = True
    bucket.client.put_object(
        Bucket=bucket.name,
        Key=prefix + MANIFEST_NAME,
        Body=json.dumps(document, indent=0).encode(),
        ContentType="application/json",
    )


def compact_hour(
    bucket: Bucket,
    prefix: str,
    compression: str = "gzip",
    workers: int = 16,
    after_step: Callable[[str], None] | None = None,
    cache: LocalCopies | None = None,
) -> Outcome:
    """Merge one hour prefix (`.../HH/`) in the four steps above; `after_step` sees each.
    With a `cache`, the parts are kept there too: a reader beside the stack reads them from
    disk while the saved logs still catch up with the merge (a minute or so for a busy
    hour: docs/persistence.md)."""
    done = after_step or (lambda step: None)
    listed = list_modified(bucket, prefix)
    keys = list(listed)
    manifest = bucket_reader.read_manifest(bucket, prefix, keys)
    again = _rewritten(listed, prefix, manifest["sources"] if manifest else ())
    current = bucket_reader.objects_to_read(keys, manifest) + again
    merged_before = bucket_reader.manifest_objects(manifest)
    fresh = [key for key in current if key not in merged_before]
    replaced = sorted(set(manifest["sources"] if manifest else ()) | set(fresh))
    # a closed manifest names whole parts; a rolling one, objects of passes to merge
    if fresh or (len(merged_before) > 1 and not (manifest or {}).get("closed")):
        parts, ranges, dropped = _merged_objects(bucket, prefix, current, compression, workers)
        _put_parts(bucket, parts, compression, cache)
        done(STEPS[0])
        merged = [key for key, _ in parts]
        _put_manifest(bucket, prefix, merged, replaced, ranges, closed=True)
        done(STEPS[1])
    elif manifest:
        merged, dropped = merged_before, 0
    else:
        return Outcome(prefix, 0, 0)
    sources = [key for key in replaced if key in listed]
    stale = [
        key for key in keys if COMPACTED_MARK in key.rsplit("/", 1)[-1] and key not in merged and key not in sources
    ]
    _delete(bucket, sources)
    done(STEPS[2])
    _delete(bucket, stale)
    done(STEPS[3])
    return Outcome(prefix, len(fresh), len(sources) + len(stale), dropped)


# --- rolling passes over an open hour ---------------------------------------------------

SETTLE_OPEN = timedelta(seconds=90)  # > init/init_resource.py LAMBDA_TIMEOUT (60 s)


@dataclass
class Rolled:
    """What one rolling pass over an hour prefix did."""

    prefix: str
    merged: int = 0  # settled raw objects merged into the new compacted object
    folded: int = 0  # earlier compacted objects taken into it
    deleted: int = 0
    dropped: int = 0
    objects: int = 0  # compacted objects the manifest names now
    unsettled: int = 0  # raw objects left for a later pass

    def __str__(self) -> str:
        if not self.merged and not self.deleted:
            return f"{self.prefix}: unchanged"
        folded = f" and {self.folded} compacted" if self.folded else ""
        resent = f", {self.dropped} re-sent line(s) dropped" if self.dropped else ""
        return (
            f"{self.prefix}: {self.merged} settled object(s){folded} merged, {self.deleted} deleted{resent}; "
            f"{self.objects} compacted, {self.unsettled} raw left"
        )


def list_modified(bucket: Bucket, prefix: str) -> dict[str, tuple[datetime, int]]:
    """key -> (LastModified, size) of every object under `prefix`."""
    return {item["Key"]: (item["LastModified"], item["Size"]) for item in bucket.listed(prefix)}


def roll_hour(
    bucket: Bucket,
    prefix: str,
    now: datetime | None = None,
    settle: timedelta = SETTLE_OPEN,
    compression: str = "gzip",
    workers: int = 16,
    after_step: Callable[[str], None] | None = None,
) -> Rolled:
    """One rolling pass over an hour that may still be written: the settled raw objects
    (and the newest compacted objects no larger than them) become one compacted object,
    in the steps of compact_hour (object, manifest, deletes); `after_step` sees each."""
    done = after_step or (lambda step: None)
    now = now or datetime.now(UTC)
    listed = list_modified(bucket, prefix)
    manifest = bucket_reader.read_manifest(bucket, prefix, listed)
    objects = bucket_reader.manifest_objects(manifest)
    sources = list(manifest["sources"]) if manifest else []
    known = dict(manifest.get("ranges") or {}) if manifest else {}  # the kept objects' ranges
    again = _rewritten(listed, prefix, sources)
    sources = [key for key in sources if key not in again]  # raw again: readers read them
    raw = [key for key in bucket_reader.objects_to_read(listed, manifest) if key not in objects] + again
    settled = [key for key in raw if listed[key][0] <= now - settle]
    # what a crashed pass left behind: sources (manifest written, deletes not done), and
    # compacted objects no manifest names, once settled (another compactor's in-flight
    # object, between its object and manifest steps, is seconds old)
    leftovers = [key for key in sources if key in listed]
    unnamed = [
        key
        for key, (modified, _) in listed.items()
        if COMPACTED_MARK in key.rsplit("/", 1)[-1] and key not in objects and modified <= now - settle
    ]
    rolled = Rolled(prefix, unsettled=len(raw) - len(settled), objects=len(objects))
    folded: list[str] = []
    merged: list[str] = []
    if settled:
        parts, ranges, rolled.dropped = _merged_objects(bucket, prefix, settled, compression, workers)
        # Fold in the newest compacted objects while each is no larger than what it joins:
        # object sizes then grow geometrically, and each line is re-merged ~log2(passes) times;
        # up to about a part (stored bytes: gzip keeps ~1/8 of JSON Lines).
        total = sum(len(body) for _, body in parts)
        limit = PART_BYTES // 8 if compression == "gzip" else PART_BYTES
        for key in reversed(objects):
            size = listed[key][1] if key in listed else None
            if size is None or size > total or size + total > limit:
                break
            folded.insert(0, key)
            total += size
        if folded:
            parts, ranges, rolled.dropped = _merged_objects(bucket, prefix, folded + settled, compression, workers)
        _put_parts(bucket, parts, compression)
        done(STEPS[0])
        kept = objects[: len(objects) - len(folded)]
        merged = [key for key, _ in parts]
        _put_manifest(bucket, prefix, [*kept, *merged], sorted(set(sources) | set(settled)), {**known, **ranges})
        done(STEPS[1])
        rolled.merged, rolled.folded, rolled.objects = len(settled), len(folded), len(kept) + len(merged)
    elif again:  # nothing settled to merge yet: name the rewritten objects no more
        _put_manifest(bucket, prefix, objects, sources, known)
        done(STEPS[1])
    elif not leftovers and not unnamed:
        return rolled
    gone = sorted(set(settled) | set(leftovers))
    _delete(bucket, gone)
    done(STEPS[2])
    superseded = sorted({*folded, *unnamed} - set(merged))
    _delete(bucket, superseded)
    done(STEPS[3])
    rolled.deleted = len(gone) + len(superseded)
    return rolled


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


# --- --follow: the stack's compactor service -------------------------------------------


class Stopped(Exception):
    """SIGTERM or SIGINT arrived: stop after the step that just ended."""


@dataclass
class Follower:
    """The loop of `--follow`; one pass at a time, `stop` checked between steps."""

    bucket: Bucket
    every: float = 30.0
    since: timedelta = timedelta(hours=24)
    settle_open: timedelta = SETTLE_OPEN
    settle_closed: timedelta = timedelta(minutes=15)
    compression: str = "gzip"
    workers: int = 4
    heartbeat: Path | None = None
    ready_url: str | None = None
    cache: LocalCopies | None = None  # closed hours' parts kept here too (compact_hour)
    out: TextIO = sys.stdout
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.closed_done: set[str] = set()  # closed hours merged into parts by this process
        self.done_hour = ""
        self.waiting = False
        # a call failing once a stop was asked ends there, not after its retries' waits
        # (up to 3 s a call; a pass makes several, and Docker kills after its grace period)
        self.bucket.client.meta.events.register("needs-retry.s3", self._no_retry_once_stopped)

    def _no_retry_once_stopped(
        self, response: Any = None, caught_exception: BaseException | None = None, **_: Any
    ) -> None:
        failed = caught_exception is not None or (
            response is not None and (response[0].status_code >= 500 or response[0].status_code == 429)
        )
        if failed and self.stop.is_set():
            raise Stopped

    def step(self, _: str = "") -> None:
        self.beat()
        if self.stop.is_set():
            raise Stopped

    def beat(self) -> None:
        if self.heartbeat is not None:
            try:
                self.heartbeat.touch()
            except OSError as exc:  # the healthcheck will say so; compacting goes on
                self.say(f"compact_hours: cannot touch the heartbeat file: {exc}")
                self.heartbeat = None

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def run(self) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                self.one_pass()
            except Stopped:
                break
            except Exception as exc:
                self.say(f"compact_hours: error: {bucket_reader.describe(exc, self.bucket.name)}")
            self.beat()
            self.stop.wait(max(0.0, self.every - (time.monotonic() - began)))

    def one_pass(self, now: datetime | None = None) -> None:
        """Roll the open hours and merge the closed ones, as of `now` (tests pass another)."""
        now = now or datetime.now(UTC)
        if not self.ready():
            return
        hour = now.replace(minute=0, second=0, microsecond=0)
        if self.done_hour != f"{hour:%Y%m%d%H}":  # once an hour, check every closed hour again
            self.done_hour, self.closed_done = f"{hour:%Y%m%d%H}", set()
        # the previous hour rolls on until it is closed: then compact_hour owns it
        open_hours = [hour] + ([hour - timedelta(hours=1)] if hour + self.settle_closed > now else [])
        for start in open_hours:
            for prefix in (f"{start:%Y/%m/%d/%H}/", f"{ERROR_PREFIX}{start:%Y/%m/%d/%H}/"):
                self.step()
                # settled by the clock the bucket's LastModified follows, whatever `now` says
                rolled = roll_hour(
                    self.bucket, prefix, None, self.settle_open, self.compression, self.workers, self.step
                )
                if rolled.merged or rolled.deleted:
                    self.say(str(rolled))
        for prefix in closed_hours(now - self.since, now, now, self.settle_closed):
            if prefix in self.closed_done:
                continue
            self.step()
            outcome = compact_hour(self.bucket, prefix, self.compression, self.workers, self.step, self.cache)
            self.closed_done.add(prefix)
            if outcome.merged or outcome.deleted:
                self.say(str(outcome))
                if self.cache is not None:
                    self.cache.trim()
                # one hour's merge a pass (an hour at 200 req/s takes minutes): the open hour
                # rolls on between them, whatever a week of uncompacted hours holds
                return

    def ready(self) -> bool:
        """False while LocalStack still runs its ready.d hook, which puts the saved objects
        back: merging a half-restored hour could delete objects its manifest names."""
        if not self.ready_url:
            return True
        try:
            with urllib.request.urlopen(self.ready_url, timeout=5) as response:  # noqa: S310 - the emulator
                report = json.loads(response.read().decode("utf-8"))
        except (OSError, ValueError):
            return True  # not LocalStack (moto answers 404), or down: S3 calls say so
        if not isinstance(report, dict) or "completed" not in report:
            return True
        # finished, successfully or not: a failed hook stays ERROR after `./start.sh provision`
        # ran it again, so only a hook still running counts
        ready = bool(report.get("completed")) and all(
            s.get("state") in ("SUCCESSFUL", "ERROR") for s in report.get("scripts") or () if isinstance(s, dict)
        )
        if ready == self.waiting:  # one line per change
            self.waiting = not ready
            self.say(
                "compact_hours: LocalStack is provisioning (putting saved logs back): waiting"
                if not ready
                else "compact_hours: LocalStack is ready: compacting"
            )
        return ready


def _on_signal(stop: threading.Event) -> Callable[[int, Any], None]:
    def handler(signum: int, frame: Any) -> None:
        stop.set()

    return handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="compact_hours.py",
        description="Merge each closed hour's objects into one (safe to rerun); "
        "with --follow, keep compacting, the open hour too.",
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
    parser.add_argument(
        "--follow",
        action="store_true",
        help="keep going (the stack's compactor service): every --every, merge the open hour's settled "
        "objects, and closed hours of --since into parts; stops at SIGTERM",
    )
    parser.add_argument("--every", default="30s", help="with --follow: time between passes (default %(default)s)")
    parser.add_argument(
        "--settle-open",
        default="90s",
        help="with --follow: merge raw objects of an open hour unchanged this long (default %(default)s; "
        "the function may rewrite an object within its 60 s timeout)",
    )
    parser.add_argument(
        "--heartbeat", type=Path, help="with --follow: a file touched at each step (the healthcheck reads its age)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=os.environ.get("QUERY_CACHE_DIR") or None,
        help="keep a closed hour's merged parts here too, by ETag, where the query tools look before "
        "fetching (default: $QUERY_CACHE_DIR; none)",
    )
    args = parser.parse_args(argv)
    cache = LocalCopies(args.bucket, cache=args.cache_dir) if args.cache_dir else None
    if args.follow:
        return follow(parser, args, cache)
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
            outcome = compact_hour(bucket, prefix, compression, args.workers, cache=cache)
            if outcome.merged or outcome.deleted:
                print(outcome, flush=True)
        if cache is not None:
            cache.trim()
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


def follow(parser: argparse.ArgumentParser, args: argparse.Namespace, cache: LocalCopies | None) -> int:
    if args.start or args.end:
        parser.error("--follow takes --since, not --from/--to")
    try:
        every = bucket_reader.parse_duration(args.every).total_seconds()
        since = bucket_reader.parse_duration(args.since or "24h")
        settle_open = bucket_reader.parse_duration(args.settle_open)
        settle_closed = bucket_reader.parse_duration(args.settle)
    except ValueError as exc:
        parser.error(str(exc))
    endpoint = None if args.aws else args.endpoint_url
    follower = Follower(
        Bucket(bucket_reader.s3_client(endpoint, args.region, args.workers), args.bucket),
        every=every,
        since=since,
        settle_open=settle_open,
        settle_closed=settle_closed,
        compression="" if args.compression == "none" else args.compression,
        workers=args.workers,
        heartbeat=args.heartbeat,
        cache=cache,
        ready_url=endpoint.rstrip("/") + "/_localstack/init/ready" if endpoint else None,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _on_signal(follower.stop))
    where = "AWS" if args.aws else endpoint
    print(
        f"compact_hours: following s3://{args.bucket} at {where}: a pass every {args.every}, "
        f"open hours' objects settled {args.settle_open}, closed hours of the last {args.since or '24h'}",
        flush=True,
    )
    follower.run()
    print("compact_hours: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
