"""Stand-in for Lambda's Kinesis event source mapping, for tests only.

Replaces: the mapping's poller, where the emulator cannot run it: moto records the mapping
but cannot invoke. Used by bench/pipeline_bench.py's moto rig; the end-to-end tests run
LocalStack's own mapping instead (tests/pipeline, tests/support/localstack_host.py), and
tests/pipeline/test_stand_ins.py keeps this one honest. Reproduces AWS's documented behaviour:
- reads the mapping init/init_resource.py created (`get_event_source_mapping`) and
  honours StartingPosition, BatchSize, MaximumBatchingWindowInSeconds,
  MaximumRetryAttempts and ReportBatchItemFailures;
- per shard, in order: GetShardIterator/GetRecords, batches of at most BatchSize
  gathered within the batching window, one shard per invocation;
- the exact AWS event (`Records[].kinesis` with base64 data, string sequence numbers,
  epoch-seconds arrival time, `eventID` = `<shardId>:<seq>`, eventSourceARN, ...);
- the handler is called in-process, loaded from the deployment package built by
  init_resource.function_zip(), with the function's environment plus AWS_ENDPOINT_URL
  (which LocalStack injects) pointing at the emulator;
- `batchItemFailures`: checkpoint at the lowest reported sequence number and retry from
  it; an exception from the handler retries the whole batch; after MaximumRetryAttempts
  the batch is skipped (as AWS does; it would go to an on-failure destination).

Does not cover: BisectBatchOnFunctionError (LocalStack ignores it too), parallelization
factor, tumbling windows, enhanced fan-out, resharding (parent/child shard order).
"""

from __future__ import annotations

import base64
import importlib.util
import os
import sys
import threading
import time
import zipfile
import zipimport
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3


def load_deployed_handler(package: bytes, environment: dict[str, str], workdir: Path) -> ModuleType:
    """Import the handler from its deployment zip, in a fresh module, as Lambda would.

    Module-level code (the S3 client, BUCKET_NAME) sees `environment`, as in the function.
    """
    zip_path = workdir / "function.zip"
    zip_path.write_bytes(package)
    name = "kinesis_event_to_s3"
    spec = zipimport.zipimporter(str(zip_path)).find_spec(name)
    module = importlib.util.module_from_spec(spec)
    saved_env = {key: os.environ.get(key) for key in environment}
    saved_module = sys.modules.get(name)
    with zipfile.ZipFile(zip_path) as archive:  # the package's own modules, not init/'s
        parts = [n.removesuffix(".py") for n in archive.namelist() if n.endswith(".py") and n != f"{name}.py"]
    saved_parts = {part: sys.modules.pop(part, None) for part in parts}
    os.environ.update(environment)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    sys.path.insert(0, str(zip_path))  # the package's other modules, as Lambda's task root
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(zip_path))
        for part, saved in saved_parts.items():
            sys.modules.pop(part, None)
            if saved is not None:
                sys.modules[part] = saved
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if saved_module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = saved_module
    return module


@dataclass
class Invocation:
    shard_id: str
    sequence_numbers: list[str]
    result: Any = None
    error: str | None = None


@dataclass
class ShardState:
    shard_id: str
    iterator: str | None = None
    pending: list[dict[str, Any]] = field(default_factory=list)  # read, not yet delivered
    retries: int = 0


class EventSourceMapping:
    """Polls every shard of the mapped stream and invokes `handler` with AWS's event."""

    def __init__(self, endpoint: str, uuid: str, handler, region: str = "us-east-1", poll_interval: float = 0.2):
        kwargs = {"endpoint_url": endpoint, "region_name": region}
        self.kinesis = boto3.client("kinesis", **kwargs)
        self.lambda_ = boto3.client("lambda", **kwargs)
        self.region = region
        self.handler = handler
        self.poll_interval = poll_interval
        self.config = self.lambda_.get_event_source_mapping(UUID=uuid)
        self.stream_arn = self.config["EventSourceArn"]
        self.stream_name = self.stream_arn.split("/", 1)[1]
        self.role_arn = self.lambda_.get_function_configuration(FunctionName=self.config["FunctionArn"])["Role"]
        self.invocations: list[Invocation] = []
        self.discarded: list[str] = []
        self._shards: dict[str, ShardState] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- reading ------------------------------------------------------------------------

    def _iterator(self, shard_id: str, sequence_number: str | None = None) -> str:
        if sequence_number is not None:
            kwargs = {"ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": sequence_number}
        else:
            kwargs = {"ShardIteratorType": self.config["StartingPosition"]}
        return self.kinesis.get_shard_iterator(StreamName=self.stream_name, ShardId=shard_id, **kwargs)["ShardIterator"]

    def _discover_shards(self) -> None:
        for shard in self.kinesis.list_shards(StreamName=self.stream_name)["Shards"]:
            if shard["ShardId"] not in self._shards:
                state = ShardState(shard["ShardId"])
                state.iterator = self._iterator(shard["ShardId"])
                self._shards[shard["ShardId"]] = state

    def _fill(self, state: ShardState) -> None:
        """Read until BatchSize records are pending or the batching window, which opens
        with the first record, closes."""
        batch_size = self.config["BatchSize"]
        window = self.config.get("MaximumBatchingWindowInSeconds", 0)
        deadline = time.monotonic() + window if state.pending else None
        while len(state.pending) < batch_size and not self._stop.is_set():
            response = self.kinesis.get_records(ShardIterator=state.iterator, Limit=min(10_000, batch_size))
            state.iterator = response["NextShardIterator"]
            state.pending.extend(response["Records"])
            if not state.pending:
                return  # nothing to deliver yet
            if deadline is None:
                deadline = time.monotonic() + window
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if not response["Records"]:
                self._stop.wait(min(self.poll_interval, remaining))

    # --- the event ----------------------------------------------------------------------

    def event(self, shard_id: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "Records": [
                {
                    "kinesis": {
                        "kinesisSchemaVersion": "1.0",
                        "partitionKey": record["PartitionKey"],
                        "sequenceNumber": record["SequenceNumber"],
                        "data": base64.b64encode(record["Data"]).decode("ascii"),
                        "approximateArrivalTimestamp": record["ApproximateArrivalTimestamp"].timestamp(),
                    },
                    "eventSource": "aws:kinesis",
                    "eventVersion": "1.0",
                    "eventID": f"{shard_id}:{record['SequenceNumber']}",
                    "eventName": "aws:kinesis:record",
                    "invokeIdentityArn": self.role_arn,
                    "awsRegion": self.region,
                    "eventSourceARN": self.stream_arn,
                }
                for record in records
            ]
        }

    # --- delivering ---------------------------------------------------------------------

    def _deliver(self, state: ShardState) -> None:
        batch = state.pending[: self.config["BatchSize"]]
        invocation = Invocation(state.shard_id, [r["SequenceNumber"] for r in batch])
        try:
            invocation.result = self.handler(self.event(state.shard_id, batch), None)
        except Exception as exc:  # the function failed: the whole batch is retried
            invocation.error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.invocations.append(invocation)
        retry_from = None
        if invocation.error is not None:
            retry_from = batch[0]["SequenceNumber"]
        elif self.config.get("FunctionResponseTypes") == ["ReportBatchItemFailures"] and invocation.result:
            failures = invocation.result.get("batchItemFailures") or []
            identifiers = [f.get("itemIdentifier") for f in failures]
            if any(not identifier for identifier in identifiers):
                retry_from = batch[0]["SequenceNumber"]  # an empty identifier fails the whole batch
            elif identifiers:
                retry_from = min(identifiers, key=int)
        if retry_from is None:
            state.pending = state.pending[len(batch) :]
            state.retries = 0
            return
        state.retries += 1
        limit = self.config.get("MaximumRetryAttempts", -1)
        if limit != -1 and state.retries > limit:
            self.discarded.extend(invocation.sequence_numbers)
            state.pending = state.pending[len(batch) :]
            state.retries = 0
            return
        # checkpoint at the reported record: everything before it is done
        index = next(i for i, r in enumerate(batch) if r["SequenceNumber"] == retry_from)
        state.pending = state.pending[index:]

    def poll_once(self) -> int:
        """One round over every shard; returns how many records were delivered."""
        self._discover_shards()
        delivered = 0
        for state in self._shards.values():
            self._fill(state)
            while state.pending and not self._stop.is_set():
                before = len(state.pending)
                self._deliver(state)
                delivered += before - len(state.pending)
                if len(state.pending) == before:
                    break  # a retry: the next round tries again
        return delivered

    def start(self) -> EventSourceMapping:
        self._thread = threading.Thread(target=self._run, name="event-source-mapping", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.poll_once() == 0:
                self._stop.wait(self.poll_interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
