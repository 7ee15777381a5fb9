"""Compaction against moto server: one object per hour, and never a line missing or twice."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import boto3
import bucket_reader
import compact_hours
import logs_query
import pytest
from support.query_data import nginx_line, timed_line

T17 = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)
HOUR, ERRORS = "2026/11/26/17/", "errors/2026/11/26/17/"
BUCKET = "nginx-accesslog"


def new_bucket(endpoint: str) -> logs_query.Bucket:
    return logs_query.Bucket(boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1"), BUCKET)


def seen(bucket: logs_query.Bucket) -> Counter:
    """Every line the query tool sees in hour 17: request URIs and unparsed lines, counted."""
    out = io.StringIO()
    sql = """SELECT request_uri AS line FROM logs UNION ALL
             SELECT from_base64("rawData")::VARCHAR FROM errors"""
    logs_query.query(bucket, T17, T17 + timedelta(hours=1), sql, "json", out)
    return Counter(json.loads(row)["line"] for row in out.getvalue().splitlines())


def keys(bucket: logs_query.Bucket) -> list[str]:
    return sorted(bucket.list(""))


@pytest.fixture
def hour(aws, writer) -> Counter:
    """Hour 17 as the stack writes it: five batches (one gzip), with unparsed lines."""
    expected: Counter = Counter()
    for n in range(5):
        at = T17 + timedelta(minutes=10 * n)
        lines = [nginx_line(at + timedelta(seconds=s), f"/b{n}/r{s}") for s in range(4)] + [f"junk {n}"]
        writer.batch(lines, arrival=at, compression="gzip" if n == 2 else "")
        expected.update([f"/b{n}/r{s}" for s in range(4)] + [f"junk {n}"])
    return expected


def late_batch(writer, expected: Counter) -> None:
    """A batch of hour 17 that lands after the hour was compacted (a retried batch)."""
    at = T17 + timedelta(minutes=59)
    writer.batch([nginx_line(at, "/late"), "late junk"], arrival=at)
    expected.update(["/late", "late junk"])


def test_each_prefix_becomes_one_object_and_a_rerun_changes_nothing(aws, hour):
    bucket = new_bucket(aws)
    assert seen(bucket) == hour
    first = [compact_hours.compact_hour(bucket, prefix) for prefix in (HOUR, ERRORS)]
    after = keys(bucket)
    merged = {key: bucket.get(key) for key in after}
    second = [compact_hours.compact_hour(bucket, prefix) for prefix in (HOUR, ERRORS)]
    assert [o.merged for o in first] == [5, 5] and [str(o) for o in second] == [
        f"{HOUR}: unchanged",
        f"{ERRORS}: unchanged",
    ]
    assert next(k.rsplit("/", 1)[-1] for k in after if k.startswith(HOUR)) == "_compaction.json"
    assert len([k for k in after if k.startswith(HOUR)]) == 2 and len([k for k in after if k.startswith(ERRORS)]) == 2
    assert {key: bucket.get(key) for key in keys(bucket)} == merged  # same keys, same bytes
    assert seen(bucket) == hour


def test_late_objects_are_read_beside_the_merged_one_then_merged(aws, hour, writer):
    bucket = new_bucket(aws)
    compact_hours.compact_hour(bucket, HOUR)
    late_batch(writer, hour)
    assert seen(bucket) == hour
    outcome = compact_hours.compact_hour(bucket, HOUR)
    assert (outcome.merged, outcome.deleted) == (1, 2)  # the late object into the earlier merged one
    assert len([k for k in keys(bucket) if k.startswith(HOUR)]) == 2
    assert seen(bucket) == hour


def merged_lines(bucket: logs_query.Bucket, prefix: str) -> list[dict]:
    """The records of the hour's merged object, read raw (not through the query tool)."""
    manifest = bucket_reader.read_manifest(bucket, prefix, bucket.list(prefix))
    merged = bucket.get(bucket_reader.manifest_objects(manifest)[-1])
    return [json.loads(line) for line in bucket_reader.plain(merged).splitlines()]


def test_a_compacted_hour_holds_each_request_id_once(aws, writer):
    # given timed requests, fluentd's re-send of some of them in a second and (after the
    # compaction) a third object, and two identical lines without an id
    bucket = new_bucket(aws)
    at = T17 + timedelta(minutes=59, seconds=58)
    timed = [timed_line(at, f"/t{n}", f"{n:032x}") for n in range(6)]
    plain = [nginx_line(at, "/same"), nginx_line(at, "/same")]
    writer.batch(timed + plain, arrival=at)
    writer.batch(timed[:4], arrival=at + timedelta(seconds=5))  # arrives in hour 18
    # when the hour is compacted
    first = compact_hours.compact_hour(bucket, HOUR)
    # then the merged object holds each id once and every line without one
    ids = Counter(record.get("request_id") for record in merged_lines(bucket, HOUR))
    assert ids == Counter({**{f"{n:032x}": 1 for n in range(6)}, None: 2})
    assert (first.merged, first.dropped) == (2, 4) and str(first).endswith("4 re-sent line(s) dropped")
    # and a re-send that lands after the compaction is dropped by the next run
    writer.batch(timed[4:], arrival=at + timedelta(minutes=3))
    assert seen(bucket) == Counter([f"/t{n}" for n in range(6)] + ["/same", "/same"])
    second = compact_hours.compact_hour(bucket, HOUR)
    assert (second.merged, second.dropped) == (1, 2)
    assert Counter(record.get("request_id") for record in merged_lines(bucket, HOUR)) == ids


def test_dedupe_keeps_lines_whose_text_only_looks_like_an_id():
    # a field's text holding the key is escaped inside its JSON string: never taken for it
    fake = b'{"http_user_agent":"x\\",\\"request_id\\":\\"aa\\"","request_id":null}\n'
    data = fake * 2 + b'{"a":1,"request_id":"aa"}\n' * 2
    assert compact_hours.first_of_each_request(data) == fake * 2 + b'{"a":1,"request_id":"aa"}\n'


class Crash(Exception):
    pass


@pytest.mark.parametrize("late", [False, True], ids=["first-run", "rerun-with-a-late-batch"])
@pytest.mark.parametrize("step", compact_hours.STEPS)
def test_a_crash_after_any_step_never_shows_a_line_missing_or_twice(aws, hour, writer, step, late):
    # given an hour (compacted once already, with a late batch since, in the second case)
    bucket = new_bucket(aws)
    if late:
        compact_hours.compact_hour(bucket, HOUR)
        late_batch(writer, hour)

    def crash(done: str) -> None:
        assert seen(bucket) == hour  # every step leaves every line visible exactly once
        if done == step:
            raise Crash(done)

    # when a compaction stops after `step`
    with pytest.raises(Crash):
        compact_hours.compact_hour(bucket, HOUR, after_step=crash)
    # then the query still sees each line once, and a rerun finishes the job
    assert seen(bucket) == hour
    compact_hours.compact_hour(bucket, HOUR)
    assert seen(bucket) == hour
    assert len([k for k in keys(bucket) if k.startswith(HOUR)]) == 2


class RacingBucket(logs_query.Bucket):
    """A reader's bucket: right after its first `list` or `get`, a compaction runs to the end."""

    def __init__(self, endpoint: str, when: str) -> None:
        super().__init__(boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1"), BUCKET)
        self.other, self.when, self.done = new_bucket(endpoint), when, False

    def _race(self, what: str, prefix: str) -> None:
        if what == self.when and not self.done and prefix.startswith(HOUR):
            self.done = True
            compact_hours.compact_hour(self.other, HOUR)

    def etags(self, prefix: str) -> dict[str, str]:  # the reader's listing
        found = super().etags(prefix)
        self._race("list", prefix)
        return found

    def get(self, key: str) -> bytes:
        body = super().get(key)
        self._race("get", key)
        return body


@pytest.mark.parametrize("when", ["list", "get"])
@pytest.mark.parametrize("late", [False, True], ids=["first-run", "rerun-with-a-late-batch"])
def test_a_query_racing_a_compaction_sees_each_line_once(aws, hour, writer, when, late):
    if late:
        compact_hours.compact_hour(new_bucket(aws), HOUR)
        late_batch(writer, hour)
    racing = RacingBucket(aws, when)
    assert seen(racing) == hour
    assert racing.done


def test_command_compacts_closed_hours_only(aws, bucket, writer, capsys):
    now = datetime.now(UTC)
    closed, current = now - timedelta(hours=2), now
    writer.batch([nginx_line(closed, "/a"), nginx_line(closed + timedelta(seconds=1), "/b")], arrival=closed)
    writer.batch([nginx_line(closed, "/c")], arrival=closed + timedelta(seconds=2))
    writer.batch([nginx_line(current, "/now")], arrival=current)
    code = compact_hours.main(["--endpoint-url", aws, "--since", "3h"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"{closed:%Y/%m/%d/%H}/: 2 object(s) merged, 2 deleted" in out
    assert f"{current:%Y/%m/%d/%H}/" not in out
    assert compact_hours.main(["--endpoint-url", aws, "--since", "3h"]) == 0
    assert "merged" not in capsys.readouterr().out


def test_command_keeps_the_parts_where_query_cache_dir_says(aws, bucket, writer, capsys, monkeypatch, tmp_path):
    closed = datetime.now(UTC) - timedelta(hours=2)
    writer.batch([nginx_line(closed, "/a")], arrival=closed)
    writer.batch([nginx_line(closed, "/b")], arrival=closed + timedelta(seconds=1))
    monkeypatch.setenv("QUERY_CACHE_DIR", str(tmp_path / "cache"))  # as the stack's compose sets it
    assert compact_hours.main(["--endpoint-url", aws, "--since", "3h"]) == 0, capsys.readouterr().err
    listed = boto3.client("s3", endpoint_url=aws).list_objects_v2(Bucket=bucket)["Contents"]
    parts = [item["ETag"] for item in listed if "_compacted_" in item["Key"]]
    assert len(parts) == 1
    digest = bucket_reader.md5_of(parts[0])
    # the part, and its records as Parquet for the query tools
    assert sorted(f.name for f in (tmp_path / "cache").iterdir()) == [digest, digest + logs_query.columnar_suffix()]


def test_bad_flags_exit_2(capsys):
    with pytest.raises(SystemExit) as exited:
        compact_hours.main(["--settle", "later"])
    assert exited.value.code == 2 and "compact_hours.py: error:" in capsys.readouterr().err
