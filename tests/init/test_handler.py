"""The handler end to end against moto's S3 over HTTP, with complete AWS-shaped events."""

from __future__ import annotations

import base64
import gzip
import json

import pytest
from botocore.exceptions import ClientError
from support.corpus import CORPUS, corpus_lines
from support.events import KinesisRecord, captured_fluentd_records, fluentd_message, kinesis_event, sequence_numbers
from support.nginx_format import rebuild
from support.s3 import bucket_objects as objects
from support.s3 import json_lines

LINE = '203.0.113.9 - - [27/May/2020:08:23:31 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/8.5.0"'
NEXT_HOUR = LINE.replace("08:23:31", "09:00:00")


def records_in(s3_client, bucket: str) -> list[dict]:
    found = objects(s3_client, bucket)
    return [r for key, body in sorted(found.items()) if not key.startswith("errors/") for r in json_lines(body)]


def errors_in(s3_client, bucket: str) -> list[dict]:
    return [r for body in objects(s3_client, bucket, "errors/").values() for r in json_lines(body)]


def test_fluentd_records_land_as_typed_json_in_their_hour(handler_module, s3_client, bucket, capsys):
    # given two fluentd records of different hours
    seqs = sequence_numbers(2)
    event = kinesis_event(
        [KinesisRecord(fluentd_message(LINE), seqs[0]), KinesisRecord(fluentd_message(NEXT_HOUR), seqs[1])]
    )
    # when the handler runs
    result = handler_module.handler(event, None)
    # then one object per hour, keyed by arrival time, shard and first sequence number
    assert result == {"batchItemFailures": []}
    found = objects(s3_client, bucket)
    assert sorted(found) == [
        f"2020/05/27/08/nginx_access_log_20200527T082331123Z_shardId-000000000000_{seqs[0]}.json",
        f"2020/05/27/09/nginx_access_log_20200527T082331123Z_shardId-000000000000_{seqs[1]}.json",
    ]
    first = json_lines(found[sorted(found)[0]])
    assert first == [
        {
            "remote_addr": "203.0.113.9",
            "remote_user": None,
            "time_local": "27/May/2020:08:23:31 +0000",
            "timestamp": "2020-05-27T08:23:31Z",
            "request": "GET / HTTP/1.1",
            "request_method": "GET",
            "request_uri": "/",
            "server_protocol": "HTTP/1.1",
            "status": 200,
            "body_bytes_sent": 612,
            "http_referer": None,
            "http_user_agent": "curl/8.5.0",
            "http_x_forwarded_for": None,
        }  # a combined line's record, as before the main_timed fields
    ]
    head = s3_client.head_object(Bucket=bucket, Key=sorted(found)[0])
    assert head["ContentType"] == "application/x-ndjson"
    # and one structured log line with counts, never the contents
    (log_line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {k: log_line[k] for k in ("records", "lines", "parsed", "errors", "objects")} == {
        "records": 2,
        "lines": 2,
        "parsed": 2,
        "errors": 0,
        "objects": 2,
    }
    assert isinstance(log_line["milliseconds"], float)
    assert "curl" not in json.dumps(log_line)


def test_captured_fluentd_records_all_arrive(handler_module, s3_client, bucket):
    # given every captured record: six plain ones and one KPL aggregate of the same six lines
    captured = captured_fluentd_records()
    seqs = sequence_numbers(len(captured))
    records = [KinesisRecord(base64.b64decode(r["data"]), s) for r, s in zip(captured, seqs, strict=True)]
    # when delivered in one batch
    assert handler_module.handler(kinesis_event(records)) == {"batchItemFailures": []}
    # then the five valid lines arrive twice (plain + aggregated) and the raw-quote line is kept in errors
    parsed = records_in(s3_client, bucket)
    assert len(parsed) == 10
    errors = errors_in(s3_client, bucket)
    assert len(errors) == 2
    for error in errors:
        assert error["errorCode"] == "UnparsableLine"
        assert b'"ua with "quote" and back\\slash"' in base64.b64decode(error["rawData"])
        assert error["shardId"] == "shardId-000000000000"
        assert error["sequenceNumber"] in seqs
        assert error["approximateArrivalTimestamp"] == records[0].arrival
        assert error["errorMessage"]


@pytest.mark.parametrize("name", ["lnav_shop_access.log", "crowdsec-hub_fixtures.log", "elastic-beats_fixtures.log"])
def test_corpus_loses_nothing(handler_module, s3_client, bucket, name):
    # given a real log shipped as fluentd records, 500 per batch like PutRecords
    lines = [raw.decode() for raw in corpus_lines(CORPUS / name)]
    seqs = sequence_numbers(len(lines))
    batches = [list(zip(lines, seqs, strict=True))[i : i + 500] for i in range(0, len(lines), 500)]
    # when each batch is handled
    for batch in batches:
        event = kinesis_event([KinesisRecord(fluentd_message(line), seq) for line, seq in batch])
        assert handler_module.handler(event) == {"batchItemFailures": []}
    # then every line is either a record that rebuilds it, or an error holding its bytes
    rebuilt = {rebuild(r, main=False) for r in records_in(s3_client, bucket)}
    rebuilt |= {rebuild(r, main=True) for r in records_in(s3_client, bucket)}
    kept = {base64.b64decode(e["rawData"]).decode() for e in errors_in(s3_client, bucket)}
    for line in lines:
        assert (line in rebuilt) != (line in kept), line
    assert len(records_in(s3_client, bucket)) + len(errors_in(s3_client, bucket)) == len(lines)


def test_records_are_filed_by_the_request_hour_in_utc(handler_module, s3_client, bucket):
    # 00:30 at +0100 is 23:30 UTC of the day before
    line = LINE.replace("27/May/2020:08:23:31 +0000", "01/Jan/2021:00:30:00 +0100")
    handler_module.handler(kinesis_event([KinesisRecord(line.encode(), "1")]))
    (key,) = objects(s3_client, bucket)
    assert key.startswith("2020/12/31/23/nginx_access_log_")


def test_redelivery_rewrites_the_same_objects_with_the_same_bytes(handler_module, s3_client, bucket):
    # given a batch with records of two hours and an unparsable line
    seqs = sequence_numbers(3)
    event = kinesis_event(
        [
            KinesisRecord(LINE.encode(), seqs[0]),
            KinesisRecord(b"garbage", seqs[1]),
            KinesisRecord(NEXT_HOUR.encode(), seqs[2]),
        ]
    )
    handler_module.handler(event)
    first = objects(s3_client, bucket)
    # when Lambda delivers it again
    handler_module.handler(json.loads(json.dumps(event)))
    # then the same keys hold the same bytes: nothing duplicated
    assert objects(s3_client, bucket) == first
    assert len(first) == 3


def test_same_second_batches_from_two_shards_never_share_a_key(handler_module, s3_client, bucket):
    # given two shards whose emulator numbers records from 1 on each shard (as moto does)
    for shard in ("shardId-000000000000", "shardId-000000000001"):
        handler_module.handler(kinesis_event([KinesisRecord(LINE.encode(), "1")], shard_id=shard))
    # then both objects exist
    assert len(records_in(s3_client, bucket)) == 2


def test_restarted_emulator_reusing_sequence_numbers_does_not_overwrite(handler_module, s3_client, bucket):
    # given the same shard and sequence number, arriving at another time (a re-created stream)
    handler_module.handler(kinesis_event([KinesisRecord(LINE.encode(), "1", arrival=1_590_567_811.0)]))
    handler_module.handler(kinesis_event([KinesisRecord(LINE.encode(), "1", arrival=1_590_567_900.5)]))
    assert len(records_in(s3_client, bucket)) == 2


class FailingS3:
    """The real client, except PutObject fails for keys under the given prefixes.

    `times` bounds how many puts per prefix fail (None: all of them).
    """

    def __init__(self, client, failing_prefixes: tuple[str, ...], times: int | None = None):
        self._client = client
        self._failing = failing_prefixes
        self._left = {prefix: times for prefix in failing_prefixes}
        self.attempts: list[str] = []

    def put_object(self, **kwargs):
        self.attempts.append(kwargs["Key"])
        for prefix in self._failing:
            if kwargs["Key"].startswith(prefix) and self._left[prefix] != 0:
                if self._left[prefix] is not None:
                    self._left[prefix] -= 1
                raise ClientError({"Error": {"Code": "SlowDown", "Message": "injected"}}, "PutObject")
        return self._client.put_object(**kwargs)


def test_failed_put_reports_the_lowest_sequence_number_that_did_not_land(
    handler_module, s3_client, bucket, monkeypatch, capsys
):
    # given a batch whose 09h records start at the second record and whose 09h object fails
    seqs = sequence_numbers(4)
    records = [
        KinesisRecord(LINE.encode(), seqs[0]),
        KinesisRecord(NEXT_HOUR.encode(), seqs[1]),
        KinesisRecord(LINE.encode(), seqs[2]),
        KinesisRecord(NEXT_HOUR.encode(), seqs[3]),
    ]
    monkeypatch.setattr(handler_module, "s3", FailingS3(s3_client, ("2020/05/27/09/",)))
    # when it is handled
    result = handler_module.handler(kinesis_event(records))
    (log_line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert log_line["putFailures"] == ["SlowDown"] and log_line["retryFrom"] == seqs[1]
    # then the mapping is told to retry from the first 09h record, and S3 holds exactly the
    # records before it (the 08h object was trimmed: its second record comes with the retry)
    assert result == {"batchItemFailures": [{"itemIdentifier": seqs[1]}]}
    assert [r["timestamp"][11:13] for r in records_in(s3_client, bucket)] == ["08"]
    # when the mapping retries from there (records 2..4) with S3 healthy again
    monkeypatch.setattr(handler_module, "s3", s3_client)
    assert handler_module.handler(kinesis_event(records[1:])) == {"batchItemFailures": []}
    # then every line is in S3 exactly once
    hours = sorted(r["timestamp"][11:13] for r in records_in(s3_client, bucket))
    assert hours == ["08", "08", "09", "09"]


def interleaved_hours() -> tuple[list[str], list[KinesisRecord]]:
    """Three records: 08h, 09h, 08h."""
    seqs = sequence_numbers(3)
    return seqs, [
        KinesisRecord(LINE.encode(), seqs[0]),
        KinesisRecord(NEXT_HOUR.encode(), seqs[1]),
        KinesisRecord(LINE.encode(), seqs[2]),
    ]


def test_failed_trim_moves_the_retry_point_down(handler_module, s3_client, bucket, monkeypatch):
    # given interleaved hours, a failing 09h put and a failing rewrite of the 08h object
    seqs, records = interleaved_hours()
    failing = FailingS3(s3_client, ("2020/05/27/09/", "2020/05/27/08/"), times=1)
    failing._left["2020/05/27/08/"] = None
    monkeypatch.setattr(handler_module, "s3", failing)
    # when handled: the 08h object fails too, so nothing may be assumed to have landed
    result = handler_module.handler(kinesis_event(records))
    assert result == {"batchItemFailures": [{"itemIdentifier": seqs[0]}]}
    # when the whole batch is retried with S3 healthy
    monkeypatch.setattr(handler_module, "s3", s3_client)
    assert handler_module.handler(kinesis_event(records)) == {"batchItemFailures": []}
    assert sorted(r["timestamp"][11:13] for r in records_in(s3_client, bucket)) == ["08", "08", "09"]


def test_rewrite_failure_after_a_landed_object_leaves_no_duplicate(handler_module, s3_client, bucket, monkeypatch):
    # given the 08h object lands, the 09h put fails, then the trimming rewrite of 08h fails
    seqs, records = interleaved_hours()

    class FailAfterFirst(FailingS3):
        def put_object(self, **kwargs):
            if self.attempts:  # the first put (08h) lands, every later one fails
                self.attempts.append(kwargs["Key"])
                raise ClientError({"Error": {"Code": "SlowDown", "Message": "injected"}}, "PutObject")
            return super().put_object(**kwargs)

    monkeypatch.setattr(handler_module, "s3", FailAfterFirst(s3_client, ()))
    result = handler_module.handler(kinesis_event(records))
    # then the retry starts at the 08h object's first record, whose key the retry rewrites
    assert result == {"batchItemFailures": [{"itemIdentifier": seqs[0]}]}
    monkeypatch.setattr(handler_module, "s3", s3_client)
    assert handler_module.handler(kinesis_event(records)) == {"batchItemFailures": []}
    assert sorted(r["timestamp"][11:13] for r in records_in(s3_client, bucket)) == ["08", "08", "09"]


def test_failed_error_object_is_retried_too(handler_module, s3_client, bucket, monkeypatch):
    seqs = sequence_numbers(2)
    records = [KinesisRecord(LINE.encode(), seqs[0]), KinesisRecord(b"not a log line", seqs[1])]
    monkeypatch.setattr(handler_module, "s3", FailingS3(s3_client, ("errors/",)))
    assert handler_module.handler(kinesis_event(records)) == {"batchItemFailures": [{"itemIdentifier": seqs[1]}]}


def test_all_puts_failing_reports_the_first_record(handler_module, s3_client, bucket, monkeypatch):
    seqs = sequence_numbers(3)
    failing = FailingS3(s3_client, ("",))
    monkeypatch.setattr(handler_module, "s3", failing)
    event = kinesis_event([KinesisRecord(LINE.encode(), s) for s in seqs])
    assert handler_module.handler(event) == {"batchItemFailures": [{"itemIdentifier": seqs[0]}]}
    assert len(failing.attempts) == 1
    assert objects(s3_client, bucket) == {}


def test_missing_bucket_is_reported_as_a_batch_failure(handler_module, monkeypatch):
    monkeypatch.setattr(handler_module, "BUCKET_NAME", "no-such-bucket")
    result = handler_module.handler(kinesis_event([KinesisRecord(LINE.encode(), "7")]))
    assert result == {"batchItemFailures": [{"itemIdentifier": "7"}]}


def test_errors_are_filed_by_arrival_hour_with_the_raw_bytes(handler_module, s3_client, bucket):
    raw = b"\x00\x01binary\xff"
    handler_module.handler(kinesis_event([KinesisRecord(raw, "5", arrival=1_700_000_000.25)]))
    ((key, body),) = objects(s3_client, bucket).items()
    assert key == "errors/2023/11/14/22/nginx_access_log_20231114T221320250Z_shardId-000000000000_5.json"
    (error,) = json_lines(body)
    assert base64.b64decode(error["rawData"]) == raw
    assert error["errorCode"] == "InvalidUtf8"


def test_one_megabyte_line_is_kept_in_errors(handler_module, s3_client, bucket):
    line = "y" * 1_048_576
    handler_module.handler(kinesis_event([KinesisRecord(fluentd_message(line), "9")]))
    (error,) = errors_in(s3_client, bucket)
    assert base64.b64decode(error["rawData"]) == line.encode()


def test_empty_event_writes_nothing(handler_module, s3_client, bucket):
    assert handler_module.handler({"Records": []}) == {"batchItemFailures": []}
    assert objects(s3_client, bucket) == {}


def test_gzip_compression_when_asked(handler_module, s3_client, bucket, monkeypatch):
    monkeypatch.setattr(handler_module, "COMPRESSION", "gzip")
    event = kinesis_event([KinesisRecord(LINE.encode(), "3")])
    handler_module.handler(event)
    ((key, body),) = objects(s3_client, bucket).items()
    assert key.endswith(".json.gz")
    assert json_lines(gzip.decompress(body))[0]["request_uri"] == "/"
    handler_module.handler(event)  # deterministic bytes: gzip header carries no time
    assert objects(s3_client, bucket)[key] == body


def test_lone_surrogate_in_json_is_kept_in_errors_not_raised(handler_module, s3_client, bucket):
    # JSON may escape a lone surrogate, which no UTF-8 object can hold
    data = fluentd_message(LINE).replace(b"curl", b"\\udc80")
    assert handler_module.handler(kinesis_event([KinesisRecord(data, "4")])) == {"batchItemFailures": []}
    (error,) = errors_in(s3_client, bucket)
    assert error["errorCode"] == "InvalidUtf8" and base64.b64decode(error["rawData"]) == data.rstrip(b"\n")
