"""Real nginx -> shipper (fluentd stand-in) -> LocalStack's Kinesis -> LocalStack's event
source mapping -> the deployed handler in LocalStack's Lambda -> LocalStack's S3: every
request exactly once, with the right fields.

Where LocalStack 4.14.0's mapping differs from AWS, the test says so (docs/guarantees.md,
"What LocalStack does not emulate")."""

from __future__ import annotations

import collections
import contextlib
import io
import threading
import time

import init_resource
import pytest
from support.net import wait_until
from support.nginx import raw_request

pytestmark = pytest.mark.localstack


def get(port: int, path: str, headers: str = "") -> None:
    raw_request(port, f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n".encode())


def uris(records) -> collections.Counter:
    return collections.Counter(record["request_uri"] for _, record in records)


def assert_hours_match(records) -> None:
    for key, record in records:
        timestamp = record["timestamp"]
        assert key.startswith(f"{timestamp[0:4]}/{timestamp[5:7]}/{timestamp[8:10]}/{timestamp[11:13]}/"), key


def access_line(path: str, hour: int) -> str:
    """An nginx `main` line for a request in the given hour of 26 Nov 2026 (UTC)."""
    return f'127.0.0.1 - - [26/Nov/2026:{hour:02d}:30:00 +0000] "GET {path} HTTP/1.1" 200 5 "-" "test" "-"'


def test_every_request_lands_exactly_once_with_its_fields(start_pipeline):
    # given the pipeline running
    pipeline = start_pipeline()
    port = pipeline.nginx.port
    # when requests of every kind are made
    for n in range(40):
        get(port, f"/e2e/plain/{n}?q={n}")
    raw_request(
        port,
        b'GET /e2e/quote"and\\back HTTP/1.1\r\nHost: localhost\r\nUser-Agent: "quoted" \xec\x95\x88\r\n'
        b"X-Forwarded-For: 203.0.113.7, 10.0.0.1\r\nReferer: https://example.com/\r\nConnection: close\r\n\r\n",
    )
    raw_request(port, b"POST /e2e/post HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi")
    raw_request(port, b"GET /e2e/with space HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    raw_request(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(40)) + b"\r\n\r\n")
    # then each appears in S3 exactly once
    records = pipeline.wait_for(44)
    assert len(records) == 44
    counts = uris(records)
    assert all(counts[f"/e2e/plain/{n}?q={n}"] == 1 for n in range(40))
    by_uri = {record["request_uri"]: record for _, record in records}
    quoted = by_uri[r"/e2e/quote\x22and\x5Cback"]
    assert quoted["http_user_agent"] == r"\x22quoted\x22 \xEC\x95\x88"
    assert quoted["http_x_forwarded_for"] == "203.0.113.7, 10.0.0.1"
    assert quoted["http_referer"] == "https://example.com/"
    assert by_uri["/e2e/post"]["request_method"] == "POST" and by_uri["/e2e/post"]["server_protocol"] == "HTTP/1.0"
    assert "/e2e/with space" in by_uri
    (tls,) = [record for _, record in records if record["request_method"] is None]
    assert tls["status"] == 400 and tls["request"].startswith(r"\x16\x03\x01")
    assert all(record["remote_addr"] == "127.0.0.1" for _, record in records)
    assert_hours_match(records)
    assert pipeline.errors() == []
    # and keys carry LocalStack's long Kinesis sequence numbers (moto's start at "1")
    assert all(len(key.rsplit("_", 1)[-1].split(".")[0]) > 20 for key, _ in records)
    # LocalStack differs from AWS: its mapping never updates LastProcessingResult (AWS: "OK")
    assert pipeline.mapping()["LastProcessingResult"] == "No records processed"


def test_two_shards_overwrite_nothing(start_pipeline):
    # given two shards, and one Kinesis record per line with its own random key, so that
    # both shards get records (aggregated, 200 quick requests are a few records, which
    # may all hash to one shard)
    pipeline = start_pipeline("--shards", "2", output="kinesis_streams")
    for n in range(200):
        get(pipeline.nginx.port, f"/e2e/shards/{n}")
    records = pipeline.wait_for(200)
    # then every request is there once, from objects of both shards
    assert uris(records) == collections.Counter(f"/e2e/shards/{n}" for n in range(200))
    keys = {key for key, _ in records}
    assert {key.rsplit("_", 2)[-2] for key in keys} == {"shardId-000000000000", "shardId-000000000001"}


@pytest.mark.parametrize("output", ["kinesis_streams", "kinesis_streams_aggregated"])
def test_failed_put_is_retried_from_the_reported_sequence_number(start_pipeline, output):
    # given a batch whose lines fall in two hours, and S3 failing once for the second hour
    # (one Kinesis record per line with kinesis_streams; one record for all six with the
    # stack's kinesis_streams_aggregated)
    pipeline = start_pipeline()
    pipeline.localstack.inject_fault(pipeline.names.function, "put-object", key_prefix="2026/11/26/11/")
    lines = [access_line(f"/e2e/flaky/{n}", 10 if n < 3 else 11) for n in range(6)]
    pipeline.shipper.stop()  # write them at once, so that they travel in one batch
    with pipeline.nginx.access_log.open("a", encoding="utf-8") as log:
        log.write("".join(line + "\n" for line in lines))
    pipeline.new_shipper(output=output)
    # then every line is in S3 exactly once
    records = pipeline.wait_for(6)
    assert uris(records) == collections.Counter(f"/e2e/flaky/{n}" for n in range(6))
    assert_hours_match(records)
    first, retry = pipeline.invocations()
    if output == "kinesis_streams_aggregated":
        # the failed line is inside the one aggregated record: the handler reports that
        # record, and the retry delivers it again (the first hour's object is rewritten
        # with the same key and bytes, so nothing is duplicated)
        assert len(first["sequenceNumbers"]) == 1
        assert first["result"] == {"batchItemFailures": [{"itemIdentifier": first["sequenceNumbers"][0]}]}
        assert retry["sequenceNumbers"] == first["sequenceNumbers"]
        assert retry["result"] == {"batchItemFailures": []}
        return
    # and LocalStack's mapping retried from the sequence number the handler reported: the
    # first hour's object landed, so the handler reported the second hour's first record
    assert len(first["sequenceNumbers"]) == 6
    assert first["result"] == {"batchItemFailures": [{"itemIdentifier": first["sequenceNumbers"][3]}]}
    # LocalStack re-sends the rest of the batch it holds (AWS re-reads the shard from that
    # number, so its retry may also hold records that arrived since)
    assert retry["sequenceNumbers"] == first["sequenceNumbers"][3:]
    assert retry["result"] == {"batchItemFailures": []}


def test_function_error_retries_the_whole_batch_without_bisecting(start_pipeline):
    # given the mapping as provisioned (BisectBatchOnFunctionError on), and the function
    # failing once with an error
    pipeline = start_pipeline()
    assert pipeline.mapping()["BisectBatchOnFunctionError"] is True
    pipeline.localstack.inject_fault(pipeline.names.function, "raise")
    pipeline.shipper.stop()
    with pipeline.nginx.access_log.open("a", encoding="utf-8") as log:
        log.write("".join(access_line(f"/e2e/bisect/{n}", 10) + "\n" for n in range(8)))
    pipeline.new_shipper(output="kinesis_streams")  # one record per line: what bisecting would split
    records = pipeline.wait_for(8)
    assert uris(records) == collections.Counter(f"/e2e/bisect/{n}" for n in range(8))
    # LocalStack differs from AWS: it ignores bisection and retries the same 8 records
    # (AWS splits a failed batch in two halves and retries each)
    failed, retry = pipeline.invocations()
    assert failed["error"] == "RuntimeError" and len(failed["sequenceNumbers"]) == 8
    assert retry["sequenceNumbers"] == failed["sequenceNumbers"] and retry["error"] is None


def test_unknown_format_line_is_kept_in_errors_intact(start_pipeline):
    pipeline = start_pipeline()
    get(pipeline.nginx.port, "/e2e/before")
    strange = '2026-11-26T10:00:00Z host app[42]: GET /x "odd" \u00e9'
    with pipeline.nginx.access_log.open("a", encoding="utf-8") as log:
        log.write(strange + "\n")
    get(pipeline.nginx.port, "/e2e/after")
    assert wait_until(lambda: len(pipeline.errors()) == 1, 60, interval=0.25)
    pipeline.wait_for(2)
    assert pipeline.error_lines() == [strange.encode("utf-8")]
    (error,) = pipeline.errors()
    assert error["errorCode"] == "UnparsableLine" and error["shardId"] == "shardId-000000000000"
    assert uris(pipeline.records()) == collections.Counter(["/e2e/before", "/e2e/after"])


def test_shipper_restart_mid_stream_loses_nothing(start_pipeline):
    pipeline = start_pipeline()
    port = pipeline.nginx.port
    for n in range(50):
        get(port, f"/e2e/restart/{n}")
    assert wait_until(lambda: pipeline.shipper.shipped >= 1, 30)
    # when the shipper stops mid-stream and more requests arrive while it is down
    pipeline.shipper.stop()
    for n in range(50, 100):
        get(port, f"/e2e/restart/{n}")
    # and a new one starts from the same position file
    pipeline.new_shipper()
    records = pipeline.wait_for(100)
    assert uris(records) == collections.Counter(f"/e2e/restart/{n}" for n in range(100))


def test_rotated_log_is_read_to_its_end(start_pipeline):
    pipeline = start_pipeline()
    port = pipeline.nginx.port
    for n in range(10):
        get(port, f"/e2e/rotate/{n}")
    assert wait_until(lambda: pipeline.shipper.shipped == 10, 30)
    # given lines the shipper has not read yet in the file that is then rotated
    pipeline.shipper.stop()
    for n in range(10, 20):
        get(port, f"/e2e/rotate/{n}")
    log = pipeline.nginx.access_log
    log.rename(log.with_name(log.name + ".1"))
    pipeline.nginx.reopen_logs()  # as logrotate's postrotate does
    for n in range(20, 40):
        get(port, f"/e2e/rotate/{n}")
    # when the shipper comes back, then it finishes the rotated file, then ships the new one
    pipeline.new_shipper()
    records = pipeline.wait_for(40)
    assert uris(records) == collections.Counter(f"/e2e/rotate/{n}" for n in range(40))


def test_provisioning_rerun_while_data_flows(start_pipeline):
    pipeline = start_pipeline()
    sent = []
    stop = threading.Event()

    def traffic():
        n = 0
        while not stop.is_set():
            get(pipeline.nginx.port, f"/e2e/rerun/{n}")
            sent.append(n)
            n += 1
            time.sleep(0.01)

    sender = threading.Thread(target=traffic)
    sender.start()
    out = io.StringIO()
    try:
        assert wait_until(lambda: len(pipeline.records()) > 0, 30, interval=0.25)
        # when provisioning runs again while requests flow
        with contextlib.redirect_stdout(out):
            code = init_resource.main(["--endpoint-url", pipeline.endpoint, *pipeline.names.args()])
        stop.wait(1)
    finally:
        stop.set()
        sender.join()
    # then it changes nothing, and every request is in S3 exactly once
    assert code == 0 and "Nothing to change" in out.getvalue(), out.getvalue()
    records = pipeline.wait_for(len(sent))
    assert uris(records) == collections.Counter(f"/e2e/rerun/{n}" for n in sent)
