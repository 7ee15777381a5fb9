"""A Kinesis client whose PutRecords fails as planned, for fault tests of the pipeline.

The faults are the two that make fluent-plugin-kinesis send a line twice (with
`drop_failed_records_after_batch_request_retries false`, tests/support/shipper.py):
- `partial`: Kinesis rejects part of the call (every second record, or the only one):
  those are not stored, the others are, as PutRecords answers with a FailedRecordCount;
- `stored-then-timeout`: Kinesis stores every record, then the answer never arrives
  (the client's read timeout), so the sender cannot know they landed.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

from botocore.exceptions import ReadTimeoutError

FAULTS = ("ok", "partial", "stored-then-timeout")


class FaultyKinesis:
    """The real client; the n-th PutRecords call meets `plan[n]` (then `ok` for ever)."""

    def __init__(self, client: Any, plan: Iterable[str]) -> None:
        self.client = client
        self.plan = list(plan)
        if set(self.plan) - set(FAULTS):
            raise ValueError(f"faults are {FAULTS}")
        self.calls = 0
        self.met: Counter[str] = Counter()  # faults met so far
        self._lock = threading.Lock()

    def put_records(self, StreamName: str, Records: list[dict]) -> dict:  # boto3's argument names
        with self._lock:
            fault = self.plan[self.calls] if self.calls < len(self.plan) else "ok"
            self.calls += 1
            self.met[fault] += 1
        if fault == "stored-then-timeout":
            self.client.put_records(StreamName=StreamName, Records=Records)
            raise ReadTimeoutError(endpoint_url=f"kinesis PutRecords on {StreamName}")
        if fault == "ok":
            return self.client.put_records(StreamName=StreamName, Records=Records)
        rejected = {0} if len(Records) == 1 else set(range(1, len(Records), 2))
        kept = [record for i, record in enumerate(Records) if i not in rejected]
        stored = iter(self.client.put_records(StreamName=StreamName, Records=kept)["Records"] if kept else [])
        results = [
            {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard"}
            if i in rejected
            else next(stored)
            for i in range(len(Records))
        ]
        return {"FailedRecordCount": len(rejected), "Records": results}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)
