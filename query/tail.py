#!/usr/bin/env python3
"""Follow the access-log records as they land in the bucket: one readable line each.

    python3 query/tail.py                         # every record from now on
    python3 query/tail.py --status 5xx --path /v1/ --client 10.0.0.0/8
    python3 query/tail.py --json                  # the records as stored, one JSON a line

How it finds new objects without listing whole hours: the function names each object
`YYYY/MM/DD/HH/nginx_access_log_<arrival>_<shard>_<sequence>.json` (init/kinesis_event_to_s3.py),
where HH is the requests' hour and <arrival> the Kinesis arrival time of the object's first
record. Keys therefore sort by arrival within an hour, but an object can land *after* one
whose key sorts later (another shard's batch, a retry). So every poll lists the recent
hours from `StartAfter` = the arrival stamp `--lag` seconds ago (not the last key shown),
and shows the keys it has not shown yet; keys older than the lag are forgotten, since
no listing returns them again. Records of one shard come in sequence-number order; an
object rewritten after it was shown (ETag) adds only lines not shown (Follower).
"""

from __future__ import annotations

import argparse
import collections
import ipaddress
import json
import re
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import bucket_reader
from bucket_reader import COMPACTED_MARK, Bucket, Missing

# The function's key layout (init/kinesis_event_to_s3.py object_key).
KEY = re.compile(
    r"^(?P<hour>\d{4}/\d{2}/\d{2}/\d{2})/nginx_access_log_(?P<stamp>\d{8}T\d{9}Z)_(?P<shard>[^/]+)_(?P<seq>\d+)\.json(?:\.gz)?$"
)
KEY_NAME = "nginx_access_log_"


def stamp(at: datetime) -> str:
    """An arrival time as the function writes it into a key: 20261126T170507123Z."""
    at = at.astimezone(UTC)
    return at.strftime("%Y%m%dT%H%M%S") + f"{at.microsecond // 1000:03d}Z"


@dataclass(frozen=True, order=True)
class ObjectKey:
    """A record object's key, ordered as its records should be shown."""

    stamp: str
    seq: int
    shard: str
    key: str

    @classmethod
    def parse(cls, key: str) -> ObjectKey | None:
        match = KEY.match(key)
        if match is None or COMPACTED_MARK in key:
            return None
        return cls(match["stamp"], int(match["seq"]), match["shard"], key)

    @property
    def stream(self) -> tuple[str, str]:
        """(hour, shard): the objects a rewritten object's lines move to."""
        return self.key[:13], self.shard


# --- filters: pure ---------------------------------------------------------------------


@dataclass
class Filters:
    statuses: list[tuple[int, int]] = field(default_factory=list)  # [low, high] inclusive
    path: str | None = None
    clients: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)

    def match(self, record: dict[str, Any]) -> bool:
        status = record.get("status")
        if self.statuses and not (
            isinstance(status, int) and any(low <= status <= high for low, high in self.statuses)
        ):
            return False
        if self.path is not None and not (record.get("request_uri") or "").startswith(self.path):
            return False
        if self.clients:
            try:
                address = ipaddress.ip_address(record.get("remote_addr") or "")
            except ValueError:
                return False
            if not any(address in network for network in self.clients):
                return False
        return True


def parse_status(text: str) -> list[tuple[int, int]]:
    """`5xx`, `404`, `4xx,503` -> inclusive ranges."""
    ranges = []
    for part in text.split(","):
        part = part.strip().lower()
        if re.fullmatch(r"[1-5]xx", part):
            ranges.append((int(part[0]) * 100, int(part[0]) * 100 + 99))
        elif re.fullmatch(r"[1-5][0-9][0-9]", part):
            ranges.append((int(part), int(part)))
        else:
            raise argparse.ArgumentTypeError(f"not a status or class: {part!r} (examples: 5xx, 404, 4xx,503)")
    return ranges


def parse_client(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address (`10.0.0.7`) or a network (`10.0.0.0/8`)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an address or network: {text!r} (examples: 10.0.0.7, 10.0.0.0/8)"
        ) from None


# --- output: pure ----------------------------------------------------------------------


def readable(record: dict[str, Any]) -> str:
    """One line: time, status, client, method and URI, bytes, user agent."""
    when = record.get("timestamp") or "-"
    request = (
        f"{record.get('request_method')} {record.get('request_uri')}"
        if record.get("request_method")
        else f"(request line: {(record.get('request') or '')[:60]})"
    )
    agent = record.get("http_user_agent") or "-"
    return (
        f"{when} {record.get('status', '-')!s:>3} {record.get('remote_addr') or '-':<15} {request}"
        f"  {record.get('body_bytes_sent', 0)} B  {agent}"
    )


# --- following the bucket --------------------------------------------------------------


@dataclass
class Shown:
    """A key already handled: its ETag then, and the lines printed from it (None: it was
    there before the tail started, nothing was printed)."""

    etag: str
    lines: list[str] | None


class Follower:
    """Finds the record objects that landed since the last poll, each exactly once.

    `clock` gives the current time (tests move it); `lag` bounds how long after its first
    record's arrival an object may still land and be shown; `hours` how far back the
    requests' own hours are listed (a request logged 50 min ago arrives late into the
    previous hour's prefix).

    An object can also change after it was printed: after a failed put the function
    rewrites an object without the lines of the records it will retry, and the retry
    writes those lines again at the start of a new object of the same hour and shard (or,
    retrying from the object's own first record, rewrites it with them and maybe more).
    The ETag in each listing shows the change: lines added to a printed object are
    printed; lines taken out of one are skipped where the retry brings them back.
    """

    def __init__(
        self,
        bucket: Bucket,
        lag: timedelta = timedelta(minutes=2),
        hours: int = 1,
        clock: Callable[[], datetime] | None = None,
        workers: int = 8,
    ) -> None:
        self.bucket = bucket
        self.lag = lag
        self.hours = hours
        self.clock = clock or (lambda: datetime.now(UTC))
        self.workers = workers
        self.shown: dict[ObjectKey, Shown] = {}
        self.taken_out: dict[tuple[str, str], list[str]] = {}  # (hour, shard) -> lines printed, then removed
        self.horizon = ""  # keys of objects that arrived before this stamp are never listed again

    def prefixes(self, now: datetime) -> list[str]:
        """The hour prefixes a new object may land in: the last `hours` hours, and the next
        one (a clock a little ahead of ours)."""
        start = now - timedelta(hours=self.hours) - self.lag
        return [p + "/" for p in bucket_reader.hour_prefixes(start, now + timedelta(minutes=5))]

    def _list(self, prefix: str) -> dict[str, str]:
        listed = self.bucket.listed(prefix, prefix + KEY_NAME + self.horizon)
        return {item["Key"]: item.get("ETag", "") for item in listed}

    def listing(self) -> dict[ObjectKey, str]:
        """The keys (and ETags) of the objects that arrived within the lag; forget older ones."""
        now = self.clock()
        self.horizon = max(self.horizon, stamp(now - self.lag))
        self.shown = {k: v for k, v in self.shown.items() if k.stamp >= self.horizon}
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            listings = list(pool.map(self._list, self.prefixes(now)))
        found: dict[ObjectKey, str] = {}
        for keys in listings:
            for key, etag in keys.items():
                parsed = ObjectKey.parse(key)
                if parsed is not None and parsed.stamp >= self.horizon:
                    found[parsed] = etag
        return found

    def start(self) -> int:
        """Mark what is already there as handled (the tail starts from now); how many."""
        found = self.listing()
        self.shown.update((key, Shown(etag, None)) for key, etag in found.items())
        return len(found)

    def poll(self) -> list[dict[str, Any]]:
        """The records that landed since the last poll, in order."""
        found = self.listing()
        changed = sorted(k for k, etag in found.items() if k in self.shown and self.shown[k].etag != etag)
        fresh = sorted(k for k in found if k not in self.shown)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            bodies = list(pool.map(self._lines, changed + fresh))
        lines: list[str] = []
        for key, body in zip(changed, bodies, strict=False):
            if body is not None:
                lines.extend(self._rewritten(key, found[key], body))
        for key, body in zip(fresh, bodies[len(changed) :], strict=True):
            if body is not None:  # None: vanished meanwhile (compacted), its lines are printed already
                lines.extend(self._new(key, found[key], body))
        return [json.loads(line) for line in lines]

    def _new(self, key: ObjectKey, etag: str, lines: list[str]) -> list[str]:
        self.shown[key] = Shown(etag, lines)
        removed = self.taken_out.pop(key.stream, [])
        same = 0
        while same < min(len(removed), len(lines)) and lines[same] == removed[same]:
            same += 1
        if same < len(removed):
            self.taken_out[key.stream] = removed[same:]
        return lines[same:]

    def _rewritten(self, key: ObjectKey, etag: str, lines: list[str]) -> list[str]:
        before = self.shown[key].lines
        self.shown[key] = Shown(etag, lines)
        if before is None:  # never printed: nothing to add or take back
            return []
        if lines[: len(before)] == before:  # rewritten with more lines: print those
            return lines[len(before) :]
        if before[: len(lines)] == lines:  # trimmed: the retry brings the rest back, skip them then
            self.taken_out[key.stream] = self.taken_out.get(key.stream, []) + before[len(lines) :]
            return []
        printed = collections.Counter(before)  # otherwise: print only what was not printed
        unprinted = []
        for line in lines:
            if printed[line] > 0:
                printed[line] -= 1
            else:
                unprinted.append(line)
        return unprinted

    def _lines(self, key: ObjectKey) -> list[str] | None:
        try:
            body = self.bucket.get(key.key)
        except Missing:
            return None
        return [line for line in bucket_reader.plain(body).decode("utf-8").splitlines() if line]


def follow(
    follower: Follower,
    filters: Filters,
    out: TextIO,
    as_json: bool,
    interval: float,
    polls: int | None = None,
    err: TextIO | None = None,
) -> None:
    """Poll and print until interrupted (or `polls` polls: tests)."""
    err = err or sys.stderr
    count = 0
    failing = False
    while polls is None or count < polls:
        count += 1
        began = time.monotonic()
        try:
            records = follower.poll()
        except Exception as exc:
            if not failing:  # say it once, keep trying: the stack may be restarting
                print(f"tail: {bucket_reader.describe(exc, follower.bucket.name)}; retrying", file=err, flush=True)
            failing = True
            records = []
        else:
            if failing:
                print("tail: reading again", file=err, flush=True)
            failing = False
        write(records, filters, out, as_json)
        time.sleep(max(0.0, interval - (time.monotonic() - began)))


def write(records: Iterable[dict[str, Any]], filters: Filters, out: TextIO, as_json: bool) -> None:
    lines = [
        json.dumps(r, ensure_ascii=False, separators=(",", ":")) if as_json else readable(r)
        for r in records
        if filters.match(r)
    ]
    if lines:
        out.write("\n".join(lines) + "\n")
        out.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tail.py", description="Follow the access-log records as they land in the bucket, one line each."
    )
    parser.add_argument("--status", type=parse_status, help="only these statuses or classes: 5xx, 404, 4xx,503")
    parser.add_argument("--path", help="only request URIs that start with this, e.g. /v1/")
    parser.add_argument(
        "--client", type=parse_client, action="append", help="only this address or network (repeatable)"
    )
    parser.add_argument("--json", action="store_true", help="print each record as stored, one JSON object a line")
    parser.add_argument("--interval", type=_seconds, default=0.5, help="seconds between polls (default %(default)s)")
    parser.add_argument(
        "--lag",
        type=_seconds,
        default=120.0,
        help="seconds after its first record's arrival an object may still land and be shown (default %(default)s)",
    )
    parser.add_argument(
        "--hours",
        type=int,
        choices=range(1, 25),
        default=1,
        metavar="N",
        help="also follow requests logged up to N hours ago (default 1)",
    )
    bucket_reader.add_target_arguments(parser)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be 0.05 to 3600 seconds")
    return value


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    filters = Filters(args.status or [], args.path, args.client or [])
    try:
        client = bucket_reader.s3_client(None if args.aws else args.endpoint_url, args.region, args.workers)
        bucket = Bucket(client, args.bucket)
        client.head_bucket(Bucket=args.bucket)  # one clear error before following
        follower = Follower(bucket, timedelta(seconds=args.lag), args.hours, workers=min(args.workers, 16))
        follower.start()
        print(f"tail: following s3://{args.bucket} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        follow(follower, filters, out, args.json, args.interval)
        return 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if args.debug:
            raise
        print(f"tail: error: {bucket_reader.describe(exc, args.bucket)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
