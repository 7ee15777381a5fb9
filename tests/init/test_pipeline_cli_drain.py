"""`pipeline_cli.py drain` on moto, with the handler behind the event source mapping stand-in
(tests/support/event_source_mapping.py); the same on the real LocalStack in
tests/pipeline/test_drain.py."""

from __future__ import annotations

import contextlib
import io
import json
import uuid

import boto3
import init_resource
import pipeline_cli
import pytest
from support.event_source_mapping import EventSourceMapping
from support.events import fluentd_message
from support.s3 import bucket_objects

LINE = '203.0.113.9 - - [27/May/2020:08:23:31 +0000] "GET /{n} HTTP/1.1" 200 612 "-" "curl/8.5.0"'
STREAM, FUNCTION = "nginx-accesslog-stream", "KinesisAccessLogToS3"
SHARDS = ["shardId-000000000000", "shardId-000000000001"]


@pytest.fixture
def two_shards(aws, handler_module, monkeypatch):
    """The pipeline provisioned on moto with two shards; the handler module uses its bucket
    (and keeps its log lines off stdout, where drain's result goes)."""
    monkeypatch.setattr(handler_module, "log", lambda *args, **kwargs: None)
    with contextlib.redirect_stdout(io.StringIO()):
        assert init_resource.main(["--endpoint-url", aws, "--wait-timeout", "10", "--shards", "2"]) == 0
    return boto3.client("kinesis", endpoint_url=aws, region_name="us-east-1")


@pytest.fixture
def run_mapping(aws):
    """Start the mapping stand-in with a handler; stopped afterwards."""
    started: list[EventSourceMapping] = []

    def _start(handler) -> EventSourceMapping:
        lam = boto3.client("lambda", endpoint_url=aws, region_name="us-east-1")
        (config,) = lam.list_event_source_mappings(FunctionName=FUNCTION)["EventSourceMappings"]
        started.append(EventSourceMapping(aws, config["UUID"], handler, poll_interval=0.05).start())
        return started[-1]

    yield _start
    for mapping in started:
        mapping.stop()


def drain(endpoint: str, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = pipeline_cli.main(["--endpoint-url", endpoint, "drain", *args])
    return code, out.getvalue(), err.getvalue()


def put_lines(kinesis, count: int) -> None:
    for n in range(count):
        kinesis.put_record(StreamName=STREAM, Data=fluentd_message(LINE.format(n=n)), PartitionKey=uuid.uuid4().hex)


def uris(s3_client, bucket: str) -> list[str]:
    return sorted(
        json.loads(line)["request_uri"]
        for key, body in bucket_objects(s3_client, bucket).items()
        if not key.startswith(("errors/", "_pipeline/"))
        for line in body.splitlines()
    )


def test_drain_returns_once_every_shard_is_consumed(aws, two_shards, run_mapping, handler_module, s3_client, bucket):
    # given lines in both shards and the function behind its mapping
    put_lines(two_shards, 40)
    mapping = run_mapping(handler_module.handler)
    # when draining
    code, out, err = drain(aws, "--timeout", "30", "--interval", "0.1")
    # then every line is in S3, once; one marker went to each shard; no acknowledgement is left
    assert code == 0, err
    assert out.startswith("stream drained: every record put before ") and f"is in s3://{bucket} (2 shards, " in out
    assert uris(s3_client, bucket) == sorted(f"/{n}" for n in range(40))
    assert bucket_objects(s3_client, bucket, "_pipeline/") == {}
    marked = {i.shard_id for i in mapping.invocations if i.result and i.result.get("batchItemFailures") == []}
    assert marked == set(SHARDS)


def test_no_stream_is_nothing_to_drain(aws):
    code, out, _ = drain(aws)
    assert (code, out) == (0, f"no stream: nothing to drain (there is no stream {STREAM})\n")


def test_timeout_names_the_shards_not_consumed_and_cleans_up(
    aws, two_shards, run_mapping, handler_module, s3_client, bucket, monkeypatch
):
    # given a function that fails every batch of the second shard
    def half_broken(event, context):
        if event["Records"][0]["eventID"].startswith(SHARDS[1]):
            raise RuntimeError("injected")
        return handler_module.handler(event, context)

    run_mapping(half_broken)
    monkeypatch.setattr(pipeline_cli, "PROGRESS_EVERY", 0.4)
    # when draining with a short timeout
    code, out, err = drain(aws, "--timeout", "1.5", "--interval", "0.1")
    # then it fails, names the second shard only, and says what that means
    assert code == 1 and out == ""
    *progress, verdict = err.splitlines()
    assert progress and all(
        line.startswith("waiting for the function to consume the stream: ") and " of 2 shards done (" in line
        for line in progress
    )
    assert SHARDS[1] in verdict and SHARDS[0] not in verdict
    assert "lost when LocalStack stops" in verdict and "./start.sh logs" in verdict
    # and the first shard's acknowledgement, which did arrive, is deleted
    assert bucket_objects(s3_client, bucket, "_pipeline/") == {}


def test_a_marker_that_lands_on_another_shard_is_an_error(aws, two_shards, s3_client, bucket):
    class Misrouting:
        """The real client, except put_record reports the other shard."""

        exceptions = two_shards.exceptions

        def list_shards(self, **kwargs):
            return two_shards.list_shards(**kwargs)

        def put_record(self, **kwargs):
            response = two_shards.put_record(**kwargs)
            return {**response, "ShardId": SHARDS[1] if response["ShardId"] == SHARDS[0] else SHARDS[0]}

    with pytest.raises(pipeline_cli.Failure, match=r"meant for shardId-000000000000 .* landed in shardId-0+1"):
        pipeline_cli.drain(Misrouting(), s3_client, STREAM, bucket, timeout=1, interval=0.1)


def test_missing_bucket_fails_at_once(aws, two_shards, s3_client):
    out, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(errors):
        code = pipeline_cli.main(["--endpoint-url", aws, "--bucket", "no-such-bucket", "drain", "--timeout", "5"])
    assert code == 1
    assert "the bucket no-such-bucket does not exist" in errors.getvalue()


@pytest.mark.parametrize("value", ["0", "-1", "x", "inf", "nan"])
def test_timeout_and_interval_must_be_positive(value, capsys):
    for option in ("--timeout", "--interval"):
        with pytest.raises(SystemExit):
            pipeline_cli.build_parser().parse_args(["drain", option, value])
    assert "not a number of seconds above 0" in capsys.readouterr().err


def test_ls_does_not_list_control_objects(aws, s3_client, bucket, capsys):
    s3_client.put_object(Bucket=bucket, Key="_pipeline/drain/x/shardId-000000000000.json", Body=b"{}\n")
    s3_client.put_object(Bucket=bucket, Key="2020/05/27/08/a.json", Body=b"{}\n")
    assert pipeline_cli.main(["--endpoint-url", aws, "ls"]) == 0
    captured = capsys.readouterr()
    assert "2020/05/27/08/a.json" in captured.out and "_pipeline" not in captured.out
    assert "1 object(s)" in captured.err
    # unless asked for by prefix
    assert pipeline_cli.main(["--endpoint-url", aws, "ls", "_pipeline/"]) == 0
    assert "_pipeline/drain/x/" in capsys.readouterr().out


def test_drain_deletes_late_acknowledgements_of_earlier_drains_only(
    aws, two_shards, run_mapping, handler_module, s3_client, bucket
):
    # given acknowledgements of an earlier drain (that timed out), a later one, and a foreign one
    keys = {
        "earlier": "_pipeline/drain/20200101T000000Z-aaaaaaaa/shardId-000000000000.json",
        "later": "_pipeline/drain/29991231T000000Z-bbbbbbbb/shardId-000000000000.json",
        "foreign": "_pipeline/drain/by-hand/shardId-000000000000.json",
    }
    for key in keys.values():
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"{}\n")
    run_mapping(handler_module.handler)
    # when a drain succeeds
    code, _, err = drain(aws, "--timeout", "30", "--interval", "0.1")
    # then the earlier drain's is gone with its own; the others are not its to delete
    assert code == 0, err
    assert sorted(bucket_objects(s3_client, bucket, "_pipeline/")) == sorted([keys["later"], keys["foreign"]])
