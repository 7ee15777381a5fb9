"""Drain markers in the handler: a record `{"pipeline_drain": "<id>"}` becomes no line but an
acknowledgement object, written only once every record before it on its shard is in S3."""

from __future__ import annotations

import base64
import json

import pytest
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st
from support.events import KinesisRecord, fluentd_message, kinesis_event, kpl_aggregate, sequence_numbers
from support.s3 import bucket_objects, json_lines

LINE = '203.0.113.9 - - [27/May/2020:08:23:31 +0000] "GET /{n} HTTP/1.1" 200 612 "-" "curl/8.5.0"'
NEXT_HOUR = LINE.replace("08:23:31", "09:00:00")
SHARD = "shardId-000000000000"


def line(n: int, hour_line: str = LINE) -> bytes:
    return fluentd_message(hour_line.format(n=n))


def marker(drain_id: object = "d-1") -> bytes:
    return json.dumps({"pipeline_drain": drain_id}).encode()


def ack_key(drain_id: str = "d-1", shard: str = SHARD) -> str:
    return f"_pipeline/drain/{drain_id}/{shard}.json"


def data_objects(s3_client, bucket: str) -> dict[str, bytes]:
    return {k: v for k, v in bucket_objects(s3_client, bucket).items() if not k.startswith("_pipeline/")}


def uris(s3_client, bucket: str) -> list[str]:
    """Request URIs of every record in S3 (errors/ excluded), sorted: duplicates show."""
    return sorted(
        record["request_uri"]
        for key, body in data_objects(s3_client, bucket).items()
        if not key.startswith("errors/")
        for record in json_lines(body)
    )


class PutLog:
    """Hooks into the real client: records each PutObject key, fails the chosen ones."""

    def __init__(self, s3_client, fail: tuple[str, ...] = (), times: int | None = None):
        self.keys: list[str] = []
        self._fail, self._left = fail, times
        s3_client.meta.events.register("before-parameter-build.s3.PutObject", self._hook)

    def _hook(self, params, **_):
        self.keys.append(params["Key"])
        if any(params["Key"].startswith(prefix) for prefix in self._fail) and self._left != 0:
            if self._left is not None:
                self._left -= 1
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "injected"}}, "PutObject")


def log_lines(capsys) -> list[dict]:
    return [json.loads(x) for x in capsys.readouterr().out.splitlines()]


# --- recognising a marker: a pure function ---------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b'{"pipeline_drain":"abc"}', b'{"pipeline_drain": "A_b-9"}\n', b'{"pipeline_drain":"x","at":"2026-11-27"}'],
)
def test_a_json_object_with_a_drain_id_is_a_marker(handler_module, payload):
    found = handler_module.drain_marker(payload)
    assert isinstance(found, handler_module.DrainMarker)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"message":"{\\"pipeline_drain\\":\\"abc\\"}"}\n',  # a logged line that looks like one
        b'{"pipeline_drain":"abc","message":"a line"}',  # fluentd's shape: a log line
        b'["pipeline_drain"]',
        b'{"pipeline_drain":"abc"} trailing',
        b'plain "pipeline_drain" text',
    ],
)
def test_anything_else_is_not_a_marker(handler_module, payload):
    assert handler_module.drain_marker(payload) is None


BAD_IDS = ["", "x" * 65, "a/b", "../etc", "a b", "é", 42, None, ["a"], "a\n"]


@pytest.mark.parametrize("drain_id", BAD_IDS, ids=repr)
def test_a_marker_with_a_bad_id_is_a_problem(handler_module, drain_id):
    found = handler_module.drain_marker(marker(drain_id))
    assert isinstance(found, handler_module.Problem) and found.code == "InvalidDrainMarker"


# --- the handler against moto's S3 -----------------------------------------------------


def test_marker_alone_writes_only_its_acknowledgement(handler_module, s3_client, bucket, capsys):
    # given a batch of one marker
    (seq,) = sequence_numbers(1)
    # when handled
    result = handler_module.handler(kinesis_event([KinesisRecord(marker(), seq)]))
    # then the acknowledgement is the only object: no line, no error
    assert result == {"batchItemFailures": []}
    found = bucket_objects(s3_client, bucket)
    assert list(found) == [ack_key()]
    assert json_lines(found[ack_key()]) == [{"drain": "d-1", "shardId": SHARD, "sequenceNumber": seq}]
    (log,) = log_lines(capsys)
    assert {k: log[k] for k in ("records", "lines", "errors", "objects", "drainMarkers")} == {
        "records": 1,
        "lines": 0,
        "errors": 0,
        "objects": 0,
        "drainMarkers": 1,
    }


def test_marker_after_lines_is_acknowledged_after_they_landed(handler_module, s3_client, bucket):
    # given lines of two hours and an unparsable line, then a marker, on shard 1
    seqs = sequence_numbers(4)
    records = [
        KinesisRecord(line(0), seqs[0]),
        KinesisRecord(line(1, NEXT_HOUR), seqs[1]),
        KinesisRecord(b"garbage", seqs[2]),
        KinesisRecord(marker("after"), seqs[3]),
    ]
    puts = PutLog(s3_client)
    shard = "shardId-000000000001"
    # when handled
    assert handler_module.handler(kinesis_event(records, shard_id=shard)) == {"batchItemFailures": []}
    # then every line is in S3, and the acknowledgement was the last put
    assert uris(s3_client, bucket) == ["/0", "/1"]
    assert len(data_objects(s3_client, bucket)) == 3
    assert puts.keys[-1] == ack_key("after", shard) and len(puts.keys) == 4


def test_records_after_a_marker_are_left_to_the_next_invocation(handler_module, s3_client, bucket, capsys):
    # given lines, a marker, and more lines of the same hour in one batch
    seqs = sequence_numbers(5)
    records = [KinesisRecord(marker() if i == 2 else line(i), s) for i, s in enumerate(seqs)]
    # when handled
    result = handler_module.handler(kinesis_event(records))
    # then the marker is acknowledged, and the mapping resumes right after it
    assert result == {"batchItemFailures": [{"itemIdentifier": seqs[3]}]}
    assert uris(s3_client, bucket) == ["/0", "/1"]
    assert ack_key() in bucket_objects(s3_client, bucket)
    assert log_lines(capsys)[0]["records"] == 3
    # when the mapping delivers the rest
    assert handler_module.handler(kinesis_event(records[3:])) == {"batchItemFailures": []}
    # then every line is in S3 exactly once
    assert uris(s3_client, bucket) == ["/0", "/1", "/3", "/4"]


def hours_then_a_marker() -> tuple[list[str], list[KinesisRecord]]:
    """Lines of 08h, 09h and 08h again, then a marker: their sequence numbers and records."""
    seqs = sequence_numbers(4)
    records = [
        KinesisRecord(line(0), seqs[0]),
        KinesisRecord(line(1, NEXT_HOUR), seqs[1]),
        KinesisRecord(line(2), seqs[2]),
        KinesisRecord(marker(), seqs[3]),
    ]
    return seqs, records


def test_failed_put_before_the_marker_writes_no_acknowledgement(handler_module, s3_client, bucket):
    # given 08h, 09h, 08h lines and a marker, and the 09h object failing once
    seqs, records = hours_then_a_marker()
    puts = PutLog(s3_client, fail=("2020/05/27/09/",), times=1)
    # when handled
    result = handler_module.handler(kinesis_event(records))
    # then the retry starts before the marker, and no acknowledgement was even tried
    assert result == {"batchItemFailures": [{"itemIdentifier": seqs[1]}]}
    assert not any(key.startswith("_pipeline/") for key in puts.keys)
    assert uris(s3_client, bucket) == ["/0"]
    # when the mapping retries from there with S3 healthy
    assert handler_module.handler(kinesis_event(records[1:])) == {"batchItemFailures": []}
    # then the acknowledgement follows every line, each once
    assert uris(s3_client, bucket) == ["/0", "/1", "/2"]
    assert ack_key() in bucket_objects(s3_client, bucket)


def test_failed_trim_before_the_marker_writes_no_acknowledgement(handler_module, s3_client, bucket):
    # given 08h, 09h, 08h lines and a marker; the 09h put fails, then the 08h rewrite too
    seqs, records = hours_then_a_marker()
    puts: list[str] = []

    def first_lands(params, **_):
        puts.append(params["Key"])
        if len(puts) > 1:
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "injected"}}, "PutObject")

    s3_client.meta.events.register("before-parameter-build.s3.PutObject", first_lands)
    # when handled
    result = handler_module.handler(kinesis_event(records))
    # then the retry point moved down to the first record, and no acknowledgement exists
    assert result == {"batchItemFailures": [{"itemIdentifier": seqs[0]}]}
    assert len(puts) == 3 and not any(key.startswith("_pipeline/") for key in puts)
    assert ack_key() not in bucket_objects(s3_client, bucket)


def test_failed_acknowledgement_is_retried_from_the_marker(handler_module, s3_client, bucket, capsys):
    # given lines, a marker and lines after it, and the acknowledgement's put failing once
    seqs = sequence_numbers(4)
    records = [KinesisRecord(marker() if i == 2 else line(i), s) for i, s in enumerate(seqs)]
    PutLog(s3_client, fail=("_pipeline/",), times=1)
    # when handled
    result = handler_module.handler(kinesis_event(records))
    # then the retry starts at the marker; S3 holds exactly the lines before it
    assert result == {"batchItemFailures": [{"itemIdentifier": seqs[2]}]}
    assert uris(s3_client, bucket) == ["/0", "/1"]
    assert log_lines(capsys)[0]["putFailures"] == ["SlowDown"]
    # when the mapping retries from the marker
    assert handler_module.handler(kinesis_event(records[2:])) == {"batchItemFailures": [{"itemIdentifier": seqs[3]}]}
    assert handler_module.handler(kinesis_event(records[3:])) == {"batchItemFailures": []}
    # then the acknowledgement exists and every line is there once
    assert ack_key() in bucket_objects(s3_client, bucket)
    assert uris(s3_client, bucket) == ["/0", "/1", "/3"]


@pytest.mark.parametrize("drain_id", BAD_IDS, ids=repr)
def test_bad_id_is_kept_in_errors_with_its_bytes(handler_module, s3_client, bucket, drain_id):
    data = marker(drain_id)
    assert handler_module.handler(kinesis_event([KinesisRecord(data, "7")])) == {"batchItemFailures": []}
    ((key, body),) = bucket_objects(s3_client, bucket).items()
    assert key.startswith("errors/")
    (error,) = json_lines(body)
    assert error["errorCode"] == "InvalidDrainMarker" and base64.b64decode(error["rawData"]) == data


def test_marker_inside_an_aggregated_record_is_not_one(handler_module, s3_client, bucket):
    # given a KPL aggregate holding a line and a marker-shaped user record: the drain never
    # aggregates, and an inner record has no sequence number of its own to acknowledge
    data = kpl_aggregate([line(0), marker()])
    # when handled
    assert handler_module.handler(kinesis_event([KinesisRecord(data, "9")])) == {"batchItemFailures": []}
    # then the line lands, the marker-shaped record is kept in errors/, and nothing is acknowledged
    found = bucket_objects(s3_client, bucket)
    assert not any(key.startswith("_pipeline/") for key in found)
    assert uris(s3_client, bucket) == ["/0"]
    (error,) = [e for key, body in found.items() if key.startswith("errors/") for e in json_lines(body)]
    assert error["errorCode"] == "MissingMessage" and base64.b64decode(error["rawData"]) == marker()


def test_a_log_line_with_both_keys_is_a_log_line(handler_module, s3_client, bucket):
    data = json.dumps({"message": LINE.format(n=5), "pipeline_drain": "x"}).encode()
    assert handler_module.handler(kinesis_event([KinesisRecord(data, "3")])) == {"batchItemFailures": []}
    assert uris(s3_client, bucket) == ["/5"]
    assert ack_key("x") not in bucket_objects(s3_client, bucket)


def test_two_markers_in_one_batch_are_acknowledged_one_invocation_each(handler_module, s3_client, bucket):
    seqs = sequence_numbers(4)
    records = [
        KinesisRecord(line(0), seqs[0]),
        KinesisRecord(marker("first"), seqs[1]),
        KinesisRecord(marker("second"), seqs[2]),
        KinesisRecord(line(3), seqs[3]),
    ]
    assert handler_module.handler(kinesis_event(records)) == {"batchItemFailures": [{"itemIdentifier": seqs[2]}]}
    assert handler_module.handler(kinesis_event(records[2:])) == {"batchItemFailures": [{"itemIdentifier": seqs[3]}]}
    assert handler_module.handler(kinesis_event(records[3:])) == {"batchItemFailures": []}
    found = bucket_objects(s3_client, bucket)
    assert {ack_key("first"), ack_key("second")} <= set(found)
    assert uris(s3_client, bucket) == ["/0", "/3"]


def test_acknowledgement_is_plain_json_when_objects_are_gzip(handler_module, s3_client, bucket, monkeypatch):
    monkeypatch.setattr(handler_module, "COMPRESSION", "gzip")
    handler_module.handler(kinesis_event([KinesisRecord(marker(), "11")]))
    head = s3_client.head_object(Bucket=bucket, Key=ack_key())
    assert "ContentEncoding" not in head
    assert json_lines(bucket_objects(s3_client, bucket)[ack_key()])[0]["drain"] == "d-1"


# --- property: an acknowledgement never exists before the records it vouches for -------

ITEM = st.sampled_from(["08", "09", "bad", "marker"])


class CheckingBucket:
    """An in-memory bucket whose puts fail as drawn; at each acknowledgement's put it checks
    that every line before the marker is already stored."""

    def __init__(self, failures: list[bool], line_before: dict[str, list[str]]):
        self.objects: dict[str, bytes] = {}
        self._failures = iter(failures)
        self._line_before = line_before

    def put_object(self, Key: str, Body: bytes, **_: object) -> None:  # boto3's argument names
        if next(self._failures, False):
            raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, "PutObject")
        if Key.startswith("_pipeline/"):
            sequence_number = json.loads(Body)["sequenceNumber"]
            assert set(self._line_before[sequence_number]) <= set(self.stored_lines())
        self.objects[Key] = Body

    def stored_lines(self) -> list[str]:
        found = []
        for key, body in self.objects.items():
            for text in body.decode().splitlines():
                if key.startswith("errors/"):
                    found.append(base64.b64decode(json.loads(text)["rawData"]).decode().removeprefix("unparsable "))
                elif not key.startswith("_pipeline/"):
                    found.append(json.loads(text)["request_uri"])
        return found


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(ITEM, min_size=1, max_size=25),
    batch_size=st.integers(1, 8),
    failures=st.lists(st.booleans(), max_size=60),
)
def test_acknowledgements_follow_every_earlier_line(items, batch_size, failures, monkeypatch_module):
    # given a shard of lines of two hours, unparsable lines and markers, in any order
    handler_module = monkeypatch_module
    records, line_before, lines = [], {}, []
    for i, item in enumerate(items):
        seq = str(i + 1)
        if item == "marker":
            data = marker(f"m{i}")
            line_before[seq] = list(lines)
        else:
            uri = f"/{i}"
            template = NEXT_HOUR if item == "09" else LINE
            data = f"unparsable {uri}".encode() if item == "bad" else template.replace("/{n}", uri).encode()
            lines.append(uri)
        records.append(KinesisRecord(data, seq, arrival=1_590_000_000 + i * 900))
    bucket = CheckingBucket(failures, line_before)
    handler_module.s3 = bucket
    # when a mapping delivers batches and honours batchItemFailures
    position, invocations = 0, 0
    while position < len(records):
        invocations += 1
        assert invocations < 300
        batch = records[position : position + batch_size]
        failed = handler_module.handler(kinesis_event(batch))["batchItemFailures"]
        if failed:
            position = next(i for i, r in enumerate(records) if r.sequence_number == failed[0]["itemIdentifier"])
        else:
            position += len(batch)
    # then every line is in S3 exactly once, and every marker is acknowledged
    assert sorted(bucket.stored_lines()) == sorted(lines)
    acked = {json.loads(body)["sequenceNumber"] for key, body in bucket.objects.items() if key.startswith("_pip")}
    assert acked == set(line_before)
