"""Rolling compaction (compact_hours.py --follow) against moto server: the open hour kept
small while it is written, and never a line missing or twice for a reader racing it."""

from __future__ import annotations

import io
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import boto3
import bucket_reader
import compact_hours
import dashboard
import logs_query
import pytest
from support.query_data import QUERY, nginx_line, timed_line

T17 = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)
HOUR, ERRORS = "2026/11/26/17/", "errors/2026/11/26/17/"
BUCKET = "nginx-accesslog"
NOW = timedelta(0)  # settle time that takes every object: the writer never rewrites one


def new_bucket(endpoint: str) -> bucket_reader.Bucket:
    return bucket_reader.Bucket(boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1"), BUCKET)


def request_ids(bucket: bucket_reader.Bucket, prefixes: list[str] | None = None, attempts: int = 5) -> Counter:
    """request_id -> copies, as bucket_reader.fetch_prefixes hands the hours to a reader."""
    plain, gz = io.BytesIO(), io.BytesIO()
    bucket_reader.fetch_prefixes(bucket, prefixes or [HOUR], bucket_reader.Sink(plain, gz), attempts=attempts)
    data = plain.getvalue() + (bucket_reader.plain(gz.getvalue()) if gz.getvalue() else b"")
    return Counter(json.loads(line).get("request_id") for line in data.splitlines() if line.strip())


def seen(bucket: bucket_reader.Bucket) -> Counter:
    """Every line the query tool sees in hour 17 (re-sent copies are one row there)."""
    out = io.StringIO()
    sql = """SELECT request_uri AS line FROM logs UNION ALL
             SELECT from_base64("rawData")::VARCHAR FROM errors"""
    logs_query.query(bucket, T17, T17 + timedelta(hours=1), sql, "json", out)
    return Counter(json.loads(row)["line"] for row in out.getvalue().splitlines())


def hour_keys(bucket: bucket_reader.Bucket, prefix: str = HOUR) -> list[str]:
    return sorted(bucket.list(prefix))


def raw_keys(bucket: bucket_reader.Bucket, prefix: str = HOUR) -> list[str]:
    return [k for k in hour_keys(bucket, prefix) if "_compacted_" not in k and not k.endswith("_compaction.json")]


def manifest(bucket: bucket_reader.Bucket, prefix: str = HOUR) -> dict:
    return bucket_reader.read_manifest(bucket, prefix, bucket.list(prefix)) or {}


class Lines:
    """Batches of hour 17 through the deployed handler, each line with its own request id."""

    def __init__(self, writer) -> None:
        self.writer, self.count, self.expected = writer, 0, Counter()

    def batch(self, n: int, minute: int = 30, junk: bool = True) -> list[str]:
        at = T17 + timedelta(minutes=minute)
        ids = [f"{self.count + i:032x}" for i in range(n)]
        self.count += n
        lines = [timed_line(at, f"/r{int(rid, 16)}", rid) for rid in ids]
        extra = [f"junk {self.count}"] if junk else []
        self.writer.batch(lines + extra, arrival=at)
        self.expected.update([f"/r{int(rid, 16)}" for rid in ids] + extra)
        return ids


# --- (c) settled objects only ---------------------------------------------------------


def test_a_pass_merges_settled_objects_and_leaves_unsettled_ones_raw(aws, writer):
    bucket = new_bucket(aws)
    lines = Lines(writer)
    for _ in range(3):
        lines.batch(5)
    # objects written just now are not settled yet (the function may still rewrite them)
    waiting = compact_hours.roll_hour(bucket, HOUR)
    assert (waiting.merged, waiting.unsettled, str(waiting)) == (0, 3, f"{HOUR}: unchanged")
    assert len(raw_keys(bucket)) == 3 and not manifest(bucket)
    # once they are older than the settle time, one pass makes them one compacted object
    later = datetime.now(UTC) + compact_hours.SETTLE_OPEN + timedelta(seconds=1)
    rolled = compact_hours.roll_hour(bucket, HOUR, now=later)
    assert (rolled.merged, rolled.deleted, rolled.objects, rolled.unsettled) == (3, 3, 1, 0)
    assert raw_keys(bucket) == [] and len(manifest(bucket)["objects"]) == 1
    # a batch written after that stays raw beside it, and is read beside it
    lines.batch(5)
    again = compact_hours.roll_hour(bucket, HOUR)
    assert (again.merged, again.unsettled) == (0, 1) and len(raw_keys(bucket)) == 1
    assert seen(bucket) == lines.expected


# --- the geometric fold and duplicates ------------------------------------------------


def test_each_pass_adds_one_object_and_folds_in_the_newest_no_larger_than_it(aws, writer):
    bucket = new_bucket(aws)
    lines = Lines(writer)
    counts = []
    for _ in range(8):
        lines.batch(20)
        rolled = compact_hours.roll_hour(bucket, HOUR, settle=NOW)
        counts.append(len(manifest(bucket)["objects"]))
        assert rolled.objects == counts[-1] and raw_keys(bucket) == []
        assert seen(bucket) == lines.expected
    # like a binary counter: 8 equal passes end as one object, never more than log2 + 1
    assert max(counts) <= 4 and counts[-1] < counts[-2]
    named = set(manifest(bucket)["objects"])
    assert [k for k in hour_keys(bucket) if "_compacted_" in k and k not in named] == []  # folded ones deleted


def test_a_re_sent_line_of_a_later_pass_is_one_row_and_dropped_when_the_hour_closes(aws, writer):
    bucket = new_bucket(aws)
    at = T17 + timedelta(minutes=5)
    timed = [timed_line(at, f"/t{n}", f"{n:032x}") for n in range(4)]
    writer.batch(timed, arrival=at)
    compact_hours.roll_hour(bucket, HOUR, settle=NOW)
    writer.batch(timed[:2], arrival=at + timedelta(seconds=3))  # fluentd's re-send
    rolled = compact_hours.roll_hour(bucket, HOUR, settle=NOW)
    # the re-send is smaller than the first object: a second object, read beside it (the
    # query tool keeps one row per id), until the closed-hour step merges them
    assert (rolled.merged, rolled.folded, rolled.objects) == (1, 0, 2)
    assert seen(bucket) == Counter(f"/t{n}" for n in range(4))
    assert compact_hours.compact_hour(bucket, HOUR).dropped == 2
    assert request_ids(bucket) == Counter({f"{n:032x}": 1 for n in range(4)})


# --- (b) a crash after each step ------------------------------------------------------


class Crash(Exception):
    pass


@pytest.mark.parametrize("step", compact_hours.STEPS)
def test_a_crash_after_any_step_of_a_pass_changes_nothing_a_reader_sees(aws, writer, step):
    # given an hour with a compacted object of an earlier pass, and more settled raw objects
    # (larger, so the pass folds the earlier object in: every step has work to do)
    bucket = new_bucket(aws)
    lines = Lines(writer)
    lines.batch(3)
    compact_hours.roll_hour(bucket, HOUR, settle=NOW)
    lines.batch(10)
    lines.batch(10, minute=2)  # a late batch: its key sorts before the merged ones
    before = seen(bucket)
    assert before == lines.expected

    def crash(done: str) -> None:
        assert seen(bucket) == before  # every step leaves every line visible exactly once
        if done == step:
            raise Crash(done)

    # when a pass stops after `step`
    with pytest.raises(Crash):
        compact_hours.roll_hour(bucket, HOUR, settle=NOW, after_step=crash)
    # then the reader still sees each line once, and the next pass cleans up
    assert seen(bucket) == before
    compact_hours.roll_hour(bucket, HOUR, settle=NOW)
    assert seen(bucket) == before
    assert raw_keys(bucket) == []
    named = set(manifest(bucket)["objects"])
    assert [key for key in hour_keys(bucket) if "_compacted_" in key and key not in named] == []
    # and the closed-hour step leaves one object, whatever the crash left behind
    compact_hours.compact_hour(bucket, HOUR)
    assert seen(bucket) == before
    assert len(hour_keys(bucket)) == 2


# --- (d) closed hour: segments and raw objects into one ---------------------------------


def test_the_closed_hour_step_merges_segments_and_raw_objects_into_one(aws, writer):
    bucket = new_bucket(aws)
    lines = Lines(writer)
    for n in range(5):
        lines.batch(2 + 10 * (n % 2))  # sizes that leave several segments
        compact_hours.roll_hour(bucket, HOUR, settle=NOW)
    segments = manifest(bucket)["objects"]
    assert len(segments) >= 2
    lines.batch(4)  # and a raw object beside them
    outcome = compact_hours.compact_hour(bucket, HOUR)
    assert outcome.merged == 1 and outcome.deleted == len(segments) + 1
    keys = hour_keys(bucket)
    assert len(keys) == 2 and keys == sorted([HOUR + "_compaction.json", manifest(bucket)["objects"][0]])
    assert not set(segments) & set(keys)
    assert seen(bucket) == lines.expected


# --- (a) readers racing passes ---------------------------------------------------------


def test_readers_racing_rolling_passes_see_every_earlier_line_once(aws, writer):
    """A writer adds batches (late ones, re-sends), a compactor runs passes, readers read:
    each line written before a read began (FRESH s before, for the dashboard) is in it
    once; none is in it twice."""
    bucket = new_bucket(aws)
    stop = threading.Event()
    lock = threading.Lock()
    written: list[str] = []  # request ids whose batch has landed, in order
    landed: list[tuple[float, str]] = []  # and when (monotonic), for the dashboard's FRESH
    attempted: set[str] = set()  # and those of the batch being written
    resent: set[str] = set()
    problems: queue.Queue = queue.Queue()
    counts = Counter()

    def writing() -> None:
        n = 0
        while not stop.is_set():
            minute = 2 if n % 7 == 6 else 30 + n % 20  # every 7th a late batch
            at = T17 + timedelta(minutes=minute, seconds=n % 60)
            ids = [f"{n:08x}{i:024x}" for i in range(3 + n % 5)]
            batch = [timed_line(at, f"/w{n}/{i}", rid, 0.004) for i, rid in enumerate(ids)]
            again = [r for r in written[-10:] if int(r[-24:], 16) == 0][:1] if n % 5 == 4 else []
            batch += [timed_line(T17 + timedelta(minutes=40), "/again", r, 0.004) for r in again]
            with lock:
                attempted.update(ids)
                resent.update(again)
            writer.batch(batch, arrival=at)
            with lock:
                written.extend(ids)
                landed.extend((time.monotonic(), rid) for rid in ids)
            counts["batches"] += 1
            n += 1

    def compacting() -> None:
        while not stop.is_set():
            rolled = compact_hours.roll_hour(new_bucket(aws), HOUR, settle=NOW)
            counts["passes"] += 1
            counts["merged"] += rolled.merged
            counts["folded"] += rolled.folded

    def unless_given_up(reader: str, read: Callable[..., Any], *args: Any) -> Any:
        """`read(*args)`, or None when it gave up because the hour's objects vanished at every
        listing: the documented one-line error, never a wrong count (docs/dashboard.md).
        This compactor runs pass after pass, not every 30 s as the stack's does, so on a
        loaded machine a reader can lose that race 5 times running."""
        try:
            return read(*args)
        except bucket_reader.Failure as exc:
            if "kept vanishing" not in str(exc):
                raise
            counts[f"{reader} gave up"] += 1
            return None

    def check(before: set[str], after: set[str], got: Counter, what: str) -> None:
        missing = before - set(got)
        twice = [r for r, n in got.items() if n > 1 and (r not in resent or n > 2)]
        unknown = set(got) - after
        if missing or twice or unknown:
            problems.put(f"{what}: missing {sorted(missing)[:3]}, twice {twice[:3]}, unknown {sorted(unknown)[:3]}")

    def reading_raw() -> None:
        reader = new_bucket(aws)
        while not stop.is_set():
            with lock:
                before = set(written)
            got = unless_given_up("raw", request_ids, reader)
            if got is None:
                continue
            with lock:
                after = set(attempted)
            check(before, after, got, "fetch_prefixes")
            counts["raw reads"] += 1

    def reading_sql() -> None:
        reader = new_bucket(aws)
        sql = "SELECT request_id, count(*) AS n FROM logs GROUP BY request_id"
        while not stop.is_set():
            with lock:
                before = set(written)
            out = io.StringIO()
            fetched = unless_given_up("sql", logs_query.query, reader, T17, T17 + timedelta(hours=1), sql, "json", out)
            if fetched is None:
                continue
            with lock:
                after = set(attempted)
            rows = [json.loads(line) for line in out.getvalue().splitlines()]
            check(before, after, Counter({row["request_id"]: row["n"] for row in rows}), "logs_query")
            counts["sql reads"] += 1

    def reading_dashboard() -> None:
        # the dashboard's tables, kept loaded and asked as through its query socket
        store = dashboard.Store(new_bucket(aws), workers=4, clock=lambda: T17 + timedelta(minutes=55))
        service = dashboard.QueryService(store, {"bucket": BUCKET, "endpoint": aws, "region": "us-east-1"})
        sql = "SELECT request_id, count(*) AS n FROM logs GROUP BY request_id"
        request = {"version": 1, "sql": sql, "format": "json", "start": T17.isoformat()}
        request.update(end=(T17 + timedelta(hours=1)).isoformat(), bucket=BUCKET, endpoint=aws, region="us-east-1")
        try:
            while not stop.is_set():
                arrived = time.monotonic()
                with lock:  # an answer holds the bucket as it was FRESH s before the question
                    before = {rid for at, rid in landed if at <= arrived - dashboard.FRESH}
                answered = unless_given_up("dashboard", service.answer, request, arrived)
                if answered is None:
                    continue
                header, out = answered
                with lock:
                    after = set(attempted)
                assert "read" in header, header
                rows = [json.loads(line) for line in out.splitlines()]
                check(before, after, Counter({row["request_id"]: row["n"] for row in rows}), "dashboard")
                counts["dashboard reads"] += 1
        finally:
            store.close()

    def guarded(target) -> threading.Thread:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                problems.put(f"{target.__name__}: {type(exc).__name__}: {exc}")
                stop.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    threads = [guarded(f) for f in (writing, compacting, reading_raw, reading_raw, reading_sql, reading_dashboard)]
    deadline = time.monotonic() + 120
    while not stop.is_set() and time.monotonic() < deadline:
        if (
            counts["passes"] >= 25
            and counts["folded"] >= 5
            and counts["raw reads"] >= 30
            and counts["sql reads"] >= 8
            and counts["dashboard reads"] >= 8
        ):
            break
        stop.wait(0.2)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert problems.empty(), [problems.get() for _ in range(problems.qsize())]
    # (a slow machine may reach fewer in the time; these still race every step)
    assert counts["passes"] >= 10 and counts["folded"] >= 2 and counts["sql reads"] >= 3, counts
    assert counts["dashboard reads"] >= 3, counts
    # giving up stays the exception (no more often than an answer), not the way through
    for reader in ("raw", "sql", "dashboard"):
        assert counts[f"{reader} gave up"] <= counts[f"{reader} reads"], counts
    # and at the end, every line once, in a few compacted objects
    compact_hours.roll_hour(bucket, HOUR, settle=NOW)
    assert set(request_ids(bucket)) == set(written)


# --- (e) --follow as a process --------------------------------------------------------


def follow(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(QUERY / "compact_hours.py"), "--follow", "--every", "1s", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def lines_until(process: subprocess.Popen, wanted, timeout: float = 30) -> list[str]:
    """Output lines until `wanted(lines)` holds (read on a thread: no blocking past the timeout)."""
    got: list[str] = []
    done = threading.Event()

    def read() -> None:
        for line in process.stdout:
            got.append(line.rstrip("\n"))
            if wanted(got):
                done.set()
                return
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(timeout), got
    assert wanted(got), got
    return got


def stop_quickly(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=10)
    assert process.returncode == 0, out
    return out


def test_follow_makes_passes_and_stops_at_sigterm(aws, writer, tmp_path):
    # given the current hour's objects
    now = datetime.now(UTC)
    for n in range(3):
        writer.batch([nginx_line(now, f"/now{n}")], arrival=now)
    prefix = f"{now:%Y/%m/%d/%H}/"
    bucket = new_bucket(aws)
    assert len(bucket.list(prefix)) == 3
    heartbeat = tmp_path / "alive"
    # when the compactor follows the bucket with a short settle time
    process = follow("--endpoint-url", aws, "--settle-open", "1s", "--heartbeat", str(heartbeat))
    try:
        lines = lines_until(
            process, lambda got: any(line.startswith(prefix) and line.endswith(" 0 raw left") for line in got)
        )
    finally:
        out = stop_quickly(process)
    # then a line per change says what it merged (objects that settled in different
    # seconds may take two passes), the heartbeat was touched, and it stopped cleanly
    changes = [line for line in lines if line.startswith(prefix)]
    assert sum(int(re.search(r": (\d+) settled object", line)[1]) for line in changes) == 3, lines
    assert heartbeat.exists() and time.time() - heartbeat.stat().st_mtime < 30
    assert out.strip().splitlines()[-1] == "compact_hours: stopped"
    assert len(bucket.list(prefix)) == 2  # the manifest and one compacted object


def test_follow_reports_an_unreachable_endpoint_in_one_line_per_pass_and_goes_on():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    process = follow("--endpoint-url", f"http://127.0.0.1:{port}")
    try:
        lines = lines_until(process, lambda got: sum("error" in line for line in got) >= 2)
    finally:
        stop_quickly(process)
    errors = [line for line in lines if "error" in line]
    assert all(line.startswith("compact_hours: error: cannot reach S3") for line in errors), lines
    assert not any("Traceback" in line for line in lines)


def test_a_stop_asked_during_a_failing_call_ends_the_pass_without_its_retries():
    """SIGTERM while S3 cannot be reached: the call stops at its next failed attempt, not
    after the waits of every retry (up to 3 s a call, several calls a pass)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    client = bucket_reader.s3_client(f"http://127.0.0.1:{port}", "us-east-1", 4)
    attempts: list[float] = []
    client.meta.events.register("before-send.s3", lambda **_: attempts.append(time.monotonic()))
    follower = compact_hours.Follower(bucket_reader.Bucket(client, BUCKET), out=io.StringIO())
    # asked as the first attempt fails: the retry's wait (up to 1 s) is the last
    follower.bucket.client.meta.events.register_first(
        "needs-retry.s3", lambda **_: follower.stop.set() if len(attempts) == 1 else None
    )
    began = time.monotonic()
    with pytest.raises(compact_hours.Stopped):
        follower.one_pass(datetime.now(UTC))
    assert len(attempts) == 1, f"{len(attempts)} attempts after the stop"
    assert time.monotonic() - began < 2


class Provisioning(BaseHTTPRequestHandler):
    report: ClassVar[dict] = {}

    def do_GET(self) -> None:
        body = json.dumps(self.report).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def ready_server() -> Iterator[tuple[str, type[Provisioning]]]:
    handler = type("Handler", (Provisioning,), {"report": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/_localstack/init/ready", handler
    finally:
        server.shutdown()
        server.server_close()


def test_follow_waits_while_localstack_puts_saved_logs_back(aws, writer, ready_server):
    url, handler = ready_server
    bucket = new_bucket(aws)
    Lines(writer).batch(3)
    out = io.StringIO()
    follower = compact_hours.Follower(bucket, settle_open=NOW, ready_url=url, out=out)
    # while the ready.d hook still runs (restoring), a pass changes nothing
    handler.report = {"completed": False, "scripts": [{"name": "10-provision.sh", "state": "RUNNING"}]}
    follower.one_pass(T17 + timedelta(minutes=40))
    follower.one_pass(T17 + timedelta(minutes=40))
    assert raw_keys(bucket) and out.getvalue().count("waiting") == 1
    # once it completed, the next pass compacts
    handler.report = {"completed": True, "scripts": [{"name": "10-provision.sh", "state": "SUCCESSFUL"}]}
    follower.one_pass(T17 + timedelta(minutes=40))
    assert raw_keys(bucket) == [] and f"{HOUR}: 1 settled object(s) merged" in out.getvalue()


def test_follow_merges_one_closed_hour_a_pass_and_rolls_the_open_hour_between(aws, writer):
    """A week of hours never compacted (the compactor was stopped): each pass merges one,
    so the open hour is rolled every pass meanwhile."""
    bucket = new_bucket(aws)
    days = [T17 - timedelta(days=d) for d in (5, 3, 1)]
    for at in days:
        writer.batch([timed_line(at + timedelta(minutes=10), f"/old{at:%d}", f"{at:%d}".zfill(32))], arrival=at)
    now = T17 + timedelta(minutes=40)
    follower = compact_hours.Follower(bucket, settle_open=NOW, since=timedelta(days=7), out=io.StringIO())
    closed = [f"{at:%Y/%m/%d/%H}/" for at in days]
    for done in range(1, len(days) + 1):
        Lines(writer).batch(2, junk=False)  # the open hour, written between passes
        follower.one_pass(now)
        assert raw_keys(bucket) == []  # rolled at every pass
        assert sum(not raw_keys(bucket, prefix) for prefix in closed) == done
    assert all(manifest(bucket, prefix).get("closed") for prefix in closed)


def test_follow_rolls_the_open_hours_and_merges_closed_hours_once(aws, writer):
    bucket = new_bucket(aws)
    lines = Lines(writer)
    lines.batch(30)  # hour 17
    out = io.StringIO()
    follower = compact_hours.Follower(bucket, settle_open=NOW, out=out)
    # at 18:05 hour 17 is the previous hour, still rolling
    follower.one_pass(T17 + timedelta(hours=1, minutes=5))
    assert raw_keys(bucket) == [] and len(manifest(bucket)["objects"]) == 1
    lines.batch(1)  # smaller than the first object: an object of its own
    follower.one_pass(T17 + timedelta(hours=1, minutes=6))
    assert len(manifest(bucket)["objects"]) == 2
    # at 18:20 it is closed: merged into one object, then left alone
    follower.one_pass(T17 + timedelta(hours=1, minutes=20))
    assert len(manifest(bucket)["objects"]) == 1 and len(hour_keys(bucket)) == 2
    assert f"{HOUR}: 0 object(s) merged, 2 deleted" in out.getvalue()
    assert seen(bucket) == lines.expected


class Kept(bucket_reader.LocalCopies):
    """A cache that counts its trims."""

    trims = 0

    def trim(self, limit: int = bucket_reader.CACHE_LIMIT) -> None:
        self.trims += 1
        super().trim(limit)


def test_follow_keeps_closed_hours_parts_for_the_readers_not_its_rolling_objects(aws, writer, tmp_path):
    bucket = new_bucket(aws)
    lines = Lines(writer)
    lines.batch(30)  # hour 17
    cache = Kept(BUCKET, cache=tmp_path / "cache")
    follower = compact_hours.Follower(bucket, settle_open=NOW, cache=cache, out=io.StringIO())
    # rolling passes over the open hour: their objects are the dashboard's to adopt, unread
    follower.one_pass(T17 + timedelta(minutes=50))
    lines.batch(1)
    follower.one_pass(T17 + timedelta(minutes=51))
    assert len(manifest(bucket)["objects"]) == 2 and not (tmp_path / "cache").exists()
    # closed: its parts are kept by ETag, and the cache trimmed after
    follower.one_pass(T17 + timedelta(hours=1, minutes=20))
    parts = {item["Key"]: item["ETag"] for item in bucket.listed(HOUR) if "_compacted_" in item["Key"]}
    assert list(parts) == manifest(bucket)["objects"]
    digests = [bucket_reader.md5_of(etag) for etag in parts.values()]
    # each part and its records as Parquet (logs_query.columnar_suffix)
    assert sorted(f.name for f in (tmp_path / "cache").iterdir()) == sorted(
        name for d in digests for name in (d, d + logs_query.columnar_suffix())
    )
    assert cache.trims == 1


def test_follow_flags_are_checked(capsys):
    with pytest.raises(SystemExit) as exited:
        compact_hours.main(["--follow", "--from", "2026-11-26T17:00Z"])
    assert exited.value.code == 2 and "--follow takes --since" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        compact_hours.main(["--follow", "--every", "soon"])
    assert exited.value.code == 2 and "not a duration" in capsys.readouterr().err


def test_help_documents_follow(capsys):
    with pytest.raises(SystemExit):
        compact_hours.main(["--help"])
    text = capsys.readouterr().out
    assert "--follow" in text and "--every" in text and "--settle-open" in text and "--heartbeat" in text


# --- (f) restore racing a reader ------------------------------------------------------


class Watching:
    """An S3 client whose every put_object is followed by a reader's look at the bucket."""

    def __init__(self, client, look) -> None:
        self.client, self.look = client, look

    def __getattr__(self, name: str):
        return getattr(self.client, name)

    def put_object(self, **kwargs):
        answer = self.client.put_object(**kwargs)
        self.look(kwargs["Key"])
        return answer


def test_a_reader_racing_a_restore_never_sees_a_line_twice_or_a_missing_object(aws, writer, tmp_path):
    import bucket_mirror

    # given hours that rolling passes left as segments, a raw object and a manifest, saved
    bucket = new_bucket(aws)
    hours = [T17 + timedelta(hours=h) for h in range(4)]
    prefixes = [f"{at:%Y/%m/%d/%H}/" for at in hours]
    expected: Counter = Counter()
    for h, at in enumerate(hours):
        for n in range(3):
            ids = [f"{h:02x}{n:02x}{i:028x}" for i in range(1 + 6 * (n == 0))]
            writer.batch([timed_line(at + timedelta(minutes=n), f"/h{h}", rid) for rid in ids], arrival=at)
            expected.update(ids)
            if n < 2:
                compact_hours.roll_hour(bucket, prefixes[h], settle=NOW)
        assert len(manifest(bucket, prefixes[h])["objects"]) == 2 and len(raw_keys(bucket, prefixes[h])) == 1
    copy = bucket_mirror.Copy(tmp_path / "saved", BUCKET)
    for key in bucket.list(""):
        copy.save(key, bucket.get(key))
    # and LocalStack forgot the bucket
    bucket.client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in bucket.list("")]})
    bucket.client.delete_bucket(Bucket=BUCKET)

    # when restore puts them back, a reader reading after each object it puts
    looks = []

    def look(key: str) -> None:
        got = request_ids(bucket, prefixes, attempts=2)
        looks.append(key)
        assert not [rid for rid, n in got.items() if n > 1 or rid not in expected], key

    bucket_mirror.restore(Watching(bucket.client, look), copy, "us-east-1", workers=1)
    # then every look saw each line at most once and every object a manifest named, and
    # the last one sees every line
    assert len(looks) == 4 * 4
    assert all(key.endswith("_compaction.json") for key in looks[-4:])
    assert request_ids(bucket, prefixes) == expected


def test_the_watcher_saves_the_objects_a_manifest_names_before_the_manifest(aws, writer, tmp_path):
    import bucket_mirror

    # given a pass's compacted object and manifest, whose events the watcher has not seen
    bucket = new_bucket(aws)
    Lines(writer).batch(3)
    compact_hours.roll_hour(bucket, HOUR, settle=NOW)
    (merged,) = manifest(bucket)["objects"]
    copy = bucket_mirror.Copy(tmp_path / "saved", BUCKET)
    # when it handles the manifest's event first (events come in any order; a crash may
    # stop it before the next one)
    bucket_mirror.save_object(bucket.client, copy, HOUR + "_compaction.json")
    # then the object the manifest names is saved too, byte for byte
    assert copy.path(merged).read_bytes() == bucket.get(merged)
    assert json.loads(copy.path(HOUR + "_compaction.json").read_bytes())["objects"] == [merged]


class CopyAsBucket(bucket_reader.Bucket):
    """The watcher's saved copy read as a bucket: what a restore would put back."""

    def __init__(self, copy) -> None:
        super().__init__(None, BUCKET)
        self.copy = copy

    def etags(self, prefix: str) -> dict[str, str]:
        return {key: "" for key, _ in sorted(self.copy.files()) if key.startswith(prefix)}

    def get(self, key: str) -> bytes:
        try:
            return self.copy.path(key).read_bytes()
        except FileNotFoundError:
            raise bucket_reader.Missing(key) from None


class SlowS3:
    """An S3 client whose reads of an object take 0.1 s more than those of a removed one,
    counting them and how many run at once."""

    def __init__(self, client) -> None:
        self.client, self.running, self.most, self.gets = client, 0, 0, 0
        self.lock = threading.Lock()

    def __getattr__(self, name: str):
        return getattr(self.client, name)

    def get_object(self, **kwargs):
        with self.lock:
            self.gets += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            answer = self.client.get_object(**kwargs)
            time.sleep(0.1)
            return answer
        finally:
            with self.lock:
                self.running -= 1


def test_the_watcher_saves_in_parallel_and_its_copy_is_whole_at_every_moment_of_a_merge(aws, writer, tmp_path):
    import bucket_mirror

    # given an hour of rolled parts and raw objects, saved by a watcher
    bucket = new_bucket(aws)
    lines = Lines(writer)
    lines.batch(2, junk=False)
    sqs = boto3.client("sqs", endpoint_url=aws, region_name="us-east-1")
    s3 = SlowS3(bucket.client)
    copy = bucket_mirror.Copy(tmp_path / "saved", BUCKET)
    watcher = bucket_mirror.Watcher(s3, sqs, copy, bucket_mirror.subscribe(bucket.client, sqs, BUCKET))
    bucket_mirror.catch_up(bucket.client, copy)
    for n in range(4):
        lines.batch(2 + 10 * (n % 2), junk=False)
        compact_hours.roll_hour(bucket, HOUR, settle=NOW)
    for _ in range(30):
        lines.batch(1, junk=False)

    def drain() -> None:  # every queued event in one batch: the merge's whole order at stake
        messages = []
        while more := watcher.receive():
            messages += more
        watcher.handle(messages)

    drain()
    expected = Counter(f"{n:032x}" for n in range(lines.count))
    assert request_ids(CopyAsBucket(copy)) == expected
    assert s3.most > 1  # the objects of a batch are saved at once
    # when the hour is merged (new parts, a manifest, 30 raw objects and the old parts
    # deleted) and the watcher saves its events, a reader looking at the copy after each
    # file it saves or removes
    outcome = compact_hours.compact_hour(bucket, HOUR)
    assert outcome.deleted > 30
    looks, lock = [], threading.Lock()

    def look(key: str) -> None:
        with lock:
            got = request_ids(CopyAsBucket(copy), attempts=2)
            looks.append(key)
            assert got == expected, key

    class Looked(bucket_mirror.Copy):
        def save(self, key, body):
            super().save(key, body)
            look(key)

        def forget(self, key):
            super().forget(key)
            look(key)

    watcher.copy = Looked(copy.root, BUCKET)
    s3.gets = 0
    drain()
    # then every look saw each line once, the copy is the bucket, and the deleted objects
    # were found gone by a listing, not a GET each
    assert len(looks) >= outcome.deleted + 2
    saved = {key: path.read_bytes() for key, path in copy.files()}
    assert saved == {key: bucket.get(key) for key in bucket.list("")}
    assert s3.gets <= len(saved)


# --- parts, and a batch delivered again after its merge --------------------------------


def test_split_parts_cuts_after_line_ends_within_the_limit():
    data = b"".join(b'{"n":%d,"pad":"%s"}\n' % (i, b"x" * (i % 50)) for i in range(2000))
    parts = compact_hours.split_parts(data, 4096)
    assert b"".join(parts) == data and len(parts) > 10
    assert all(len(part) <= 4096 and part.endswith(b"\n") for part in parts)
    assert compact_hours.split_parts(data, 4096) == parts  # same data, same parts: same keys
    long = b"y" * 10000 + b"\n"
    assert compact_hours.split_parts(b"a\n" + long + b"b\n", 100) == [b"a\n", long, b"b\n"]
    assert compact_hours.split_parts(b"", 100) == [b""]


def test_a_closed_hour_becomes_parts_that_a_rerun_leaves_alone(aws, writer, monkeypatch):
    monkeypatch.setattr(compact_hours, "PART_BYTES", 3000)
    bucket = new_bucket(aws)
    lines = Lines(writer)
    for minute in range(6):
        lines.batch(8, minute=minute * 5)
    # when the hour is compacted, it becomes parts of at most PART_BYTES, read as one hour
    outcome = compact_hours.compact_hour(bucket, HOUR)
    named = manifest(bucket)
    assert outcome.merged == 6 and named["closed"] is True and raw_keys(bucket) == []
    bodies = [bucket_reader.plain(bucket.get(key)) for key in named["objects"]]
    assert len(bodies) > 2 and all(len(body) <= 3000 for body in bodies)
    assert seen(bucket) == lines.expected
    # and a second run changes nothing (DuckDB reads the parts on every core)
    before = hour_keys(bucket)
    again = compact_hours.compact_hour(bucket, HOUR)
    assert (again.merged, again.deleted) == (0, 0) and hour_keys(bucket) == before


def test_a_batch_delivered_again_with_more_lines_after_its_merge_loses_nothing(aws, writer):
    bucket = new_bucket(aws)
    lines = Lines(writer)
    lines.batch(4, junk=False)
    (key,) = raw_keys(bucket)
    first = bucket.get(key)
    later = datetime.now(UTC) + compact_hours.SETTLE_OPEN + timedelta(seconds=1)
    compact_hours.roll_hour(bucket, HOUR, now=later)
    assert raw_keys(bucket) == [] and key in manifest(bucket)["sources"]
    # when the mapping delivers that batch again from its first record, now with one record
    # more (a whole batch retried after a timeout), under the same key, after the merge
    record = json.loads(first.splitlines()[-1])
    record.update(request_id="f" * 32, request_uri="/delivered-again")
    time.sleep(1.1)  # S3's LastModified has whole seconds: later than the manifest's
    bucket.client.put_object(
        Bucket=BUCKET, Key=key, Body=first + json.dumps(record, separators=(",", ":")).encode() + b"\n"
    )
    expected = lines.expected + Counter(["/delivered-again"])
    # then the next pass names it no more (readers read it raw), a later one merges it,
    # and the closed hour keeps it: every line once, none lost
    compact_hours.roll_hour(bucket, HOUR)
    assert key in raw_keys(bucket) and key not in manifest(bucket)["sources"]
    assert seen(bucket) == expected
    compact_hours.roll_hour(bucket, HOUR, now=datetime.now(UTC) + compact_hours.SETTLE_OPEN + timedelta(seconds=1))
    assert raw_keys(bucket) == [] and seen(bucket) == expected
    compact_hours.compact_hour(bucket, HOUR)
    assert raw_keys(bucket) == [] and seen(bucket) == expected
    assert sum(request_ids(bucket).values()) == len(expected)  # the first copies dropped


def test_a_known_manifest_is_read_again_only_once_it_changed(aws, writer):
    """A long-lived reader (the dashboard) keeps each manifest with its ETag: a pass that
    changed nothing costs a 304, not the manifest's bytes; a new pass's manifest is read."""
    bucket, lines = new_bucket(aws), Lines(writer)
    lines.batch(4)
    compact_hours.roll_hour(bucket, HOUR, settle=NOW)
    bodies: list[bytes | None] = []
    real = bucket.get_changed

    def recorded(key: str, etag: str | None):
        body, tag = real(key, etag)
        bodies.append(body)
        return body, tag

    bucket.get_changed = recorded
    known: dict = {}
    first = bucket_reader.read_manifest(bucket, HOUR, bucket.list(HOUR), known)
    again = bucket_reader.read_manifest(bucket, HOUR, bucket.list(HOUR), known)
    assert again == first and bodies[0] and bodies[1:] == [None]  # read, then a 304
    lines.batch(3)
    compact_hours.roll_hour(bucket, HOUR, settle=NOW)
    changed = bucket_reader.read_manifest(bucket, HOUR, bucket.list(HOUR), known)
    assert bodies[-1] and len(changed["sources"]) > len(first["sources"])
    assert changed == bucket_reader.read_manifest(bucket, HOUR, bucket.list(HOUR))
