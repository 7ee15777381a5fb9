"""The bucket outlives LocalStack: the real LocalStack 4.14.0 with the project's hooks
(ready.d: restore, provision, watch; shutdown.d: save), stopped as `docker stop` stops
it (SIGTERM to LocalStack alone, tests/support/localstack_host.py `terminate`) or killed
(SIGKILL to everything, `kill`), then started again on the same saved-logs folder (the
compose volume). Lines come from a writer appending nginx `combined` lines to a log
that the fluentd stand-in (tests/support/shipper.py) ships, with the stack's settings.

Each test has a LocalStack of its own: the hooks provision the stack's default names.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from support.localstack_host import LocalStack
from support.net import wait_until
from support.s3 import bucket_objects
from support.shipper import Shipper

pytestmark = pytest.mark.localstack

BUCKET = "nginx-accesslog"
STREAM = "nginx-accesslog-stream"
# A stop may lose what the stream held and, for a crash, what the watcher had not saved:
# the lines accepted during the last few seconds. The tests print what they measured.
LOSS_BOUND_SECONDS = 5.0


@dataclass
class Writer:
    """nginx's part: appends one `combined` line per request to the access log, each with
    a unique URI, and notes when each was written (monotonic seconds)."""

    log: Path
    rate: float = 40.0
    written: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def write(self, count: int) -> None:
        with self.log.open("a") as handle:
            for _ in range(count):
                number = len(self.written)
                stamp = datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
                handle.write(f'127.0.0.1 - - [{stamp}] "GET /r/{number} HTTP/1.1" 200 5 "-" "persistence-test"\n')
                self.written.append(time.monotonic())

    def start(self) -> Writer:
        def run() -> None:
            while not self._stop.wait(1 / self.rate):
                self.write(1)

        self._thread = threading.Thread(target=run, name="writer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def s3_client(localstack: LocalStack):
    return boto3.client("s3", endpoint_url=localstack.endpoint, region_name="us-east-1")


def request_numbers(objects: dict[str, bytes]) -> Counter[int]:
    """How many times each request (its /r/<n> URI) is in the bucket's record objects."""
    found: Counter[int] = Counter()
    for key, body in objects.items():
        if key.startswith("errors/") or "/nginx_access_log_" not in key or not key.endswith(".json"):
            continue
        for line in body.decode().splitlines():
            uri = json.loads(line).get("request_uri") or ""
            if uri.startswith("/r/"):
                found[int(uri.removeprefix("/r/"))] += 1
    return found


@pytest.fixture
def stack(localstack_interpreters, tmp_path):
    """A LocalStack with the project's hooks, as the compose file runs it; stopped at the end."""
    instance = LocalStack(localstack_interpreters, tmp_path / "localstack")
    yield instance.start()
    instance.stop()


@pytest.fixture
def traffic(stack, tmp_path):
    """The writer and the fluentd stand-in shipping its log into the stack's stream."""
    kinesis = boto3.client("kinesis", endpoint_url=stack.endpoint, region_name="us-east-1")
    writer = Writer(tmp_path / "access.log")
    writer.log.touch()
    shipper = Shipper(kinesis, STREAM, writer.log, tmp_path / "nginx-access.pos", max_backoff=1.0).start()
    yield writer, shipper
    writer.stop()
    shipper.stop()


def test_a_stop_and_start_bring_back_every_object_byte_for_byte(stack, traffic):
    # given: lines the pipeline wrote, and objects of every other kind a user may have
    writer, _ = traffic
    s3 = s3_client(stack)
    writer.write(300)
    assert wait_until(lambda: sum(request_numbers(bucket_objects(s3, BUCKET)).values()) == 300, 60, interval=0.5)
    others = {
        "2026/11/27/09/nginx_access_log_20261127T090000000Z_shardId-000000000000_1.json.gz": gzip.compress(
            b'{"status":200}\n', mtime=0
        ),
        "2026/11/27/09/_compaction.json": b'{"object":"x","sources":[]}',
        "exports/with space+plus/ünïcode.json": b"{}\n",
        "odd//key/../.": b"a key no file system holds as written",
    }
    for key, body in others.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    s3.put_object(Bucket=BUCKET, Key="deleted.json", Body=b"{}\n")
    s3.delete_object(Bucket=BUCKET, Key="deleted.json")
    before = bucket_objects(s3, BUCKET)
    assert "deleted.json" not in before and len(before) > len(others)

    # when: LocalStack stops as `docker stop` stops it, and starts again
    stack.terminate()
    stack.start()

    # then: the same keys with the same bytes, the deletion kept, before the stream existed
    s3 = s3_client(stack)
    assert bucket_objects(s3, BUCKET) == before
    head = s3.head_object(Bucket=BUCKET, Key=next(k for k in others if k.endswith(".gz")))
    assert head["ContentEncoding"] == "gzip" and head["ContentType"] == "application/x-ndjson"
    provision_log = (stack.state_dir / "provision.log").read_text()
    assert f"restored {len(before)} objects" in provision_log
    assert provision_log.index("restored") < provision_log.index(f"stream    {STREAM}: created")
    assert f"bucket    {BUCKET}: unchanged" in provision_log
    # and the pipeline goes on: new lines land beside the old ones, none twice
    writer.write(50)
    assert wait_until(lambda: sum(request_numbers(bucket_objects(s3, BUCKET)).values()) == 350, 60, interval=0.5)
    assert set(request_numbers(bucket_objects(s3, BUCKET)).values()) == {1}


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_with_traffic_running_a_stop_keeps_every_saved_object_and_loses_only_the_last_seconds(stack, traffic, how):
    # given: traffic running, objects landing
    writer, shipper = traffic
    s3 = s3_client(stack)
    writer.start()
    assert wait_until(lambda: len(bucket_objects(s3, BUCKET)) >= 10, 60, interval=0.5)
    time.sleep(2)  # traffic keeps running for a while: the stop comes in the middle of it
    before = bucket_objects(s3, BUCKET)
    accepted = shipper.shipped  # lines Kinesis accepted by now: they were written first
    stopped_at = time.monotonic()

    # when: SIGTERM to LocalStack (a `docker stop`), or SIGKILL to everything (a crash)
    getattr(stack, how)()
    stack.start()
    # the shipper, like fluentd, kept retrying its failed puts: they land in the new stream
    writer.stop()
    total = len(writer.written)
    s3 = s3_client(stack)
    assert wait_until(lambda: shipper.shipped >= total, 120, interval=0.5), (shipper.shipped, total)
    counts: Counter[int] = Counter()

    def settled() -> bool:
        nonlocal counts
        previous = counts
        counts = request_numbers(bucket_objects(s3, BUCKET))
        return counts == previous and total - 1 in counts

    assert wait_until(settled, 60, interval=1.0)
    after = bucket_objects(s3, BUCKET)

    # then: every object that existed before the stop is back, byte for byte
    if how == "terminate":
        assert {k: after.get(k) for k in before} == before
    lost_objects = [k for k in before if after.get(k) != before[k]]
    # no line twice, and the lost ones are only among the last seconds before the stop
    assert [n for n, c in counts.items() if c > 1] == []
    lost = [n for n in range(total) if n not in counts]
    ages = [stopped_at - writer.written[n] for n in lost]
    print(
        f"\n{how}: {total} lines, {len(lost)} lost (written {min(ages, default=0):.2f}-{max(ages, default=0):.2f} s "
        f"before the stop), {len(lost_objects)} of {len(before)} objects lost"
    )
    assert all(writer.written[n] <= stopped_at for n in lost), "a line written after the stop was lost"
    assert accepted - len(lost) > 0
    assert max(ages, default=0) <= LOSS_BOUND_SECONDS, ages
