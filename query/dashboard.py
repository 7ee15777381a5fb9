#!/usr/bin/env python3
"""The dashboard: a static page and a small JSON API of fixed, parameterised queries.

    python3 query/dashboard.py --host 127.0.0.1 --port 8081   # then open http://127.0.0.1:8081/

The page (query/static/) asks the API every few seconds; the API answers from the same
reader and tables as `./start.sh query` (query/logs_query.py): hour prefixes listed and
read through the compaction manifests, lines loaded into DuckDB with the record schema.
Unlike the query tool, the tables stay loaded between requests: each refresh lists the
window's hours and reads only the objects it has not read yet, so a refresh over an hour
of 200 req/s costs a listing, not 720,000 lines (bench/dashboard_bench.py measures it).

The page never sends SQL: each endpoint runs one fixed statement whose only inputs are
bound parameters from a closed set (the window) or checked integers (limits). Anything
else is a 400 with a one-line JSON message.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import re
import shutil
import socket
import socketserver
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import bucket_reader
import logs_query
import tail
from bucket_reader import LocalCopies, Missing, manifest_objects, objects_to_read, read_manifest, read_object
from logs_query import ERROR_COLUMNS, ERROR_PREFIX, LOG_COLUMNS, Bucket, Sink

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
# where the image puts uPlot (query/Dockerfile); in a checkout, `npm ci` in query/assets
VENDOR_DIRS = (STATIC / "vendor", HERE / "assets" / "node_modules" / "uplot" / "dist")
DEFAULT_PORT = 8081

# window -> (length, chart bucket): at most 97 points a series (96 and a partial one)
WINDOWS: dict[str, tuple[timedelta, int]] = {
    "15m": (timedelta(minutes=15), 60),
    "1h": (timedelta(hours=1), 60),
    "6h": (timedelta(hours=6), 300),
    "24h": (timedelta(hours=24), 900),
}
TOP_BY = {
    # the same path expression as the query tool's summary ("Top paths")
    "path": '"_path"',  # logs_query.PATH (the summary's), computed once per row as it is loaded
    "agent": "coalesce(http_user_agent, '-')",
    "client": "coalesce(remote_addr, '-')",
}
MAX_LIMIT = 100
MAX_EXAMPLES = 10
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
NO_LATENCY = "no request times in these logs"
KEEP = timedelta(hours=25)  # hours older than the longest window are dropped from memory
# An object lands at most LAG after its first record's arrival (as ./start.sh tail assumes);
# a full listing of each hour every FULL_LISTING seconds catches any later one.
LAG = timedelta(minutes=2)
FULL_LISTING = 60.0
HOUR = "%Y/%m/%d/%H/"  # an hour's prefix; a sync reads whole hours
ATTEMPTS = 5  # listings of an hour whose objects keep vanishing before a sync gives up
# DuckDB (1.4+) checkpoints an in-memory database inside the statement that writes past
# `checkpoint_threshold` (16 MiB): every ~126,000 rows one refresh's load took 0.3-0.6 s
# more, 1.1 s under traffic. The dashboard turns that off and checkpoints after an answer
# went out, once TIDY_BYTES of lines were loaded or rows deleted: ~0.1 s that no answer
# waits for, and less memory (docs/performance.md, bench/dashboard_load_bench.py).
CHECKPOINT_THRESHOLD = "100GB"
TIDY_BYTES = 64 << 20


class BadRequest(ValueError):
    """A parameter the API does not take: answered with 400 and this message."""


# --- the tables: loaded once, topped up per refresh ----------------------------------


@dataclass
class Hour:
    """What is loaded of one hour prefix (`YYYY/MM/DD/HH/` or `errors/...`)."""

    loaded: dict[str, str] = field(default_factory=dict)  # key -> ETag when it was read
    objects: int = 0
    bytes: int = 0
    listing: dict[str, tuple[int, str]] = field(default_factory=dict)  # key -> (size, ETag)
    listed_at: float = 0.0  # monotonic time of the last full listing
    named: list[str] = field(default_factory=list)  # the manifest's objects, as last loaded
    sources: set[str] = field(default_factory=set)  # the manifest's sources, as last loaded


class Store:
    """The window's records in DuckDB, read from the bucket as the query tool reads them."""

    def __init__(
        self,
        bucket: Bucket,
        workers: int = 16,
        clock: Callable[[], datetime] | None = None,
        memory_limit: str = "1GB",
        local: LocalCopies | None = None,
    ) -> None:
        self.bucket = bucket
        self.local = local  # verified copies on this machine (the saved logs) before GETs
        self.workers = workers
        self.clock = clock or (lambda: datetime.now(UTC))
        self.tmp = Path(tempfile.mkdtemp(prefix="dashboard_"))
        self.con = logs_query.connect()
        # a day at 200 req/s is 17 M rows: past this much memory DuckDB moves data to disk
        self.con.execute("SET memory_limit = ?", [memory_limit])
        self.con.execute("SET temp_directory = ?", [str(self.tmp / "spill")])
        self.con.execute("SET checkpoint_threshold = ?", [CHECKPOINT_THRESHOLD])
        # Files only from its own folder, settings fixed: the query socket runs a user's SELECT
        # on this connection, which must reach no other file (as the query tool's cannot).
        self.con.execute("SET allowed_directories = [?]", [str(self.tmp) + os.sep])
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")
        self.con.execute(
            f'CREATE TABLE logs_all ({logs_query._columns_sql(LOG_COLUMNS)}, "_hour" VARCHAR, "_path" VARCHAR)'
        )
        self.con.execute(f'CREATE TABLE errors_all ({logs_query._columns_sql(ERROR_COLUMNS)}, "_hour" VARCHAR)')
        # request ids held more than once (fluentd's re-sends): the only rows an answer on
        # the query socket numbers to keep one per request, not every row of the range
        self.con.execute("CREATE TABLE resent_ids (request_id VARCHAR)")
        self.hours: dict[str, Hour] = {}
        self.lock = threading.Lock()
        self.synced: tuple[float, datetime] | None = None  # (monotonic time it began, window start)
        # the same of the last sync that listed every hour in full (the query socket's)
        self.synced_in_full: tuple[float, datetime] | None = None
        # Answers take their cursors from this one, under a lock of its own: a refresh
        # holding the store's lock does not hold up an answer that can use what is loaded.
        self.readers = self.con.cursor()
        self.readers_lock = threading.Lock()
        self.reads = 0  # objects read so far
        self.untidy = 0  # bytes of lines loaded since the last checkpoint (TIDY_BYTES: deleted rows)
        self.rereads = 0  # hours read again in full (an object rewritten, a compaction not adopted)
        self.manifests: dict[str, tuple[str, Any]] = {}  # manifest key -> (ETag, manifest)

    def close(self) -> None:
        self.readers.close()
        self.con.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def sync(self, start: datetime, max_age: float = 1.0, fresh_after: float | None = None) -> dict[str, float]:
        """Load every object of the hours from `start` to now not loaded yet: at most once
        per `max_age` seconds for a window already covered or, with `fresh_after` (a
        monotonic time), unless a sync that listed the window's hours in full began after
        it; such a sync lists every hour in full, as the query tool does, so even an object
        that landed late is read. Where its time went, in seconds: listing, reading the
        manifests and the new objects, loading them, and waiting for another sync first
        (all 0 but that if it did not run)."""
        called = time.monotonic()
        spent = dict.fromkeys(logs_query.REFRESH_PARTS, 0.0)  # the parts the tool's note names
        if fresh_after is not None and self._fresh(start, fresh_after):  # no wait for a sync running
            return spent
        with self.lock:
            spent["waited"] = time.monotonic() - called
            if fresh_after is not None:
                if self._fresh(start, fresh_after):
                    return spent
            elif self.synced and self.synced[1] <= start and time.monotonic() - self.synced[0] < max_age:
                return spent
            began = time.monotonic()
            now = self.clock()
            hours = logs_query.hour_prefixes(start, now + timedelta(minutes=5))
            prefixes = [h + "/" for h in hours] + [ERROR_PREFIX + h + "/" for h in hours]
            full = fresh_after is not None
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                for attempt in range(ATTEMPTS):
                    listing_began = time.monotonic()
                    listings = list(pool.map(lambda p, full=full: self._listing(p, now, full), prefixes))
                    spent["listing"] += time.monotonic() - listing_began
                    # an hour where an object vanished (a compaction ran meanwhile) is listed again
                    prefixes = [p for p, k in zip(prefixes, listings, strict=True) if not self._load(pool, p, k, spent)]
                    if not prefixes:
                        break
                    full = True
                    time.sleep(0.05 * (attempt + 1))
            self._forget(now - KEEP)
            if prefixes:  # their rows stay as last loaded: complete up to an earlier moment
                raise logs_query.Failure(f"objects kept vanishing while reading hours {', '.join(prefixes)}")
            self.synced = (began, start)
            if fresh_after is not None:
                self.synced_in_full = (began, start)
            return spent

    def _fresh(self, start: datetime, after: float) -> bool:
        """Whether a sync that listed every hour from `start`'s on in full began after `after`."""
        done = self.synced_in_full  # one read: a sync in another thread replaces it whole
        return done is not None and done[0] >= after and done[1].strftime(HOUR) <= start.strftime(HOUR)

    def answer_cursor(self) -> Any:
        """A cursor of its own for an answer, without waiting for a sync running."""
        with self.readers_lock:
            return self.readers.cursor()

    def tidy(self) -> float | None:
        """Checkpoint DuckDB if TIDY_BYTES of lines were loaded, or rows deleted, since the
        last checkpoint; its seconds, or None if not due. Called once an answer went out."""
        if self.untidy < TIDY_BYTES:  # most answers: not due, and no wait behind another's sync
            return None
        with self.lock:
            if self.untidy < TIDY_BYTES:  # another answer's tidy ran meanwhile
                return None
            began = time.monotonic()
            try:
                self.con.execute("CHECKPOINT")
            except Exception as exc:  # a failed checkpoint costs memory, not an answer: next time
                print(f"dashboard: checkpoint failed, tried again later: {exc}", file=sys.stderr, flush=True)
                return None
            self.untidy = 0
            return time.monotonic() - began

    def holds(self, start: datetime) -> bool:
        """Whether the hours from `start` on are loaded (a window shown since reached back)."""
        with self.lock:
            return bool(self.synced) and start.strftime(HOUR) in self.hours

    def _list(self, prefix: str, start_after: str = "") -> dict[str, tuple[int, str]]:
        return {item["Key"]: (item["Size"], item.get("ETag", "")) for item in self.bucket.listed(prefix, start_after)}

    def _listing(self, prefix: str, now: datetime, full: bool = False) -> dict[str, int]:
        """The hour's keys and sizes. A full listing at first and every FULL_LISTING seconds;
        in between only the keys of objects that arrived in the last LAG (the function names
        objects by their first record's arrival, see query/tail.py), added to the last full
        listing. Until a compaction's manifest shows in a full listing, the hour is read
        from the objects it replaces, which were read already: its counts stay right."""
        hour = self.hours.get(prefix)
        if hour is not None and not full and time.monotonic() - hour.listed_at < FULL_LISTING:
            hour.listing.update(self._list(prefix, prefix + tail.KEY_NAME + tail.stamp(now - LAG)))
            return {key: size for key, (size, _) in hour.listing.items()}
        listing = self._list(prefix)
        hour = self.hours.setdefault(prefix, Hour())
        hour.listing, hour.listed_at = listing, time.monotonic()
        return {key: size for key, (size, _) in listing.items()}

    def _load(self, pool: ThreadPoolExecutor, prefix: str, listing: dict[str, int], spent: dict[str, float]) -> bool:
        """Read the hour's objects not loaded yet, then change its rows in one transaction;
        False (nothing changed) if one vanished before it was read. Adds the seconds its
        manifest, reads and load took to `spent`."""
        table = "errors_all" if prefix.startswith(ERROR_PREFIX) else "logs_all"
        asked = time.monotonic()
        manifest = read_manifest(self.bucket, prefix, list(listing), self.manifests)
        spent["manifests"] += time.monotonic() - asked
        plan = objects_to_read(listing, manifest)
        hour = self.hours.setdefault(prefix, Hour())
        etags = {key: etag for key, (_, etag) in hour.listing.items()}
        # Compacted since (an object read is no longer to be read) and not adoptable, or an
        # object read was rewritten (the function trims an object after a failed put, and
        # its retry writes the trimmed lines anew): read the hour again.
        rewritten = any(etag and etags.get(key, etag) != etag for key, etag in hour.loaded.items())
        named = manifest_objects(manifest)
        sources = set(manifest["sources"]) if manifest else set()
        loaded = None if rewritten else self._adopted(hour, plan, named, sources, etags)
        new = [key for key in plan if key not in (loaded or {})]
        again = loaded is None and bool(hour.loaded)
        reading = time.monotonic()
        try:
            read = pool.map(lambda key: read_object(self.bucket, key, etags.get(key), self.local), new)
            bodies = [body for body, _ in read]
        except Missing:
            return False
        finally:
            loading = time.monotonic()
            spent["reading"] += loading - reading
        self.con.execute("BEGIN TRANSACTION")  # a query sees the hour before or after, whole
        try:
            if loaded is None:
                self.con.execute(f'DELETE FROM {table} WHERE "_hour" = ?', [prefix])  # noqa: S608 - constant names
                self.untidy = max(self.untidy, TIDY_BYTES)  # their space comes back at a checkpoint
            if bodies:
                self._insert(table, prefix, bodies)
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        finally:
            spent["loading"] += time.monotonic() - loading
        hour.loaded = {**(loaded or {}), **{key: etags.get(key, "") for key in new}}
        hour.objects = len(plan)
        hour.bytes = sum(listing.get(key, 0) for key in plan)
        hour.named, hour.sources = named, sources
        self.reads += len(new)
        self.rereads += again
        return True

    def _insert(self, table: str, prefix: str, bodies: list[bytes]) -> None:
        stem = self.tmp / "batch"
        plain_file, gzip_file = stem.with_suffix(".jsonl"), stem.with_suffix(".jsonl.gz")
        with plain_file.open("wb") as plain, gzip_file.open("wb") as gzipped:
            sink = Sink(plain, gzipped)
            for body in bodies:
                sink.write(body)
        files = [str(f) for f in (plain_file, gzip_file) if f.stat().st_size]
        self.untidy += sum(len(body) for body in bodies)
        if table == "logs_all":
            self.con.execute(
                # built from logs_query's constants only; values are parameters
                f"""CREATE OR REPLACE TEMP TABLE batch AS SELECT *, ? AS "_hour", {logs_query.PATH} AS "_path"
                    FROM read_json(?, format = 'newline_delimited', columns = {logs_query._struct_sql(LOG_COLUMNS, {})},
                                   timestampformat = '%Y-%m-%dT%H:%M:%SZ')""",  # noqa: S608
                [prefix, files],
            )
            self.con.execute("INSERT INTO logs_all SELECT * FROM batch")
            self.con.execute(
                """INSERT INTO resent_ids SELECT request_id FROM logs_all
                   WHERE request_id IN (SELECT request_id FROM batch WHERE request_id IS NOT NULL)
                   GROUP BY request_id HAVING count(*) > 1
                   EXCEPT SELECT request_id FROM resent_ids"""
            )
            self.con.execute("DROP TABLE batch")
        else:
            names = ", ".join(f'"{n}"' for n in ERROR_COLUMNS if n != "approximateArrivalTimestamp")
            struct = logs_query._struct_sql(ERROR_COLUMNS, {"approximateArrivalTimestamp": "DOUBLE"})
            self.con.execute(
                f"""INSERT INTO errors_all SELECT {names},
                        to_timestamp("approximateArrivalTimestamp")::TIMESTAMP, ?
                    FROM read_json(?, format = 'newline_delimited', columns = {struct})""",  # noqa: S608
                [prefix, files],
            )

    @staticmethod
    def _adopted(
        hour: Hour, plan: list[str], named: list[str], sources: set[str], etags: dict[str, str]
    ) -> dict[str, str] | None:
        """What counts as loaded of the hour now, or None: read it again.

        Nothing left the plan: what was loaded. A compaction that ran since the last load
        is taken without reading the hour again: its new objects hold the lines of what it
        took in (raw objects now among the manifest's sources, compacted objects it no
        longer names). When all of those were loaded, the rows are already right (a re-sent
        copy it dropped is dropped by the windows' dedupe too), so the new objects count as
        loaded, unread. The rolling compactor (compact_hours.py --follow) changes the open
        hour every pass.
        """
        gone = set(hour.loaded) - set(plan)
        if not gone:
            return dict(hour.loaded)
        taken = (sources - hour.sources) | (set(hour.named) - set(named))
        if not taken <= set(hour.loaded) or not gone <= taken:
            return None
        loaded = {key: etag for key, etag in hour.loaded.items() if key not in gone}
        loaded.update((key, etags.get(key, "")) for key in named if key not in loaded)
        return loaded

    def _forget(self, before: datetime) -> None:
        oldest = before.strftime(HOUR)
        gone = [p for p in self.hours if p.removeprefix(ERROR_PREFIX) < oldest]
        for prefix in gone:
            table = "errors_all" if prefix.startswith(ERROR_PREFIX) else "logs_all"
            self.con.execute(f'DELETE FROM {table} WHERE "_hour" = ?', [prefix])  # noqa: S608 - constant names
            self.untidy = max(self.untidy, TIDY_BYTES)
            del self.hours[prefix]
            self.manifests.pop(prefix + bucket_reader.MANIFEST_NAME, None)
        if any(not prefix.startswith(ERROR_PREFIX) for prefix in gone):  # once, after the records' rows went
            self.con.execute(
                """DELETE FROM resent_ids WHERE request_id NOT IN (
                       SELECT request_id FROM logs_all WHERE request_id IN (SELECT request_id FROM resent_ids)
                       GROUP BY request_id HAVING count(*) > 1)"""
            )

    def query(self, sql: str, params: list[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        """One fixed statement over `logs` and `errors` of [start, end) (the first two params)."""
        with self.lock:
            cursor = self.con.cursor()
        try:
            cursor.execute(sql, params)
            return [d[0] for d in cursor.description], cursor.fetchall()
        finally:
            cursor.close()


# The window's rows under the query tool's table names, so each panel's SQL reads as it
# would in ./start.sh query; the first two parameters are the window's bounds.
# Each request once: a re-sent line (same request_id) is the query tool's one row too.
WINDOWED = f"""WITH logs AS (SELECT * EXCLUDE ("_hour") FROM logs_all WHERE "timestamp" >= ? AND "timestamp" < ?
                {logs_query._ONE_PER_REQUEST.strip()}),
     errors AS (SELECT * EXCLUDE ("_hour") FROM errors_all
                WHERE "approximateArrivalTimestamp" >= ? AND "approximateArrivalTimestamp" < ?)
"""  # noqa: S608 - this module's and logs_query's constants only


# --- the panels: fixed SQL, parameters only ------------------------------------------


@dataclass(frozen=True)
class Window:
    name: str
    start: datetime
    end: datetime
    bucket: int

    @property
    def bounds(self) -> list[Any]:
        begin, finish = self.start.replace(tzinfo=None), self.end.replace(tzinfo=None)
        return [begin, finish, begin, finish]

    def buckets(self) -> list[int]:
        first = int(self.start.timestamp()) // self.bucket * self.bucket
        return list(range(first, int(self.end.timestamp()), self.bucket))

    def describe(self) -> dict[str, Any]:
        return {"window": self.name, "start": _iso(self.start), "end": _iso(self.end), "bucket_seconds": self.bucket}


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def traffic(store: Store, window: Window) -> dict[str, Any]:
    """Requests per chart bucket by status class, totals, and the 5xx rate."""
    _, rows = store.query(
        WINDOWED  # noqa: S608 - constants only; values are parameters
        + """SELECT epoch("timestamp")::BIGINT // ? AS t, status // 100 AS class, count(*)
             FROM logs GROUP BY ALL""",
        [*window.bounds, window.bucket],
    )
    times = window.buckets()
    index = {t: i for i, t in enumerate(times)}
    series = {c: [0] * len(times) for c in CLASSES}
    totals = dict.fromkeys(CLASSES, 0)
    for bucket, hundreds, n in rows:
        t, cls = bucket * window.bucket, f"{hundreds}xx"
        cls = cls if cls in series else "other"
        series.setdefault(cls, [0] * len(times))
        totals[cls] = totals.get(cls, 0) + n
        if t in index:
            series[cls][index[t]] += n
    per_bucket = [sum(s[i] for s in series.values()) for i in range(len(times))]
    requests = sum(totals.values())
    return {
        **window.describe(),
        "times": times,
        "classes": series,
        "totals": totals,
        "requests": requests,
        "rate_5xx": [round(series["5xx"][i] / n, 4) if n else None for i, n in enumerate(per_bucket)],
        "rate_5xx_total": round(totals["5xx"] / requests, 4) if requests else None,
    }


def latency(store: Store, window: Window) -> dict[str, Any]:
    """p50/p95/p99 of request_time per bucket, where the records carry it."""
    base = {**window.describe(), "times": [], "p50": [], "p95": [], "p99": []}
    if "request_time" not in LOG_COLUMNS:
        return {**base, "available": False, "message": NO_LATENCY}
    _, rows = store.query(
        WINDOWED  # noqa: S608 - constants only
        + """SELECT (epoch("timestamp")::BIGINT // ?) * ? AS t,
                    quantile_cont(request_time, [0.5, 0.95, 0.99]) AS q, count(request_time) AS n
             FROM logs GROUP BY 1 HAVING count(request_time) > 0 ORDER BY 1""",
        [*window.bounds, window.bucket, window.bucket],
    )
    if not rows:
        return {**base, "available": False, "message": NO_LATENCY}
    return {
        **base,
        "available": True,
        "times": [t for t, _, _ in rows],
        "p50": [float(q[0]) for _, q, _ in rows],
        "p95": [float(q[1]) for _, q, _ in rows],
        "p99": [float(q[2]) for _, q, _ in rows],
        "samples": sum(n for _, _, n in rows),
    }


def top(store: Store, window: Window, by: str, limit: int) -> dict[str, Any]:
    """The most frequent paths, user agents or clients, with their error (>= 400) counts."""
    expression = TOP_BY[by]  # a key of a constant table, checked by the caller
    _, rows = store.query(
        WINDOWED  # noqa: S608 - constants only
        + f"""SELECT {expression} AS value, count(*) AS requests, count(*) FILTER (WHERE status >= 400) AS errors
              FROM logs GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?""",  # noqa: S608
        [*window.bounds, limit],
    )
    return {**window.describe(), "by": by, "rows": [{"value": v, "requests": n, "errors": e} for v, n, e in rows]}


def unparsed(store: Store, window: Window, examples: int) -> dict[str, Any]:
    """The errors table by error code, with the newest few lines of each."""
    _, rows = store.query(
        WINDOWED  # noqa: S608 - constants only
        + """SELECT "errorCode", count(*) AS lines,
                    list("rawData" ORDER BY "approximateArrivalTimestamp" DESC)[1:?] AS raw,
                    max("approximateArrivalTimestamp") AS newest
             FROM errors GROUP BY 1 ORDER BY 2 DESC, 1""",
        [*window.bounds, examples],
    )
    codes = [
        {"code": code, "lines": n, "newest": _iso(newest.replace(tzinfo=UTC)), "examples": [_shown(r) for r in raw]}
        for code, n, raw, newest in rows
    ]
    return {**window.describe(), "total": sum(c["lines"] for c in codes), "codes": codes}


def _shown(raw: str | None, width: int = 200) -> str:
    """An unparsed line as text for the page (its bytes are kept in base64)."""
    try:
        text = base64.b64decode(raw or "").decode("utf-8", "backslashreplace")
    except ValueError:
        text = raw or ""
    text = text.rstrip("\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def pipeline(store: Store, window: Window, function: FunctionLog | None, saved: SavedLogs | None) -> dict[str, Any]:
    """Freshness, objects and bytes per hour, the function's failures, the saved logs."""
    _, ((newest,),) = store.query(WINDOWED + 'SELECT max("timestamp") FROM logs_all', window.bounds)  # noqa: S608
    now = store.clock()
    hours = [
        {"hour": prefix.removesuffix("/"), "objects": hour.objects, "bytes": hour.bytes}
        for prefix, hour in sorted(store.hours.items())
        if not prefix.startswith(ERROR_PREFIX) and prefix >= window.start.strftime(HOUR)
    ]
    return {
        **window.describe(),
        "newest_record": _iso(newest.replace(tzinfo=UTC)) if newest else None,
        "freshness_seconds": round((now - newest.replace(tzinfo=UTC)).total_seconds(), 1) if newest else None,
        "hours": hours,
        "function": function.recent(window.start) if function else {"available": False, "message": "not configured"},
        "saved": saved.state(store.bucket.name) if saved else {"available": False, "message": "not mounted here"},
    }


class FunctionLog:
    """The function's recent batches from its CloudWatch log group (LocalStack's logs)."""

    def __init__(self, logs: Any, function: str) -> None:
        self.logs = logs
        self.group = f"/aws/lambda/{function}"

    def recent(self, since: datetime, limit: int = 2000) -> dict[str, Any]:
        batches = failed = 0
        failures: list[dict[str, Any]] = []
        try:
            pages = self.logs.get_paginator("filter_log_events").paginate(
                logGroupName=self.group, startTime=int(since.timestamp() * 1000), PaginationConfig={"MaxItems": limit}
            )
            for page in pages:
                for event in page.get("events", []):
                    message = event.get("message", "")
                    try:
                        line = json.loads(message)
                    except ValueError:
                        line = None
                    if isinstance(line, dict) and line.get("message") == "batch processed":
                        batches += 1
                        if line.get("putFailures") or line.get("retryFrom"):
                            failed += 1
                            failures.append({"at": event["timestamp"], "text": message.strip()[:300]})
                    elif any(word in message for word in ("ERROR", "Traceback", "Task timed out")):
                        failed += 1
                        failures.append({"at": event["timestamp"], "text": message.strip()[:300]})
        except Exception as exc:
            if type(exc).__name__ == "ResourceNotFoundException":
                return {
                    "available": True,
                    "batches": 0,
                    "failed": 0,
                    "recent": [],
                    "message": "the function has not run",
                }
            return {"available": False, "message": f"its log is not readable: {logs_query.describe(exc, '')}"}
        recent = [{"at": _iso(datetime.fromtimestamp(f["at"] / 1000, UTC)), "text": f["text"]} for f in failures[-5:]]
        return {"available": True, "batches": batches, "failed": failed, "recent": recent}


class SavedLogs:
    """The saved-logs folder (init/bucket_mirror.py's copy), mounted read-only; counted at
    most every `max_age` seconds (a day at 200 req/s is ~90,000 files)."""

    def __init__(self, root: Path, max_age: float = 30.0) -> None:
        self.root = root
        self.max_age = max_age
        self.cached: tuple[float, dict[str, Any]] | None = None

    def state(self, bucket: str) -> dict[str, Any]:
        if self.cached and time.monotonic() - self.cached[0] < self.max_age:
            return self.cached[1]
        folder = self.root / bucket
        if not folder.is_dir():
            answer: dict[str, Any] = {"available": True, "files": 0, "bytes": 0, "message": "nothing saved yet"}
        else:
            files = size = 0
            newest = 0.0
            for directory, _, names in os.walk(folder):
                for name in names:
                    if name.startswith(".saving-"):
                        continue
                    stat = Path(directory, name).stat()
                    files, size, newest = files + 1, size + stat.st_size, max(newest, stat.st_mtime)
            answer = {
                "available": True,
                "files": files,
                "bytes": size,
                "newest_saved": _iso(datetime.fromtimestamp(newest, UTC)) if files else None,
            }
        self.cached = (time.monotonic(), answer)
        return answer


# --- the query socket: ./start.sh query answered from the loaded tables ---------------

# The query tool (logs_query.py --socket) sends its range and SQL here when the dashboard
# runs: the window's rows are already in memory, so an answer costs a refresh and the SQL,
# not a process start and the hour's objects (docs/performance.md). Only SELECT runs here;
# the tool answers anything else itself, as it would without a dashboard.
# Ranges it holds, or that start within the last hour and a bit (the page's default
# window): an older range would make it load every hour from there to now and keep them.
RECENT = timedelta(minutes=65)
# An older range of at most OLDER_HOURS hour prefixes (a closed hour, say) is read here as
# the tool reads it, into a connection of its own that goes with the answer, one such
# answer at a time: the tool's docker exec, process and imports were ~0.5-0.9 s of a closed
# hour's 2 s (docs/performance.md). A longer one is left to the tool's own process.
OLDER_HOURS = 2
MAX_REQUEST = 1 << 20
# An answer holds every object that was in the bucket FRESH s before the question came: a
# full listing begun since then is used as it is (the goal allows 2 s, docs/performance.md).
# While questions come (within READ_AHEAD_FOR), the dashboard lists the range asked in
# full every READ_AHEAD_EVERY s, so an answer is mostly its SQL; an idle one lists nothing.
FRESH = 1.5
READ_AHEAD_EVERY = 1.0
READ_AHEAD_FOR = 120.0  # an interactive session; a bench asks every 30 s
# a SELECT that lists tables would see the dashboard's own: left to the query tool
CATALOG = re.compile(r"\b(show|duckdb_\w*|information_schema|pragma\w*|sqlite_master)\b", re.IGNORECASE)


class Declined(Exception):
    """A request this service leaves to the query tool (it then reads the bucket itself)."""


@dataclass
class QueryService:
    store: Store
    target: dict[str, str | None]  # bucket, endpoint (None on AWS), region: a request must match
    asked: float = float("-inf")  # monotonic time of the last question
    reach: timedelta = timedelta(0)  # how far back the questions since the read-ahead began reach
    older: threading.Lock = field(default_factory=threading.Lock)  # one older range read at a time

    def answer(self, request: Any, arrived: float) -> tuple[dict[str, Any], str]:
        """(header, output): the query tool's output for this request, or an error."""
        sql, fmt, start, end = self._checked(request)
        older = start < self.store.clock() - RECENT and not self.store.holds(start)
        if older and len(bucket_reader.hour_prefixes(start, end)) > OLDER_HOURS:
            raise Declined(
                f"a range older than the last hour and longer than {OLDER_HOURS} hours is read from the bucket"
            )
        if not older:  # an older range is read once, not kept: nothing to read ahead
            reach = min(max(self.store.clock() - start, timedelta(0)), RECENT)
            self.reach = reach if arrived - self.asked > READ_AHEAD_FOR else max(self.reach, reach)
            self.asked = max(self.asked, arrived)
        try:
            statements = [] if sql is None else logs_query.duckdb_statements(sql)
        except logs_query.Failure as exc:
            return {"error": str(exc)}, ""
        if any(kind != "SELECT" for kind in statements) or CATALOG.search(sql or ""):
            raise Declined("it answers SELECT over logs and errors only")
        if older:
            return self._read_older(sql, fmt, start, end)
        before, rereads, began = self.store.reads, self.store.rereads, time.monotonic()
        spent = self.store.sync(start, fresh_after=arrived - FRESH)
        read, refreshed = self.store.reads - before, time.monotonic()
        listed = self.store.synced_in_full[0] if self.store.synced_in_full else began
        again = self.store.rereads - rereads
        cursor = self.store.answer_cursor()
        out = io.StringIO()
        try:
            cursor.execute("BEGIN TRANSACTION")  # one snapshot for every statement of the answer
            for statement in _range_tables(start, end, with_path=sql is None):
                cursor.execute(statement)
            if sql is None:  # its path statements group the stored paths: no split_part per row
                logs_query.summary(cursor, out, start, end, path='"_path"')
            else:
                columns, rows = logs_query.run_sql(cursor, sql)
                logs_query.write_result(columns, rows, fmt, out)
        except logs_query.Failure as exc:
            return {"error": str(exc)}, ""
        finally:
            cursor.close()  # its transaction and temporary tables go with it
        timings = {
            "refresh": round(refreshed - began, 3),
            **{part: round(seconds, 3) for part, seconds in spent.items()},
            "reread": again,
            "sql": round(time.monotonic() - refreshed, 3),
            "listed_before": round(max(0.0, arrived - listed), 3),  # what the answer holds: FRESH
        }
        return {"read": read, **timings}, out.getvalue()

    def _read_older(self, sql: str | None, fmt: str, start: datetime, end: datetime) -> tuple[dict[str, Any], str]:
        """An older range as the query tool reads it (logs_query.query: the saved logs
        first, then S3), in a DuckDB of its own, closed with the answer."""
        out, began = io.StringIO(), time.monotonic()
        with self.older:
            try:
                fetched = logs_query.query(
                    self.store.bucket, start, end, sql, fmt, out, self.store.workers, self.store.local
                )
            except logs_query.Failure as exc:
                return {"error": str(exc)}, ""
            if self.store.local is not None:
                self.store.local.trim()  # a cache of fetched objects, as the tool keeps it
        return {
            "older": {
                "objects": fetched.objects,
                "local": fetched.local if self.store.local is not None else None,
                "bytes": fetched.bytes,
                "bucket": self.store.bucket.name,
                "seconds": round(time.monotonic() - began, 3),
            }
        }, out.getvalue()

    def answer_command(self, argv: list[str], arrived: float) -> tuple[int, str, str]:
        """logs_query.py's arguments (./start.sh query's, on the loopback port) answered
        as the tool would print them: (200, note, output) or (422, "", its error line).
        Declined for anything else, --help and every mistake in them included: the tool
        then runs as it would without this, and says what is wrong in its own words."""
        parser = logs_query.build_parser()
        parser.error = parser.exit = _declining  # type: ignore[method-assign]
        parser.print_help = parser.print_usage = lambda file=None: None  # type: ignore[method-assign]
        args, start, end = logs_query.parse_args(parser, argv)
        header, text = self.answer(logs_query.dashboard_request(args, start, end), arrived)
        if "error" in header:
            return 422, "", f"logs_query: error: {header['error']}\n"
        return 200, "" if args.quiet else logs_query.answered_note(header, time.monotonic() - arrived), text

    def read_ahead(self, stop: threading.Event, every: float = READ_AHEAD_EVERY) -> None:
        """Until `stop`: while a question came within READ_AHEAD_FOR, list the range the
        questions reach in full and read what is new, a sync begun every `every` s. A
        failure is said once (LocalStack restarting); the next question syncs itself."""
        said, due = "", time.monotonic()
        while not stop.wait(max(0.0, due - time.monotonic())):
            now = time.monotonic()
            due = now + every
            if now - self.asked > READ_AHEAD_FOR:
                continue
            try:
                self.store.sync(self.store.clock() - self.reach, fresh_after=now)
                problem = ""
            except Exception as exc:  # the loop goes on
                problem = logs_query.describe(exc, self.store.bucket.name)
            if problem and problem != said:
                print(f"dashboard: reading ahead: {problem}", file=sys.stderr, flush=True)
            said = problem

    def _checked(self, request: Any) -> tuple[str | None, str, datetime, datetime]:
        if not isinstance(request, dict) or request.get("version") != 1:
            raise Declined("not a request of this version")
        for name, value in self.target.items():
            if request.get(name) != value:
                raise Declined(f"it reads another {name} ({value})")
        sql, fmt = request.get("sql"), request.get("format")
        if not (sql is None or isinstance(sql, str)) or fmt not in ("table", "csv", "json"):
            raise Declined("malformed request")
        try:
            start, end = (datetime.fromisoformat(request[k]).astimezone(UTC) for k in ("start", "end"))
        except (KeyError, TypeError, ValueError):
            raise Declined("malformed range") from None
        now = self.store.clock()
        if end > now + timedelta(minutes=5) or start >= end:
            raise Declined("the range ends in the future")
        return sql, fmt, start, end


def _declining(*_: Any, **__: Any) -> Any:
    raise Declined("arguments it leaves to the tool")


def _range_tables(start: datetime, end: datetime, with_path: bool = False) -> list[str]:
    """`logs` and `errors` of [start, end) for one cursor, as the query tool loads them:
    rows in the range, one per request_id (the first loaded; ids never repeat otherwise,
    and both copies of a re-sent line carry its one timestamp: in the range or not).
    `with_path`: `logs` also has the stored "_path", for the summary (a user's SQL sees
    the tool's columns only)."""
    hidden = '"_hour"' if with_path else '"_hour", "_path"'
    begin, finish = (f"TIMESTAMP '{t.replace(tzinfo=None).isoformat(sep=' ')}'" for t in (start, end))
    in_range = f'"timestamp" >= {begin} AND "timestamp" < {finish}'
    return [
        f"""CREATE TEMP TABLE _resent AS SELECT rowid AS r FROM main.logs_all
            WHERE {in_range} AND request_id IN (SELECT request_id FROM main.resent_ids)
            QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY rowid) > 1""",  # noqa: S608 - timestamps we format
        f"""CREATE TEMP VIEW logs AS SELECT * EXCLUDE ({hidden}) FROM main.logs_all
            WHERE {in_range} AND rowid NOT IN (SELECT r FROM _resent)""",  # noqa: S608
        f"""CREATE TEMP VIEW errors AS SELECT * EXCLUDE ("_hour") FROM main.errors_all
            WHERE "approximateArrivalTimestamp" >= {begin} AND "approximateArrivalTimestamp" < {finish}""",  # noqa: S608
    ]


class QueryHandler(socketserver.StreamRequestHandler):
    service: QueryService  # set on the subclass made by make_query_server

    def handle(self) -> None:
        arrived = time.monotonic()
        try:
            request = json.loads(self.rfile.readline(MAX_REQUEST) or b"null")
            header, text = self.service.answer(request, arrived)
        except Declined as exc:
            header, text = {"declined": str(exc)}, ""
        except Exception as exc:  # the query tool reads the bucket itself and reports what fails
            header, text = {"declined": logs_query.describe(exc, self.service.store.bucket.name)}, ""
        with contextlib.suppress(OSError):  # the tool went away
            self.wfile.write(json.dumps(header).encode() + b"\n" + text.encode())
            self.wfile.flush()
            self.request.shutdown(socket.SHUT_WR)  # the tool has its answer: then tidy
        self.service.store.tidy()


def make_query_server(service: QueryService, path: Path) -> socketserver.ThreadingUnixStreamServer:
    """Listen on the Unix socket `path` (a folder of its own, this user only)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.is_socket():
        path.unlink()  # left by a dashboard that stopped without closing it
    handler = type("BoundQueryHandler", (QueryHandler,), {"service": service})
    server = socketserver.ThreadingUnixStreamServer(str(path), handler)
    server.daemon_threads = True
    path.chmod(0o600)
    return server


# --- parameters ----------------------------------------------------------------------

ALLOWED = {
    "/api/traffic": {"window"},
    "/api/latency": {"window"},
    "/api/top": {"window", "by", "limit"},
    "/api/errors": {"window", "examples"},
    "/api/pipeline": {"window"},
}


def parameters(path: str, query: str) -> dict[str, str]:
    """The request's parameters: only the endpoint's own, each once, short."""
    try:
        parsed = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=10)
    except ValueError:
        raise BadRequest("malformed query string") from None
    unknown = sorted(set(parsed) - ALLOWED[path])
    if unknown:
        raise BadRequest(
            f"unknown parameter {unknown[0][:40]!r}; this endpoint takes {', '.join(sorted(ALLOWED[path]))}"
        )
    for name, values in parsed.items():
        if len(values) != 1:
            raise BadRequest(f"parameter {name!r} given {len(values)} times")
    return {name: values[0] for name, values in parsed.items()}


def window_of(params: dict[str, str], now: datetime) -> Window:
    name = params.get("window", "1h")
    if name not in WINDOWS:
        raise BadRequest(f"unknown window {name[:40]!r}; one of {', '.join(WINDOWS)}")
    length, bucket = WINDOWS[name]
    return Window(name, now - length, now, bucket)


def bounded(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name, str(default))
    if not text.isascii() or not text.isdigit() or len(text) > 6 or not low <= int(text) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}, not {text[:40]!r}")
    return int(text)


# --- HTTP ------------------------------------------------------------------------------

STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
    "/vendor/uPlot.iife.min.js": ("vendor:uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "/vendor/uPlot.min.css": ("vendor:uPlot.min.css", "text/css; charset=utf-8"),
}


@dataclass
class App:
    store: Store
    vendor: Path
    function: FunctionLog | None = None
    saved: SavedLogs | None = None
    # POST /api/query: ./start.sh query's arguments, answered by this service when the
    # request names this stack and these sources (QUERY_ASKED_BY's headers)
    queries: QueryService | None = None
    asked_by: dict[str, str] = field(default_factory=dict)

    def api(self, path: str, query: str) -> dict[str, Any]:
        params = parameters(path, query)
        window = window_of(params, self.store.clock())
        if path == "/api/top":
            by = params.get("by", "path")
            if by not in TOP_BY:
                raise BadRequest(f"unknown by {by[:40]!r}; one of {', '.join(TOP_BY)}")
            limit = bounded(params, "limit", 10, 1, MAX_LIMIT)
            self.store.sync(window.start)
            return top(self.store, window, by, limit)
        examples = bounded(params, "examples", 3, 0, MAX_EXAMPLES) if path == "/api/errors" else 0
        self.store.sync(window.start)
        if path == "/api/traffic":
            return traffic(self.store, window)
        if path == "/api/latency":
            return latency(self.store, window)
        if path == "/api/errors":
            return unparsed(self.store, window, examples)
        return pipeline(self.store, window, self.function, self.saved)

    def static(self, path: str) -> tuple[bytes, str] | None:
        entry = STATIC_FILES.get(path)
        if entry is None:
            return None
        name, kind = entry
        file = self.vendor / name.removeprefix("vendor:") if name.startswith("vendor:") else STATIC / name
        return file.read_bytes(), kind


class Handler(BaseHTTPRequestHandler):
    server_version = "dashboard"
    app: App  # set on the subclass made by make_server

    def do_GET(self) -> None:  # http.server's naming
        if not loopback_host(self.headers.get("Host", "")):
            # a page of another site that rebinds its name to 127.0.0.1 must not read the logs
            self._json(403, {"error": "the dashboard answers only for localhost, 127.0.0.1 or [::1]"})
            return
        split = urlsplit(self.path)
        if split.path in ALLOWED:
            try:
                self._json(200, self.app.api(split.path, split.query))
                self.app.store.tidy()
            except BadRequest as exc:
                self._json(400, {"error": str(exc)})
            except Exception as exc:
                self._json(
                    503,
                    {"error": f"the logs could not be read: {logs_query.describe(exc, self.app.store.bucket.name)}"},
                )
            return
        if split.path.startswith("/api/"):
            self._json(404, {"error": f"no endpoint {split.path[:60]!r}; endpoints: {', '.join(ALLOWED)}"})
            return
        if split.path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
            return
        found = self.app.static(split.path)
        if found is None:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")
        else:
            self._send(200, *found)

    def do_POST(self) -> None:
        if self.command != "POST" or urlsplit(self.path).path != "/api/query" or self.app.queries is None:
            self._json(405, {"error": "the dashboard's API only answers GET"})
            return
        arrived = time.monotonic()
        refused = self._refused_query()
        if refused:
            self._send(403, f"{refused}\n".encode(), "text/plain; charset=utf-8")
            return
        try:
            length = int(self.headers.get("Content-Length") or "")
            if not 0 <= length <= MAX_REQUEST:
                raise ValueError
            argv = self.rfile.read(length).decode().split("\0")[:-1]  # each argument ends in NUL
            status, note, text = self.app.queries.answer_command(argv, arrived)
        except (ValueError, Declined) as exc:  # the tool runs instead, and says what is wrong
            status, note, text = 409, "", f"{str(exc) or 'malformed request'}\n"
        except Exception as exc:
            status, note, text = 409, "", logs_query.describe(exc, self.app.store.bucket.name) + "\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body := text.encode())))
        if note:
            self.send_header("X-Logs-Note", note)
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        with contextlib.suppress(OSError):  # the client went away
            self.wfile.write(body)
            self.wfile.flush()
        self.app.store.tidy()

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _refused_query(self) -> str:
        """Why a POST /api/query is not this stack's ./start.sh asking (empty if it is).
        Browsers may not ask at all: a page of another site that rebinds its name to
        127.0.0.1 sends its own Host; every browser's POST carries an Origin; and the
        headers below are not ones a page may send to another site without a preflight
        that this server never grants. A program here that sends them reads no more than
        LocalStack's port gives it (query/README.md)."""
        if not loopback_host(self.headers.get("Host", "")):
            return "the dashboard answers only for localhost, 127.0.0.1 or [::1]"
        if self.headers.get("Origin") is not None:
            return "queries are answered for ./start.sh query, not for a page"
        for name, value in self.app.asked_by.items():
            if self.headers.get(name) != value:
                return f"{name} is not {value!r}: another stack, or other sources of query/"
        return ""

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body, ensure_ascii=False, default=str).encode(), "application/json")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def asked_by(value: str | None) -> dict[str, str]:
    """The headers a POST /api/query must carry, for --query-asked-by STACK:SOURCE; none
    (then no query is answered there) unless both are given: `docker compose up` run by
    hand gives no source."""
    stack, _, source = (value or "").partition(":")
    return {"X-Logs-Stack": stack, "X-Logs-Source": source} if stack and source else {}


LOOPBACK_NAMES = {"localhost", "127.0.0.1", "[::1]"}


def loopback_host(header: str) -> bool:
    """Whether a Host header names this machine's loopback (with any port)."""
    name = header.strip().lower()
    bracketed = name.startswith("[")  # an IPv6 address, then maybe :port
    return (name[: name.find("]") + 1] if bracketed else name.rsplit(":", 1)[0]) in LOOPBACK_NAMES


def make_server(app: App, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def vendor_dir(given: Path | None) -> Path:
    for folder in [given] if given else VENDOR_DIRS:
        if folder and (folder / "uPlot.iife.min.js").is_file():
            return folder
    where = given or " or ".join(str(d) for d in VENDOR_DIRS)
    raise logs_query.Failure(f"uPlot is missing in {where}: run `npm ci` in query/assets (the image ships it)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dashboard.py", description="Serve the dashboard page and its JSON API.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s)")
    parser.add_argument("--vendor-dir", type=Path, help="folder holding uPlot.iife.min.js and uPlot.min.css")
    parser.add_argument(
        "--memory-limit", default="1GB", help="DuckDB's memory before it spills to disk (default %(default)s)"
    )
    parser.add_argument(
        "--function", default=os.environ.get("LAMBDA_FUNCTION_NAME") or "KinesisAccessLogToS3", help="its log group"
    )
    parser.add_argument(
        "--query-socket",
        type=Path,
        default=os.environ.get("QUERY_SOCKET") or None,
        help="also answer logs_query.py's SELECTs on this Unix socket (default: $QUERY_SOCKET; none)",
    )
    parser.add_argument(
        "--query-asked-by",
        default=os.environ.get("QUERY_ASKED_BY") or None,
        metavar="STACK:SOURCE",
        help="with --query-socket: also answer ./start.sh query on POST /api/query when it names "
        "this compose project and checksum of query/ (default: $QUERY_ASKED_BY; none)",
    )
    logs_query.add_target_arguments(parser)
    bucket_reader.add_local_arguments(parser)  # --saved-logs: also counted by the pipeline panel
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        endpoint = None if args.aws else args.endpoint_url
        client = logs_query.s3_client(endpoint, args.region, args.workers)
        local = bucket_reader.local_copies(args)
        store = Store(Bucket(client, args.bucket), args.workers, memory_limit=args.memory_limit, local=local)
        app = App(store, vendor_dir(args.vendor_dir))
        app.function = FunctionLog(_logs_client(endpoint, args.region), args.function)
        app.saved = SavedLogs(args.saved_logs) if args.saved_logs else None
        server = make_server(app, args.host, args.port)
        if args.query_socket:
            target = {"bucket": args.bucket, "endpoint": endpoint, "region": args.region}
            service = QueryService(store, target)
            sockets = make_query_server(service, args.query_socket)
            threading.Thread(target=sockets.serve_forever, daemon=True).start()
            app.asked_by = asked_by(args.query_asked_by)
            app.queries = service if app.asked_by else None
            threading.Thread(target=service.read_ahead, args=(threading.Event(),), daemon=True).start()
    except Exception as exc:
        if args.debug:
            raise
        print(f"dashboard: error: {logs_query.describe(exc, args.bucket)}", file=sys.stderr)
        return 1
    print(f"dashboard: serving on http://{args.host}:{server.server_address[1]}/", file=sys.stderr, flush=True)
    if args.query_socket:
        print(f"dashboard: answering logs_query.py on {args.query_socket}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.store.close()
    return 0


def _logs_client(endpoint: str | None, region: str) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(region_name=region)
    credentials = {}
    if endpoint and session.get_credentials() is None:
        credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    config = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})
    return session.client("logs", endpoint_url=endpoint, config=config, **credentials)


if __name__ == "__main__":
    sys.exit(main())
