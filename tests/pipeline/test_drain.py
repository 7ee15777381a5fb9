"""`pipeline_cli.py drain` on the real LocalStack 4.14.0 (host process): real nginx -> the
fluentd stand-in -> LocalStack's Kinesis -> its event source mapping -> the deployed handler
-> LocalStack's S3. When drain says the stream is drained, every line put before it is in
S3, once, at that moment; when the function cannot keep up, drain says so and fails."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.s3 import bucket_objects

pytestmark = pytest.mark.localstack

CLI = Path(__file__).resolve().parents[2] / "init" / "pipeline_cli.py"


def access_line(path: str) -> str:
    return f'127.0.0.1 - - [27/Nov/2026:10:30:00 +0000] "GET {path} HTTP/1.1" 200 5 "-" "test" "-"'


def drain(pipeline, *args: str) -> subprocess.CompletedProcess:
    """The CLI as `./start.sh down` runs it: its own process, the pipeline's names."""
    names = pipeline.names
    return subprocess.run(
        [
            *(sys.executable, str(CLI), "--endpoint-url", pipeline.endpoint, "--stream", names.stream),
            *("--bucket", names.bucket, "--function", names.function, "drain", *args),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_lines(pipeline, paths: list[str]) -> None:
    with pipeline.nginx.access_log.open("a", encoding="utf-8") as log:
        log.write("".join(access_line(path) + "\n" for path in paths))


def uris(pipeline) -> collections.Counter:
    return collections.Counter(record["request_uri"] for _, record in pipeline.records())


def control_objects(pipeline) -> dict[str, bytes]:
    return bucket_objects(pipeline.s3, pipeline.names.bucket, "_pipeline/")


def markers_in_stream(pipeline) -> dict[str, list[str]]:
    """Per shard: the drain ids of the marker records it holds, read from the stream."""
    kinesis, stream = pipeline.kinesis, pipeline.names.stream
    found = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        ids = []
        while iterator:
            response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            for record in response["Records"]:
                if record["Data"].startswith(b'{"pipeline_drain"'):
                    ids.append(json.loads(record["Data"])["pipeline_drain"])
            if not response["Records"] and response.get("MillisBehindLatest", 0) == 0:
                break
            iterator = response.get("NextShardIterator")
        found[shard["ShardId"]] = ids
    return found


def flush(pipeline, paths: list[str]) -> None:
    """Write lines to the access log and ship them at once, as fluentd's last flush does."""
    write_lines(pipeline, paths)
    assert pipeline.shipper.ship_once() == len(paths)


def test_lines_put_right_before_drain_are_in_s3_when_it_returns(start_pipeline):
    # given lines that reach the stream the moment before drain (fluentd's last flush), and
    # a function whose first attempt fails (LocalStack's mapping retries about a second later)
    pipeline = start_pipeline()
    pipeline.shipper.stop()
    pipeline.localstack.inject_fault(pipeline.names.function, "raise")
    paths = [f"/drain/last/{n}" for n in range(30)]
    flush(pipeline, paths)
    # when draining at once
    result = drain(pipeline)
    # then drain says so, every line is in S3 exactly once right now, and no control object is left
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("stream drained: every record put before ")
    assert f"is in s3://{pipeline.names.bucket} (1 shard, " in result.stdout
    assert uris(pipeline) == collections.Counter(paths)
    assert control_objects(pipeline) == {}
    assert [i["error"] for i in pipeline.invocations()][:2] == ["RuntimeError", None]


def test_lines_in_the_shippers_buffer_need_a_flush_before_the_drain(start_pipeline):
    # given a shipper holding a chunk it will not flush for an hour
    pipeline = start_pipeline(flush_interval=3600)
    paths = [f"/drain/buffered/{n}" for n in range(20)]
    write_lines(pipeline, paths)
    # when draining without flushing first
    first = drain(pipeline)
    # then the stream is drained, but the buffered lines are not in S3: drain covers the stream only
    assert first.returncode == 0, first.stderr
    assert pipeline.shipper.shipped == 0 and uris(pipeline) == collections.Counter()
    # when the shipper is stopped with a flush (as `./start.sh down` waits for fluentd's), then drained
    pipeline.shipper.stop()
    assert pipeline.shipper.ship_once() == len(paths)
    second = drain(pipeline)
    # then every line is in S3 exactly once
    assert second.returncode == 0, second.stderr
    assert uris(pipeline) == collections.Counter(paths)
    assert control_objects(pipeline) == {}


FAILURES = 40  # LocalStack's mapping retried about once a second: 6 in the drain's 6 s


def test_a_failing_function_makes_drain_fail_and_say_what_is_lost(start_pipeline):
    # given lines in the stream and a function that fails every invocation for a while
    pipeline = start_pipeline()
    pipeline.shipper.stop()
    for _ in range(FAILURES):
        pipeline.localstack.inject_fault(pipeline.names.function, "raise")
    paths = [f"/drain/failing/{n}" for n in range(10)]
    flush(pipeline, paths)
    # when draining with a short timeout
    result = drain(pipeline, "--timeout", "6")
    # then it fails naming the shard, says what that means, and printed its progress
    assert result.returncode == 1 and result.stdout == ""
    *progress, verdict = result.stderr.splitlines()
    assert progress == ["waiting for the function to consume the stream: 0 of 1 shards done (5 s)"]
    assert "shardId-000000000000" in verdict
    assert "records still in those shards are lost when LocalStack stops" in verdict
    assert "./start.sh logs shows why the function is not keeping up" in verdict
    failed = [i for i in pipeline.invocations() if i["error"] == "RuntimeError"]
    assert 0 < len(failed) < FAILURES, "the function was still failing when drain gave up"
    assert uris(pipeline) == collections.Counter()
    # when the function recovers (the faults left are removed), a new drain succeeds
    for fault in (pipeline.localstack.faults_dir / pipeline.names.function).glob("raise-*.json"):
        fault.unlink(missing_ok=True)
    again = drain(pipeline)
    assert again.returncode == 0, again.stderr
    # and every line is in S3 exactly once; no acknowledgement is left, the late one included
    assert uris(pipeline) == collections.Counter(paths)
    assert control_objects(pipeline) == {}


def test_two_shards_get_one_marker_each_and_both_are_acknowledged(start_pipeline):
    # given two shards, and lines in both (one record per line, random keys)
    pipeline = start_pipeline("--shards", "2", output="kinesis_streams")
    pipeline.shipper.stop()
    paths = [f"/drain/shards/{n}" for n in range(60)]
    flush(pipeline, paths)
    # when draining
    result = drain(pipeline)
    # then both shards were consumed up to their marker, and every line is in S3 once
    assert result.returncode == 0, result.stderr
    assert "(2 shards, " in result.stdout
    assert uris(pipeline) == collections.Counter(paths)
    markers = markers_in_stream(pipeline)
    assert sorted(markers) == ["shardId-000000000000", "shardId-000000000001"]
    assert all(len(ids) == 1 for ids in markers.values()) and len({ids[0] for ids in markers.values()}) == 1
    assert control_objects(pipeline) == {}
