"""The live tail against moto: objects written by the real handler, a clock the test moves.

The key layout makes the cases: keys sort by their first record's arrival, an object may
land after one whose key sorts later, an hour's prefix is the requests' hour."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
import tail
from logs_query import Bucket
from support.events import KinesisRecord, fluentd_message, kinesis_event
from support.query_data import QUERY, nginx_line

T = datetime(2026, 11, 26, 17, 30, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Shards:
    """Batches through the deployed handler, each on a shard of its own numbering."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.sequence: dict[str, int] = {}

    def batch(self, shard: int, arrival: datetime, lines: list[str]) -> None:
        shard_id = f"shardId-{shard:012d}"
        records = []
        for line in lines:
            self.sequence[shard_id] = self.sequence.get(shard_id, 49000000000000000000) + 1
            records.append(KinesisRecord(fluentd_message(line), str(self.sequence[shard_id]), arrival.timestamp()))
        assert self.handler.handler(kinesis_event(records, shard_id)) == {"batchItemFailures": []}


@pytest.fixture
def shards(handler_module, monkeypatch):
    monkeypatch.setattr(handler_module, "log", lambda *args, **kwargs: None)
    return Shards(handler_module)


@pytest.fixture
def clock() -> Clock:
    return Clock(T)


@pytest.fixture
def follower(s3_client, bucket, clock) -> tail.Follower:
    return tail.Follower(Bucket(s3_client, bucket), lag=timedelta(minutes=2), clock=clock)


def uris(records) -> list[str]:
    return [r["request_uri"] for r in records]


def test_starts_after_what_is_there_and_shows_each_new_object_once(shards, follower, clock):
    # given objects before the tail starts
    shards.batch(0, T - timedelta(seconds=30), [nginx_line(T - timedelta(seconds=31), "/before")])
    assert follower.start() == 1
    # when a batch lands, and the tail polls twice
    clock.now = T + timedelta(seconds=1)
    shards.batch(0, T + timedelta(seconds=1), [nginx_line(T, f"/new/{n}") for n in range(3)])
    first, second = follower.poll(), follower.poll()
    # then the new records come once, in order, and the old ones never
    assert uris(first) == ["/new/0", "/new/1", "/new/2"]
    assert second == []


def test_an_object_that_lands_after_a_later_key_is_still_shown_once(shards, follower, clock):
    # given a tail that has shown shard 1's object that arrived at T+10
    follower.start()
    clock.now = T + timedelta(seconds=12)
    shards.batch(1, T + timedelta(seconds=10), [nginx_line(T, "/shard1/a")])
    assert uris(follower.poll()) == ["/shard1/a"]
    # when shard 0's batch that arrived earlier (T+5) lands only now: its key sorts before
    clock.now = T + timedelta(seconds=40)
    shards.batch(0, T + timedelta(seconds=5), [nginx_line(T, "/shard0/a"), nginx_line(T, "/shard0/b")])
    shards.batch(1, T + timedelta(seconds=39), [nginx_line(T, "/shard1/b")])
    # then the next poll shows it (and shard 1's next), and no poll repeats anything
    assert uris(follower.poll()) == ["/shard0/a", "/shard0/b", "/shard1/b"]
    clock.now = T + timedelta(seconds=41)
    assert follower.poll() == []


def test_hour_boundary_and_late_requests_in_the_previous_hour(shards, follower, clock):
    # given a tail started just before 18:00
    clock.now = T.replace(minute=59, second=59)
    follower.start()
    # when a batch arrives after 18:00 with requests of both hours (one logged at 17:59)
    at = T.replace(hour=18, minute=0, second=1)
    clock.now = at
    shards.batch(0, at, [nginx_line(at - timedelta(seconds=3), "/late-in-17"), nginx_line(at, "/in-18")])
    # then both are shown, by their own hour's objects, and never again
    records = follower.poll()
    assert sorted(uris(records)) == ["/in-18", "/late-in-17"]
    clock.now = at + timedelta(hours=1, minutes=1)  # the 17h prefix is no longer listed
    assert follower.poll() == []


def test_keys_older_than_the_lag_are_forgotten_and_never_come_back(shards, follower, clock):
    follower.start()
    for n in range(5):
        clock.now = T + timedelta(seconds=60 * n)
        shards.batch(0, clock.now, [nginx_line(clock.now, f"/minute/{n}")])
        assert uris(follower.poll()) == [f"/minute/{n}"]
    # the keys of the first minutes fell below the horizon: the set of shown keys stays small
    assert len(follower.shown) <= 3
    assert follower.poll() == []


def test_per_shard_order_over_many_batches(shards, follower, clock):
    follower.start()
    expected: dict[int, list[str]] = {0: [], 1: []}
    shown: list[dict] = []
    for n in range(12):
        shard = n % 2
        clock.now = T + timedelta(seconds=n)
        paths = [f"/s{shard}/{n}/{i}" for i in range(3)]
        expected[shard].extend(paths)
        shards.batch(shard, clock.now, [nginx_line(clock.now, p) for p in paths])
        if n % 3 == 2:
            shown.extend(follower.poll())
    shown.extend(follower.poll())
    for shard, paths in expected.items():
        assert [u for u in uris(shown) if u.startswith(f"/s{shard}/")] == paths


def object_lines(s3_client, bucket, key: str) -> list[bytes]:
    return s3_client.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines(keepends=True)


def test_an_object_trimmed_after_a_failed_put_is_not_printed_twice(shards, follower, clock, s3_client, bucket):
    # given a printed object of 5 records (shard 0, 17h)
    follower.start()
    clock.now = T + timedelta(seconds=2)
    shards.batch(0, T + timedelta(seconds=1), [nginx_line(T, f"/batch/{n}") for n in range(5)])
    assert uris(follower.poll()) == [f"/batch/{n}" for n in range(5)]
    (key,) = [k for k in bucket_keys(s3_client, bucket)]
    lines = object_lines(s3_client, bucket, key)
    # when the function trims it to its first 2 records (another hour's put failed) and
    # the retry writes the other 3 again, with 2 new ones, as a new object of that hour
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"".join(lines[:2]))
    clock.now = T + timedelta(seconds=4)
    shards.batch(0, T + timedelta(seconds=3), [nginx_line(T, f"/batch/{n}") for n in range(2, 7)])
    # then only the 2 new records are printed
    assert uris(follower.poll()) == ["/batch/5", "/batch/6"]
    assert follower.poll() == []


def test_an_object_rewritten_with_more_records_prints_only_those(shards, follower, clock, s3_client, bucket):
    follower.start()
    clock.now = T + timedelta(seconds=2)
    shards.batch(0, T + timedelta(seconds=1), [nginx_line(T, f"/grow/{n}") for n in range(2)])
    assert uris(follower.poll()) == ["/grow/0", "/grow/1"]
    (key,) = bucket_keys(s3_client, bucket)
    lines = object_lines(s3_client, bucket, key)
    extra = json.dumps({**json.loads(lines[1]), "request_uri": "/grow/2"}).encode() + b"\n"
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"".join([*lines, extra]))
    assert uris(follower.poll()) == ["/grow/2"]
    assert follower.poll() == []


def bucket_keys(s3_client, bucket) -> list[str]:
    return [item["Key"] for item in s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_filters_status_class_path_prefix_and_client():
    records = [
        {"status": 503, "request_uri": "/v1/status", "remote_addr": "10.1.2.3"},
        {"status": 500, "request_uri": "/v1/checkout", "remote_addr": "192.168.0.9"},
        {"status": 404, "request_uri": "/v1/x", "remote_addr": "10.1.2.3"},
        {"status": 200, "request_uri": "/", "remote_addr": "10.9.9.9"},
        {"status": 400, "request_uri": None, "remote_addr": "::1"},
    ]

    def kept(**options) -> list:
        filters = tail.Filters(**options)
        return [r["status"] for r in records if filters.match(r)]

    assert kept(statuses=tail.parse_status("5xx")) == [503, 500]
    assert kept(statuses=tail.parse_status("404,2xx")) == [404, 200]
    assert kept(path="/v1/") == [503, 500, 404]
    assert kept(clients=[tail.parse_client("10.0.0.0/8")]) == [503, 404, 200]
    assert kept(clients=[tail.parse_client("::1")]) == [400]
    assert kept(statuses=tail.parse_status("5xx"), path="/v1/", clients=[tail.parse_client("10.1.2.3")]) == [503]


def test_readable_and_json_lines():
    record = {
        "timestamp": "2026-11-26T17:30:00Z",
        "status": 503,
        "remote_addr": "127.0.0.1",
        "request_method": "GET",
        "request_uri": "/v1/status",
        "body_bytes_sent": 197,
        "http_user_agent": "curl/8.5.0",
    }
    out = io.StringIO()
    tail.write([record], tail.Filters(), out, as_json=False)
    assert out.getvalue() == "2026-11-26T17:30:00Z 503 127.0.0.1       GET /v1/status  197 B  curl/8.5.0\n"
    out = io.StringIO()
    tail.write([record, {**record, "status": 200}], tail.Filters(statuses=[(500, 599)]), out, as_json=True)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [record]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--status", "6xx"], "not a status or class: '6xx'"),
        (["--client", "10.0.0.300"], "not an address or network"),
        (["--interval", "0"], "must be 0.05 to 3600 seconds"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args, message):
    run = subprocess.run([sys.executable, str(QUERY / "tail.py"), *args], capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr


def test_missing_bucket_is_one_line_and_exit_1(aws):
    run = subprocess.run(
        [sys.executable, str(QUERY / "tail.py"), "--endpoint-url", aws, "--bucket", "no-such-bucket"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 1 and run.stderr.startswith("tail: error: no bucket no-such-bucket")
    assert "Traceback" not in run.stderr


def test_the_command_starts_within_a_second_and_prints_what_lands(aws, bucket, shards):
    # given the tool following the bucket
    proc = subprocess.Popen(
        [sys.executable, str(QUERY / "tail.py"), "--endpoint-url", aws, "--interval", "0.1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        began = time.monotonic()
        assert proc.stderr.readline().startswith("tail: following s3://nginx-accesslog")
        started = time.monotonic() - began
        # when a batch lands
        now = datetime.now(UTC)
        shards.batch(0, now, [nginx_line(now, "/live/1", 503), nginx_line(now, "/live/2")])
        # then its records are printed, in order
        lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert [r["request_uri"] for r in lines] == ["/live/1", "/live/2"]
    assert started < 1.0, f"took {started:.2f} s to start"
