"""The stand-ins behave like the parts they replace (tests/support/shipper.py, which the
pipeline tests use for fluentd, and tests/support/event_source_mapping.py, which the moto
benchmark rig uses for the mapping), so what runs on them proves something. On moto: the
faster check."""

from __future__ import annotations

import base64

import boto3
import init_resource
import pytest
from support.event_source_mapping import EventSourceMapping
from support.events import fluentd_message
from support.shipper import Shipper

STREAM, FUNCTION = "nginx-accesslog-stream", "KinesisAccessLogToS3"


@pytest.fixture
def provisioned(aws):
    assert init_resource.main(["--endpoint-url", aws, "--wait-timeout", "10"]) == 0
    clients = {"endpoint_url": aws, "region_name": "us-east-1"}
    return aws, boto3.client("kinesis", **clients), boto3.client("lambda", **clients)


class Recording:
    """The real Kinesis client, recording PutRecords calls; can fail chosen records once."""

    def __init__(self, client, fail_once: set[int] = frozenset()):
        self.client = client
        self.calls: list[int] = []
        self.fail_once = set(fail_once)

    def put_records(self, StreamName, Records):  # boto3's argument names
        self.calls.append(len(Records))
        failing = {i for i in self.fail_once if i < len(Records)}
        self.fail_once -= failing
        kept = [r for i, r in enumerate(Records) if i not in failing]
        results = iter(self.client.put_records(StreamName=StreamName, Records=kept)["Records"] if kept else [])
        return {
            "Records": [
                {"ErrorCode": "ProvisionedThroughputExceededException"} if i in failing else next(results)
                for i in range(len(Records))
            ]
        }


def stream_data(kinesis) -> list[bytes]:
    shard = kinesis.list_shards(StreamName=STREAM)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName=STREAM, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    return [r["Data"] for r in kinesis.get_records(ShardIterator=iterator["ShardIterator"], Limit=10000)["Records"]]


def test_shipper_batches_like_put_records_and_sends_fluentd_bytes(provisioned, tmp_path):
    _, kinesis, _ = provisioned
    log = tmp_path / "access.log"
    lines = [f'127.0.0.1 - - [27/May/2020:08:23:31 +0000] "GET /{n} HTTP/1.1" 200 1 "-" "t"' for n in range(1200)]
    log.write_text("\n".join(lines) + "\n")
    recording = Recording(kinesis)
    shipper = Shipper(recording, STREAM, log, tmp_path / "pos")
    assert shipper.ship_once() == 1200
    assert recording.calls == [500, 500, 200]
    assert stream_data(kinesis) == [fluentd_message(line) for line in lines]


def test_shipper_retries_only_failed_records(provisioned, tmp_path):
    _, kinesis, _ = provisioned
    log = tmp_path / "access.log"
    log.write_text("a\nb\nc\n")
    recording = Recording(kinesis, fail_once={1})
    Shipper(recording, STREAM, log, tmp_path / "pos").ship_once()
    assert recording.calls == [3, 1]
    assert sorted(stream_data(kinesis)) == [fluentd_message(x) for x in "abc"]


def test_shipper_ships_complete_lines_only_and_resumes(provisioned, tmp_path):
    _, kinesis, _ = provisioned
    log = tmp_path / "access.log"
    log.write_text("first\nsecond-with")
    assert Shipper(kinesis, STREAM, log, tmp_path / "pos").ship_once() == 1
    with log.open("a") as handle:
        handle.write("out-end\n")
    # a new shipper (a restart) resumes from the position file
    assert Shipper(kinesis, STREAM, log, tmp_path / "pos").ship_once() == 1
    assert stream_data(kinesis) == [fluentd_message("first"), fluentd_message("second-without-end")]


def mapping(endpoint, lam, handler) -> EventSourceMapping:
    (config,) = lam.list_event_source_mappings(FunctionName=FUNCTION)["EventSourceMappings"]
    return EventSourceMapping(endpoint, config["UUID"], handler, poll_interval=0.05)


def put(kinesis, *payloads: bytes) -> list[str]:
    return [kinesis.put_record(StreamName=STREAM, Data=p, PartitionKey="k")["SequenceNumber"] for p in payloads]


def test_mapping_builds_the_documented_event(provisioned):
    endpoint, kinesis, lam = provisioned
    seqs = put(kinesis, b"one", b"two")
    events = []
    esm = mapping(endpoint, lam, lambda event, context: events.append(event) or {"batchItemFailures": []})
    esm.poll_once()
    (event,) = events
    first = event["Records"][0]
    assert set(first) == {
        "kinesis",
        "eventSource",
        "eventVersion",
        "eventID",
        "eventName",
        "invokeIdentityArn",
        "awsRegion",
        "eventSourceARN",
    }
    assert set(first["kinesis"]) == {
        "kinesisSchemaVersion",
        "partitionKey",
        "sequenceNumber",
        "data",
        "approximateArrivalTimestamp",
    }
    assert [r["kinesis"]["sequenceNumber"] for r in event["Records"]] == seqs
    assert [base64.b64decode(r["kinesis"]["data"]) for r in event["Records"]] == [b"one", b"two"]
    assert first["eventID"] == f"shardId-000000000000:{seqs[0]}"
    assert first["eventSource"] == "aws:kinesis" and first["eventName"] == "aws:kinesis:record"
    assert isinstance(first["kinesis"]["approximateArrivalTimestamp"], float)
    assert first["eventSourceARN"].endswith(f":stream/{STREAM}")
    assert first["invokeIdentityArn"].endswith(":role/kinesis-lambda-role")


def test_mapping_honours_batch_size(provisioned):
    endpoint, kinesis, lam = provisioned
    (config,) = lam.list_event_source_mappings(FunctionName=FUNCTION)["EventSourceMappings"]
    lam.update_event_source_mapping(UUID=config["UUID"], BatchSize=2)
    put(kinesis, b"1", b"2", b"3", b"4", b"5")
    sizes = []
    esm = mapping(endpoint, lam, lambda event, context: sizes.append(len(event["Records"])) or {})
    while esm.poll_once():
        pass
    assert sizes == [2, 2, 1]


def test_mapping_retries_from_the_reported_sequence_number(provisioned):
    endpoint, kinesis, lam = provisioned
    seqs = put(kinesis, b"a", b"b", b"c")
    seen = []

    def handler(event, context):
        seen.append([r["kinesis"]["sequenceNumber"] for r in event["Records"]])
        return {"batchItemFailures": [{"itemIdentifier": seqs[1]}]} if len(seen) == 1 else {"batchItemFailures": []}

    esm = mapping(endpoint, lam, handler)
    esm.poll_once()
    esm.poll_once()
    assert seen == [seqs, seqs[1:]]


def test_mapping_gives_up_after_maximum_retry_attempts(provisioned):
    endpoint, kinesis, lam = provisioned
    (config,) = lam.list_event_source_mappings(FunctionName=FUNCTION)["EventSourceMappings"]
    lam.update_event_source_mapping(UUID=config["UUID"], MaximumRetryAttempts=2)
    seqs = put(kinesis, b"x")
    calls = []

    def failing(event, context):
        calls.append(1)
        raise RuntimeError("function error")

    esm = mapping(endpoint, lam, failing)
    for _ in range(5):
        esm.poll_once()
    assert len(calls) == 3  # the first try and two retries
    assert esm.discarded == seqs
