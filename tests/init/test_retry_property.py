"""Property: whatever PutObject fails, mapping retries put every line in S3 exactly once."""

from __future__ import annotations

import base64
import json

from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st
from support.events import KinesisRecord, kinesis_event

LINE = '203.0.113.9 - - [27/May/2020:{hh}:00:{ss:02d} +0000] "GET /{n} HTTP/1.1" 200 1 "-" "t"'


class FlakyBucket:
    """An in-memory bucket (the edge of this unit test) whose puts fail as drawn."""

    def __init__(self, failures: list[bool]):
        self.objects: dict[str, bytes] = {}
        self._failures = iter(failures)

    def put_object(self, Key: str, Body: bytes, **_: object) -> None:  # boto3's argument names
        if next(self._failures, False):
            raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, "PutObject")
        self.objects[Key] = Body


@settings(max_examples=300, deadline=None)
@given(
    hours=st.lists(st.sampled_from(["08", "09", "10", "bad"]), min_size=1, max_size=30),
    batch_size=st.integers(1, 10),
    failures=st.lists(st.booleans(), max_size=60),
)
def test_every_line_lands_exactly_once(hours, batch_size, failures, monkeypatch_module):
    # given a shard of records whose request hours interleave, and a bucket that fails at will
    handler_module = monkeypatch_module
    records = [
        KinesisRecord(
            f"unparsable /{i}".encode() if hh == "bad" else LINE.format(hh=hh, ss=i % 60, n=i).encode(),
            str(i + 1),
            arrival=1_590_000_000 + i * 900,  # errors are filed by arrival hour: several hours too
        )
        for i, hh in enumerate(hours)
    ]
    bucket = FlakyBucket(failures)
    handler_module.s3 = bucket
    # when an event source mapping delivers batches and honours batchItemFailures
    position, invocations = 0, 0
    while position < len(records):
        invocations += 1
        assert invocations < 200
        batch = records[position : position + batch_size]
        result = handler_module.handler(kinesis_event(batch))
        failed = result["batchItemFailures"]
        if failed:
            position = next(i for i, r in enumerate(records) if r.sequence_number == failed[0]["itemIdentifier"])
        else:
            position += len(batch)
    # then each request is in S3 exactly once, in the object of its hour, or in errors/
    seen = []
    for key, body in bucket.objects.items():
        for line in body.decode().splitlines():
            record = json.loads(line)
            if key.startswith("errors/"):
                seen.append(base64.b64decode(record["rawData"]).decode().removeprefix("unparsable "))
                continue
            assert key.startswith(f"2020/05/27/{record['timestamp'][11:13]}/")
            seen.append(record["request_uri"])
    assert sorted(seen) == sorted(f"/{i}" for i in range(len(records)))
