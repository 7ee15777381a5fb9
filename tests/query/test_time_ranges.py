"""Compacted objects carry their lines' time range in the manifest, and a query over part
of an hour reads only the objects that may hold its rows: the same answer, fewer reads."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import boto3
import bucket_reader
import compact_hours
import logs_query
import pytest
from support.query_data import timed_line

T17 = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)
HOUR = "2026/11/26/17/"
BUCKET = "nginx-accesslog"


class CountingBucket(logs_query.Bucket):
    def __init__(self, endpoint: str) -> None:
        super().__init__(boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1"), BUCKET)
        self.gets: list[str] = []

    def get(self, key: str) -> bytes:
        self.gets.append(key)
        return super().get(key)


def rows(bucket: logs_query.Bucket, start: datetime, end: datetime) -> list[str]:
    out = io.StringIO()
    sql = """SELECT request_uri AS line FROM logs UNION ALL
             SELECT from_base64("rawData")::VARCHAR FROM errors ORDER BY 1"""
    logs_query.query(bucket, start, end, sql, "json", out)
    return [json.loads(row)["line"] for row in out.getvalue().splitlines()]


def test_time_range_is_the_earliest_and_latest_time_a_query_filters_on():
    records = b"".join(
        (timed_line(T17 + timedelta(minutes=m), f"/m{m}", f"{m:032x}") + "\n").encode() for m in (7, 3, 41)
    )
    # the lines as the handler writes them (records through the real parser)
    from access_line import line_to_json

    data = b"".join(line_to_json(line.decode())[1].encode() + b"\n" for line in records.splitlines())
    assert compact_hours.time_range(HOUR, data) == ["2026-11-26T17:03:00Z", "2026-11-26T17:41:00Z"]
    arrival = T17.timestamp()
    errors = b'{"errorCode": "X", "approximateArrivalTimestamp": %.2f}\n' % (
        arrival + 60.5
    ) + b'{"errorCode": "Y", "approximateArrivalTimestamp": %.2f}\n' % (arrival + 0.25)
    assert compact_hours.time_range("errors/" + HOUR, errors) == [
        "2026-11-26T17:00:00.250000+00:00",
        "2026-11-26T17:01:00.500000+00:00",
    ]
    assert compact_hours.time_range(HOUR, b'{"a": 1}\n') is None


@pytest.fixture
def compacted_hour(aws, writer, monkeypatch):
    """Hour 17: a batch every 5 minutes (with an unparsed line), merged into parts that
    each hold a stretch of the hour, and one batch that arrived after the merge."""
    monkeypatch.setattr(compact_hours, "PART_BYTES", 2500)
    for minute in range(0, 60, 5):
        at = T17 + timedelta(minutes=minute)
        lines = [timed_line(at + timedelta(seconds=s), f"/m{minute}s{s}", f"{minute:016x}{s:016x}") for s in range(3)]
        writer.batch([*lines, f"junk {minute}"], arrival=at)
    bucket = logs_query.Bucket(boto3.client("s3", endpoint_url=aws), BUCKET)
    compact_hours.compact_hour(bucket, HOUR)
    compact_hours.compact_hour(bucket, "errors/" + HOUR)
    late = T17 + timedelta(minutes=2)
    writer.batch([timed_line(late, "/late", "f" * 32)], arrival=T17 + timedelta(minutes=57))
    manifest = bucket_reader.read_manifest(bucket, HOUR, bucket.list(HOUR))
    assert len(manifest["objects"]) > 3 and set(manifest["ranges"]) == set(manifest["objects"])
    return manifest


@pytest.mark.parametrize(("first", "last"), [(0, 60), (45, 60), (50, 51), (10, 25), (2, 3), (59, 60), (30, 31)])
def test_a_query_over_part_of_an_hour_reads_fewer_objects_for_the_same_rows(
    aws, compacted_hour, first, last, monkeypatch
):
    start, end = T17 + timedelta(minutes=first), T17 + timedelta(minutes=last)
    narrow = CountingBucket(aws)
    answer = rows(narrow, start, end)
    # the same rows as when every object is read
    monkeypatch.setattr(bucket_reader, "_may_overlap", lambda manifest, key, window: True)
    every = CountingBucket(aws)
    assert answer == rows(every, start, end)
    assert ("/late" in answer) == (first <= 2 < last)  # a raw object is always read
    if last - first < 60:
        assert len(narrow.gets) < len(every.gets)


def test_rolling_passes_keep_a_range_for_every_object(aws, writer):
    bucket = logs_query.Bucket(boto3.client("s3", endpoint_url=aws), BUCKET)
    later = datetime.now(UTC) + compact_hours.SETTLE_OPEN + timedelta(seconds=1)
    for minute in (1, 2, 3):
        at = T17 + timedelta(minutes=minute)
        writer.batch([timed_line(at, f"/p{minute}", f"{minute:032x}")], arrival=at)
        compact_hours.roll_hour(bucket, HOUR, now=later)
    manifest = bucket_reader.read_manifest(bucket, HOUR, bucket.list(HOUR))
    assert set(manifest["ranges"]) == set(manifest["objects"])
    earliest = min(span[0] for span in manifest["ranges"].values())
    latest = max(span[1] for span in manifest["ranges"].values())
    assert (earliest, latest) == ("2026-11-26T17:01:00Z", "2026-11-26T17:03:00Z")
