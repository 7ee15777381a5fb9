"""The query tool reads verified local copies (the saved-logs folder, the object cache)
instead of GETs: the same answers as from S3, never a deleted or replaced object."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from datetime import UTC, datetime, timedelta

import boto3
import bucket_mirror
import bucket_reader
import compact_hours
import logs_query
import pytest
from support.query_data import nginx_line

T17 = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)
HOUR = "2026/11/26/17/"
BUCKET = "nginx-accesslog"
EVERY_ROW = """SELECT request_uri AS line FROM logs UNION ALL
               SELECT from_base64("rawData")::VARCHAR FROM errors ORDER BY 1"""


class CountingBucket(logs_query.Bucket):
    """The bucket as the reader sees it, counting the GETs it sends."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1"), BUCKET)
        self.gets: list[str] = []

    def get(self, key: str) -> bytes:
        self.gets.append(key)
        return super().get(key)


def lines(bucket: logs_query.Bucket, local: bucket_reader.LocalCopies | None, sql: str = EVERY_ROW) -> Counter:
    out = io.StringIO()
    logs_query.query(bucket, T17, T17 + timedelta(hours=1), sql, "json", out, local=local)
    return Counter(json.dumps(json.loads(row), sort_keys=True) for row in out.getvalue().splitlines())


def uris(bucket: logs_query.Bucket, local: bucket_reader.LocalCopies | None) -> Counter:
    return Counter(json.loads(row)["line"] for row in lines(bucket, local))


@pytest.fixture
def hour(aws, writer) -> Counter:
    """Hour 17 as the stack leaves it: batches merged by a compaction (one of them gzip),
    then batches that arrived after it, with unparsed lines."""
    expected: Counter = Counter()
    for n in range(6):
        at = T17 + timedelta(minutes=9 * n)
        batch = [nginx_line(at + timedelta(seconds=s), f"/b{n}/r{s}") for s in range(3)] + [f"junk {n}"]
        writer.batch(batch, arrival=at, compression="gzip" if n % 3 == 2 else "")
        expected.update([f"/b{n}/r{s}" for s in range(3)] + [f"junk {n}"])
        if n == 3:
            compact_hours.compact_hour(logs_query.Bucket(boto3.client("s3", endpoint_url=aws), BUCKET), HOUR)
    return expected


@pytest.fixture
def saved(aws, tmp_path):
    """The saved-logs folder as the stack's watcher fills it (init/bucket_mirror.py)."""
    root = tmp_path / "saved-logs"
    copy = bucket_mirror.Copy(root, BUCKET)
    assert bucket_mirror.catch_up(boto3.client("s3", endpoint_url=aws), copy) > 0
    return root, copy


def test_the_saved_logs_give_the_answers_s3_gives_without_a_get(aws, hour, saved):
    root, _ = saved
    from_s3, from_disk = CountingBucket(aws), CountingBucket(aws)
    local = bucket_reader.LocalCopies(BUCKET, saved=root)
    # the same rows, for every row and for a typical GROUP BY
    assert uris(from_disk, local) == uris(from_s3, None) == hour
    group_by = "SELECT status, count(*) AS n FROM logs GROUP BY 1 ORDER BY 1"
    assert lines(CountingBucket(aws), local, group_by) == lines(CountingBucket(aws), None, group_by)
    # the S3 path GETs every object; the saved-logs path only the manifest
    assert len(from_s3.gets) > 3
    assert [key.rsplit("/", 1)[-1] for key in from_disk.gets] == [bucket_reader.MANIFEST_NAME]


def test_the_summary_is_the_same_from_disk_and_from_s3(aws, hour, saved):
    root, _ = saved
    outputs = []
    for local in (None, bucket_reader.LocalCopies(BUCKET, saved=root)):
        out = io.StringIO()
        logs_query.query(CountingBucket(aws), T17, T17 + timedelta(hours=1), None, "table", out, local=local)
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1]
    assert outputs[0].startswith("18 requests, 6 unparsed line(s)")


def raw_keys(s3) -> list[str]:
    """The hour's objects that no compaction merged yet."""
    listed = logs_query.Bucket(s3, BUCKET).list(HOUR)
    return sorted(k for k in listed if "_compacted_" not in k and not k.rsplit("/", 1)[-1].startswith("_"))


def uris_in(body: bytes) -> set[str]:
    return {
        json.loads(line)["request_uri"] for line in bucket_reader.plain(body).splitlines() if b"request_uri" in line
    }


def test_a_stale_or_missing_saved_file_is_fetched_and_a_deleted_object_never_read(aws, hour, saved, writer):
    root, copy = saved
    s3 = boto3.client("s3", endpoint_url=aws)
    replaced, deleted = raw_keys(s3)[:2]
    # given an object replaced in S3 by lines of the same length (the copy not updated yet),
    old = copy.path(replaced).read_bytes()
    s3.put_object(Bucket=BUCKET, Key=replaced, Body=bucket_reader.plain(old).replace(b'"/b', b'"/x'))
    # an object deleted in S3 but still in the copy, and a newer batch not saved yet
    s3.delete_object(Bucket=BUCKET, Key=deleted)
    at = T17 + timedelta(minutes=58)
    writer.batch([nginx_line(at, "/fresh")], arrival=at)
    reader = CountingBucket(aws)
    seen = uris(reader, bucket_reader.LocalCopies(BUCKET, saved=root))
    # then the query sees what S3 holds now, not what the copy holds
    assert seen == uris(CountingBucket(aws), None)
    assert "/fresh" in seen
    assert uris_in(old) and not uris_in(old) & set(seen)
    assert copy.path(deleted).exists() and not uris_in(copy.path(deleted).read_bytes()) & set(seen)
    # and only the replaced object, the new one and the manifest were fetched
    fetched = [key for key in reader.gets if not key.endswith(bucket_reader.MANIFEST_NAME)]
    assert replaced in fetched and deleted not in fetched and len(fetched) == 2


def test_a_repeated_query_fetches_only_new_objects_and_never_a_replaced_one(aws, hour, writer, tmp_path):
    cache = bucket_reader.LocalCopies(BUCKET, cache=tmp_path / "cache")
    first = CountingBucket(aws)
    assert uris(first, cache) == hour
    # a repeat: only the manifest is fetched again
    again = CountingBucket(aws)
    assert uris(again, cache) == hour
    assert [key.rsplit("/", 1)[-1] for key in again.gets] == [bucket_reader.MANIFEST_NAME]
    # a replaced object is fetched anew, a deleted one is gone, a new batch is fetched
    s3 = boto3.client("s3", endpoint_url=aws)
    replaced, deleted = raw_keys(s3)[:2]
    old = s3.get_object(Bucket=BUCKET, Key=replaced)["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=replaced, Body=bucket_reader.plain(old).replace(b'"/b', b'"/y'))
    s3.delete_object(Bucket=BUCKET, Key=deleted)
    at = T17 + timedelta(minutes=58)
    writer.batch([nginx_line(at, "/new")], arrival=at)
    third = CountingBucket(aws)
    seen = uris(third, cache)
    assert seen == uris(CountingBucket(aws), None)
    assert "/new" in seen and not uris_in(old) & set(seen)
    fetched = [key for key in third.gets if not key.endswith(bucket_reader.MANIFEST_NAME)]
    assert replaced in fetched and deleted not in fetched and len(fetched) == 2


def test_a_cached_file_that_is_not_the_etag_is_never_served(aws, hour, tmp_path):
    cache_dir = tmp_path / "cache"
    cache = bucket_reader.LocalCopies(BUCKET, cache=cache_dir)
    uris(CountingBucket(aws), cache)
    # given every cached file overwritten with other lines (a disk fault, a tampered file)
    for path in cache_dir.iterdir():
        path.write_bytes(b'{"request_uri": "/forged"}\n')
    reader = CountingBucket(aws)
    # then the query fetches every object again and sees none of it
    assert uris(reader, cache) == hour
    assert len(reader.gets) > 3


def test_the_cache_keeps_the_most_recently_used_objects_within_its_limit(tmp_path):
    cache = bucket_reader.LocalCopies(BUCKET, cache=tmp_path)
    bodies = [bytes([65 + n]) * 1000 + b"\n" for n in range(5)]
    etags = []
    for n, body in enumerate(bodies):
        etag = '"' + hashlib.md5(body).hexdigest() + '"'  # noqa: S324 - S3's ETag
        etags.append(etag)
        cache.keep(etag, body)
        os.utime(tmp_path / etag.strip('"'), (1000 + n, 1000 + n))
    assert cache.find("any/key", etags[0]) == bodies[0]  # used now: the most recent
    cache.trim(limit=3 * 1001)
    assert [cache.find("k", e) is not None for e in etags] == [True, False, False, True, True]


@pytest.mark.parametrize("etag", ['"0123456789abcdef0123456789abcdef-3"', "", "W/x"])
def test_an_etag_that_is_not_an_md5_is_never_looked_up_or_cached(tmp_path, etag):
    cache = bucket_reader.LocalCopies(BUCKET, saved=tmp_path, cache=tmp_path / "cache")
    cache.keep(etag, b"line\n")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
    assert cache.find("2026/11/26/17/x.json", etag) is None


def test_the_command_reads_the_saved_logs_and_says_so(aws, hour, saved, capsys):
    root, _ = saved
    code = logs_query.main(
        ["--endpoint-url", aws, "--from", "2026-11-26T17:00Z", "--to", "2026-11-26T18:00Z", "--saved-logs", str(root)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("18 requests, 6 unparsed line(s)")
    # every object (the manifest is not one: it is always fetched)
    assert "read 9 object(s) (9 already on this machine)" in captured.err


def test_a_merge_beside_the_stack_is_read_from_its_kept_parts_before_the_saved_logs_have_them(
    aws, hour, saved, writer, tmp_path
):
    root, _ = saved
    s3 = boto3.client("s3", endpoint_url=aws)
    expected = uris(CountingBucket(aws), None)
    # given the closed hour merged again by a compaction that keeps its parts (the stack's
    # compactor, ./start.sh compact), the saved logs not yet told of the merge
    cache_dir = tmp_path / "cache"
    outcome = compact_hours.compact_hour(
        logs_query.Bucket(s3, BUCKET), HOUR, cache=bucket_reader.LocalCopies(BUCKET, cache=cache_dir)
    )
    assert outcome.merged and outcome.deleted
    parts = {item["Key"]: item["ETag"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    parts = {key: etag for key, etag in parts.items() if "_compacted_" in key}
    assert parts and not any((root / BUCKET / key).exists() for key in parts)
    # each part, and its records as Parquet
    kept = sorted(name for e in parts.values() for name in columnar_and_part(e))
    assert sorted(p.name for p in cache_dir.iterdir()) == kept
    # then a reader with both finds every line once, fetching only the manifest
    local = bucket_reader.LocalCopies(BUCKET, saved=root, cache=cache_dir)
    reader = CountingBucket(aws)
    assert uris(reader, local) == expected == hour
    assert [key.rsplit("/", 1)[-1] for key in reader.gets] == [bucket_reader.MANIFEST_NAME]
    # and what it fetches beside the saved logs (a batch they will have in seconds) is not
    # cached again
    at = T17 + timedelta(minutes=59)
    writer.batch([nginx_line(at, "/late")], arrival=at)
    reader = CountingBucket(aws)
    assert uris(reader, local) == expected + Counter(["/late"])
    assert len(reader.gets) == 2 and sorted(p.name for p in cache_dir.iterdir()) == kept
    local.trim(limit=0)  # a reader that kept nothing removes nothing (its mount may be read-only)
    assert sorted(p.name for p in cache_dir.iterdir()) == kept


def columnar_and_part(etag: str) -> list[str]:
    digest = bucket_reader.md5_of(etag)
    return [digest, digest + logs_query.columnar_suffix()]


EVERY_COLUMN = "SELECT * FROM logs"


def merge_keeping_parts(aws, cache_dir, prefixes=(HOUR, bucket_reader.ERROR_PREFIX + HOUR)) -> dict[str, str]:
    """The hour merged (records and errors) by a compaction that keeps its parts in
    `cache_dir`: the merged parts' keys and ETags."""
    s3 = boto3.client("s3", endpoint_url=aws)
    cache = bucket_reader.LocalCopies(BUCKET, cache=cache_dir)
    for prefix in prefixes:
        compact_hours.compact_hour(logs_query.Bucket(s3, BUCKET), prefix, cache=cache)
    listed = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    return {item["Key"]: item["ETag"] for item in listed if "_compacted_" in item["Key"]}


def test_a_merged_part_read_as_parquet_gives_every_column_its_json_gives(aws, hour, tmp_path):
    from_s3 = lines(CountingBucket(aws), None, EVERY_COLUMN)
    summary_from_s3 = io.StringIO()
    logs_query.query(CountingBucket(aws), T17, T17 + timedelta(hours=1), None, "table", summary_from_s3)
    cache_dir = tmp_path / "cache"
    parts = merge_keeping_parts(aws, cache_dir)
    records = [e for k, e in parts.items() if not k.startswith(bucket_reader.ERROR_PREFIX)]
    errors = [e for k, e in parts.items() if k.startswith(bucket_reader.ERROR_PREFIX)]
    assert records and errors
    # the records' parts have a Parquet copy, the errors' parts none (the tool loads them as lines)
    copies = {p.name for p in cache_dir.iterdir() if p.name.endswith(logs_query.columnar_suffix())}
    assert copies == {bucket_reader.md5_of(e) + logs_query.columnar_suffix() for e in records}
    # given only the copies of the records' parts (their JSON Lines removed)
    for etag in records:
        (cache_dir / bucket_reader.md5_of(etag)).unlink()
    local = bucket_reader.LocalCopies(BUCKET, cache=cache_dir)
    reader = CountingBucket(aws)
    # then every row has every column as S3's JSON Lines give it, and the summary is the same
    assert lines(reader, local, EVERY_COLUMN) == from_s3
    assert sum(from_s3.values()) == 18
    assert sorted(reader.gets) == sorted(p + bucket_reader.MANIFEST_NAME for p in (HOUR, "errors/" + HOUR))
    summary = io.StringIO()
    logs_query.query(CountingBucket(aws), T17, T17 + timedelta(hours=1), None, "table", summary, local=local)
    assert summary.getvalue() == summary_from_s3.getvalue()
    # and a range inside the hour keeps only its rows, as from S3
    inside = (T17 + timedelta(minutes=9), T17 + timedelta(minutes=27))
    answers = []
    for use in (local, None):
        out = io.StringIO()
        logs_query.query(CountingBucket(aws), *inside, "SELECT request_uri FROM logs ORDER BY 1", "csv", out, local=use)
        answers.append(out.getvalue())
    assert answers[0] == answers[1] and answers[0].count("/b") == 6


def test_a_parquet_copy_cut_short_is_never_served(aws, hour, tmp_path):
    cache_dir = tmp_path / "cache"
    parts = merge_keeping_parts(aws, cache_dir, prefixes=(HOUR,))
    expected = lines(CountingBucket(aws), None, EVERY_COLUMN)
    # given each Parquet copy cut short (a disk filled while it was copied elsewhere) and no
    # JSON Lines copy
    for etag in parts.values():
        copy = cache_dir / (bucket_reader.md5_of(etag) + logs_query.columnar_suffix())
        copy.write_bytes(copy.read_bytes()[: copy.stat().st_size // 2])
        (cache_dir / bucket_reader.md5_of(etag)).unlink()
    reader = CountingBucket(aws)
    # then the parts are fetched and the rows are the same
    assert lines(reader, bucket_reader.LocalCopies(BUCKET, cache=cache_dir), EVERY_COLUMN) == expected
    records = [key for key in reader.gets if key.startswith(HOUR)]  # the errors' are not merged here
    assert sorted(records) == sorted([*parts, HOUR + bucket_reader.MANIFEST_NAME])


def test_a_merge_that_cannot_make_parquet_keeps_its_parts_and_says_so_once(aws, hour, tmp_path, capsys, monkeypatch):
    def no_duckdb(source, target):
        raise ModuleNotFoundError("No module named 'duckdb'")

    monkeypatch.setattr(logs_query, "write_columnar", no_duckdb)
    expected = uris(CountingBucket(aws), None)
    cache_dir = tmp_path / "cache"
    parts = merge_keeping_parts(aws, cache_dir, prefixes=(HOUR,))
    # then the merge is whole, its parts kept as they are, and the reason said once
    said = capsys.readouterr().err.splitlines()
    assert said == [f"compact_hours: not keeping Parquet copies in {cache_dir}: No module named 'duckdb'"]
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted(bucket_reader.md5_of(e) for e in parts.values())
    reader = CountingBucket(aws)
    assert uris(reader, bucket_reader.LocalCopies(BUCKET, cache=cache_dir)) == expected
    assert [key for key in reader.gets if key.startswith(HOUR)] == [HOUR + bucket_reader.MANIFEST_NAME]


def test_a_cache_that_cannot_be_written_costs_the_merge_nothing(aws, hour, tmp_path, capsys):
    s3 = boto3.client("s3", endpoint_url=aws)
    expected = uris(CountingBucket(aws), None)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")  # given a cache path that is a file
    cache = bucket_reader.LocalCopies(BUCKET, cache=blocked)
    outcome = compact_hours.compact_hour(logs_query.Bucket(s3, BUCKET), HOUR, cache=cache)
    # then the merge is whole and the reason is said once
    assert outcome.merged and uris(CountingBucket(aws), None) == expected
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 1 and said[0].startswith(f"compact_hours: not keeping merged parts in {blocked}:"), said
    assert cache.cache is None
