"""The stand-ins behave like the parts they replace (tests/support/shipper.py, which the
pipeline tests use for fluentd, and tests/support/event_source_mapping.py, which the moto
benchmark rig uses for the mapping), so what runs on them proves something. On moto: the
faster check."""

from __future__ import annotations

import base64
import itertools
from collections import Counter

import boto3
import init_resource
import pytest
from kinesis_event_to_s3 import kpl_user_records
from support.event_source_mapping import EventSourceMapping
from support.events import captured_fluentd_records, captured_source_lines, fluentd_message, kpl_aggregate
from support.fluentd_conf import fluent_conf
from support.kinesis_faults import FaultyKinesis
from support.shipper import AGGREGATED_MAX_BYTES, RETRIES_ON_BATCH_REQUEST, Shipper, aggregated_batches

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
        self.records: list[list[dict]] = []
        self.fail_once = set(fail_once)

    def put_records(self, StreamName, Records):  # boto3's argument names
        self.calls.append(len(Records))
        self.records.append(Records)
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
    shipper = Shipper(recording, STREAM, log, tmp_path / "pos", output="kinesis_streams")
    assert shipper.ship_once() == 1200
    assert recording.calls == [500, 500, 200]
    assert stream_data(kinesis) == [fluentd_message(line) for line in lines]


def test_shipper_retries_only_failed_records(provisioned, tmp_path):
    _, kinesis, _ = provisioned
    log = tmp_path / "access.log"
    log.write_text("a\nb\nc\n")
    recording = Recording(kinesis, fail_once={1})
    Shipper(recording, STREAM, log, tmp_path / "pos", output="kinesis_streams").ship_once()
    assert recording.calls == [3, 1]
    assert sorted(stream_data(kinesis)) == [fluentd_message(x) for x in "abc"]


def test_shipper_ships_complete_lines_only_and_resumes(provisioned, tmp_path):
    _, kinesis, _ = provisioned
    log = tmp_path / "access.log"
    log.write_text("first\nsecond-with")
    plain = {"output": "kinesis_streams"}
    assert Shipper(kinesis, STREAM, log, tmp_path / "pos", **plain).ship_once() == 1
    with log.open("a") as handle:
        handle.write("out-end\n")
    # a new shipper (a restart) resumes from the position file
    assert Shipper(kinesis, STREAM, log, tmp_path / "pos", **plain).ship_once() == 1
    assert stream_data(kinesis) == [fluentd_message("first"), fluentd_message("second-without-end")]


def keys(prefix: str = "k"):
    """Partition keys as the plugin's generator hands them out, but predictable."""
    counter = itertools.count()
    return lambda: f"{prefix}{next(counter):031d}"


def test_aggregated_shipper_writes_the_bytes_fluentd_wrote(provisioned, tmp_path):
    # given the lines behind the aggregated record captured from real fluentd + plugin
    _, kinesis, _ = provisioned
    captured = captured_fluentd_records()[-1]
    assert "kinesis_streams_aggregated" in captured["producer"]
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(line.encode() + b"\n" for line in captured_source_lines()))
    # when the stand-in ships them with the captured record's key (the plugin's is random)
    recording = Recording(kinesis)
    key = captured["partitionKey"]
    shipper = Shipper(
        recording, STREAM, log, tmp_path / "pos", output="kinesis_streams_aggregated", partition_key=lambda: key
    )
    assert shipper.ship_once() == len(captured_source_lines())
    # then one PutRecords with one record, byte for byte the captured one
    assert recording.records == [[{"Data": base64.b64decode(captured["data"]), "PartitionKey": key}]]
    assert shipper.stored_records == 1 and shipper.shipped == len(captured_source_lines())


def test_aggregated_batches_follow_the_plugins_limits():
    # 1 MiB less 25 bytes and twice the key per aggregated record, 10 bytes counted per line
    records = [b"x" * 9_990 for _ in range(250)]  # 10,000 bytes each with the offset
    batches = aggregated_batches(records, key_length=32)
    assert [len(b) for b in batches] == [104, 104, 42]
    assert [r for batch in batches for r in batch] == records  # order kept, nothing lost
    limit = AGGREGATED_MAX_BYTES - (25 + 64)
    assert all(sum(len(r) + 10 for r in batch) <= limit for batch in batches)
    # at most 100,000 lines in one record, however small (empty ones count 10 bytes each)
    assert [len(b) for b in aggregated_batches([b""] * 100_001)] == [100_000, 1]


def test_failed_aggregated_put_resends_the_whole_record_under_a_new_key(provisioned, tmp_path):
    _, kinesis, _ = provisioned
    log = tmp_path / "access.log"
    log.write_text("a\nb\nc\n")
    recording = Recording(kinesis, fail_once={0})
    new_key = keys()
    shipper = Shipper(
        recording, STREAM, log, tmp_path / "pos", output="kinesis_streams_aggregated", partition_key=new_key
    )
    assert shipper.ship_once() == 3
    # the plugin's retry_records for :streams_aggregated: every line of the batch again,
    # aggregated anew with the next key from its generator
    (first,), (second,) = recording.records
    lines = [fluentd_message(x) for x in "abc"]
    assert first["Data"] == kpl_aggregate(lines, first["PartitionKey"])
    assert second["Data"] == kpl_aggregate(lines, second["PartitionKey"])
    assert first["PartitionKey"] != second["PartitionKey"]
    assert stream_data(kinesis) == [second["Data"]]
    assert (shipper.put_calls, shipper.failed_attempts, shipper.stored_records) == (2, 1, 1)


def test_retries_come_from_fluent_conf():
    (match,) = fluent_conf().find("match")
    assert RETRIES_ON_BATCH_REQUEST == int(match.params["retries_on_batch_request"]) == 8
    assert match.params["drop_failed_records_after_batch_request_retries"] == "false"


def test_records_failing_past_the_retries_resend_the_whole_chunk(provisioned, tmp_path):
    # given a chunk of four lines, and Kinesis rejecting part of the first two calls
    _, kinesis, _ = provisioned
    log = tmp_path / "access.log"
    log.write_text("a\nb\nc\nd\n")
    faulty = FaultyKinesis(kinesis, ["partial", "partial"])
    shipper = Shipper(
        faulty, STREAM, log, tmp_path / "pos", output="kinesis_streams", retries_on_batch_request=1, retry_wait=0.05
    )
    # when it is shipped with one retry per batch
    assert shipper.ship_once() == 4
    # then the plugin gave up on `d` after one retry and fluentd sent the whole chunk
    # again: a, b, c landed twice (call 1: a c; call 2: b; call 3: a b c d)
    assert faulty.calls == 3 and shipper.chunk_retries == 1
    assert Counter(stream_data(kinesis)) == Counter(fluentd_message(x) for x in "abcabcd")


def test_a_put_timing_out_after_storing_resends_the_whole_chunk(provisioned, tmp_path):
    _, kinesis, _ = provisioned
    log = tmp_path / "access.log"
    log.write_text("a\nb\n")
    faulty = FaultyKinesis(kinesis, ["stored-then-timeout"])
    shipper = Shipper(faulty, STREAM, log, tmp_path / "pos", output="kinesis_streams_aggregated", retry_wait=0.05)
    assert shipper.ship_once() == 2
    # the first aggregated record was stored although the put failed: both are on the stream
    first, second = stream_data(kinesis)
    assert first != second  # each under its own random key, with the same two lines
    assert kpl_user_records(first) == kpl_user_records(second) == [fluentd_message("a"), fluentd_message("b")]
    assert shipper.chunk_retries == 1 and shipper.stored_records == 1 and faulty.met["stored-then-timeout"] == 1


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
