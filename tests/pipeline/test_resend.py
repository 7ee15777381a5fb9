"""fluentd's re-sends under traffic, on the real LocalStack: real nginx (main_timed) -> the
fluentd stand-in whose puts fail in part and time out after storing -> LocalStack's
Kinesis, mapping, Lambda and S3. The bucket holds duplicates; the query tool and every
compacted hour count each request exactly once."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from support.kinesis_faults import FaultyKinesis
from support.net import wait_until
from support.nginx import raw_request
from support.query_data import QUERY

sys.path.insert(0, str(QUERY))
import bucket_reader
import compact_hours
import logs_query

pytestmark = pytest.mark.localstack

# The n-th PutRecords call's fate. With one retry per batch: a timeout after storing and
# two partial failures in a row each make fluentd send the whole chunk again; one partial
# failure alone is mended by the retry of the failed records.
PLAN = ["stored-then-timeout", "ok", "partial", "partial", "ok", "partial", "ok", "stored-then-timeout"]
REQUESTS = 600


def traffic(port: int, count: int) -> threading.Thread:
    """`count` requests, about 100 a second, from a thread."""

    def send() -> None:
        for n in range(count):
            raw_request(port, f"GET /resend/{n} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            time.sleep(0.01)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def query(bucket: logs_query.Bucket, start: datetime, end: datetime, sql: str | None) -> str:
    out = io.StringIO()
    logs_query.query(bucket, start, end, sql, "json", out)
    return out.getvalue()


@pytest.mark.parametrize("output", ["kinesis_streams_aggregated", "kinesis_streams"])
def test_resent_lines_land_twice_and_are_counted_once(start_pipeline, output):
    # given the pipeline, its shipper's puts failing in part and timing out after storing
    pipeline = start_pipeline()
    pipeline.shipper.stop()
    faulty = pipeline.kinesis = FaultyKinesis(pipeline.kinesis, PLAN)
    # (one retry per batch and 0.2 s before a chunk is re-sent instead of fluent.conf's 8
    # and 1 s: the same behaviour, sooner, so that every fault falls within the traffic)
    shipper = pipeline.new_shipper(output=output, retries_on_batch_request=1, retry_wait=0.2)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    # when nginx serves requests while the faults happen
    sender = traffic(pipeline.nginx.port, REQUESTS)
    assert wait_until(lambda: faulty.calls >= len(PLAN) or not sender.is_alive(), 60, interval=0.05)
    assert sender.is_alive(), "the planned faults did not all happen while nginx was serving"
    sender.join()
    landed = lambda: len({r["request_id"] for _, r in pipeline.records()})  # noqa: E731
    assert wait_until(lambda: landed() >= REQUESTS, 240, interval=0.5), (
        f"{landed()} of {REQUESTS} requests in S3; shipper: {shipper.shipped} lines stored, "
        f"{shipper.chunk_retries} chunks re-sent; {len(pipeline.invocations())} invocations"
    )
    pipeline.settle()
    end = datetime.now(UTC) + timedelta(minutes=1)
    # then the bucket holds every request, some of them twice (fluentd re-sent their chunk)
    records = pipeline.records()
    ids = Counter(record["request_id"] for _, record in records)
    assert len(ids) == REQUESTS and all(len(i) == 32 for i in ids)
    assert Counter(record["request_uri"] for _, record in records).keys() == {f"/resend/{n}" for n in range(REQUESTS)}
    duplicated = sum(count - 1 for count in ids.values())
    assert duplicated > 0
    # (two timeouts and one pair of partial failures: three chunks sent again whole)
    assert shipper.chunk_retries == 3 and faulty.met == Counter({"stored-then-timeout": 2, "partial": 3}) + Counter(
        {"ok": faulty.calls - 5}
    )
    # and the query tool counts each request once: rows, ids, paths, the summary
    bucket = logs_query.Bucket(pipeline.s3, pipeline.names.bucket)
    sql = "SELECT count(*) AS n, count(DISTINCT request_id) AS ids, count(DISTINCT request_uri) AS uris FROM logs"
    assert json.loads(query(bucket, start, end, sql)) == {"n": REQUESTS, "ids": REQUESTS, "uris": REQUESTS}
    assert query(bucket, start, end, None).startswith(f"{REQUESTS} requests, 0 unparsed line(s)")
    # and each compacted hour holds each request once
    hours = sorted({key.rsplit("/", 1)[0] + "/" for key, _ in records})
    outcomes = [compact_hours.compact_hour(bucket, hour) for hour in hours]
    assert sum(o.dropped for o in outcomes) == duplicated
    compacted = Counter()
    for hour in hours:
        manifest = bucket_reader.read_manifest(bucket, hour, bucket.list(hour))
        body = bucket_reader.plain(bucket.get(bucket_reader.manifest_objects(manifest)[-1]))
        compacted.update(json.loads(line)["request_id"] for line in body.splitlines())
    assert compacted == Counter(ids.keys())
    assert json.loads(query(bucket, start, end, sql)) == {"n": REQUESTS, "ids": REQUESTS, "uris": REQUESTS}
    print(
        f"\n{output}: {REQUESTS} requests, {len(records)} records in the bucket ({duplicated} duplicates), "
        f"{faulty.calls} PutRecords calls ({dict(faulty.met)}), {shipper.chunk_retries} chunks re-sent; "
        f"query: {REQUESTS} rows; compaction dropped {sum(o.dropped for o in outcomes)} over {len(hours)} hour(s)"
    )
