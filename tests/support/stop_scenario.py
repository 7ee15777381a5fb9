"""A stop of LocalStack in the middle of traffic, and what it cost: shared by
tests/localstack/test_persistence.py (which asserts) and bench/stop_bench.py (which
repeats it and prints the figures).

Lines come from a writer appending nginx `combined` lines, each with a unique URI
(/r/<n>), to a log that the fluentd stand-in (support/shipper.py, the stack's settings)
ships into the stack's stream. The LocalStack runs the project's hooks with the stack's
default names.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import boto3

from support.localstack_host import LocalStack
from support.net import wait_until
from support.s3 import bucket_objects
from support.shipper import Shipper

BUCKET = "nginx-accesslog"
STREAM = "nginx-accesslog-stream"


@dataclass
class Writer:
    """nginx's part: appends one `combined` line per request to the access log, each with
    a unique URI, and notes when each was written (monotonic seconds)."""

    log: Path
    rate: float = 40.0
    run: str = "0"  # in every URI: runs sharing a bucket count their own lines only
    written: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def write(self, count: int) -> None:
        with self.log.open("a") as handle:
            for _ in range(count):
                number = len(self.written)
                stamp = datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
                request = f"GET /r/{self.run}/{number} HTTP/1.1"
                handle.write(f'127.0.0.1 - - [{stamp}] "{request}" 200 5 "-" "stop-scenario"\n')
                self.written.append(time.monotonic())

    def start(self) -> Writer:
        def run() -> None:
            """Open loop: as many lines as `rate` says by now, whatever the writes cost."""
            started, sent = time.monotonic(), 0
            while not self._stop.wait(0.01):
                due = int((time.monotonic() - started) * self.rate) - sent
                if due > 0:
                    self.write(due)
                    sent += due

        self._thread = threading.Thread(target=run, name="writer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def s3_client(localstack: LocalStack):
    return boto3.client("s3", endpoint_url=localstack.endpoint, region_name="us-east-1")


def request_numbers(objects: dict[str, bytes], run: str = "0") -> Counter[int]:
    """How many times each request of `run` (its /r/<run>/<n> URI) is in the handler's objects."""
    prefix = f"/r/{run}/"
    found: Counter[int] = Counter()
    for key, body in objects.items():
        if key.startswith("errors/") or "/nginx_access_log_" not in key or not key.endswith(".json"):
            continue
        for line in body.decode().splitlines():
            uri = json.loads(line).get("request_uri") or ""
            if uri.startswith(prefix):
                found[int(uri.removeprefix(prefix))] += 1
    return found


@dataclass
class Outcome:
    """What a stop cost, measured after the restart once every line was shipped again."""

    how: str
    lines: int
    accepted_at_stop: int
    lost: list[int]
    lost_ages: list[float]  # seconds between each lost line's writing and the stop
    duplicated: list[int]
    objects_before: int
    objects_lost: list[str]
    objects_changed: list[str]
    restart_seconds: float
    lost_written_after_stop: list[int]

    def summary(self) -> str:
        ages = f" (written {min(self.lost_ages):.2f}-{max(self.lost_ages):.2f} s before the stop)" if self.lost else ""
        return (
            f"{self.how}: {self.lines} lines, {len(self.lost)} lost{ages}, {len(self.duplicated)} twice; "
            f"{len(self.objects_lost)} of {self.objects_before} objects lost; stop+start {self.restart_seconds:.1f} s"
        )


def stop_with_traffic(stack: LocalStack, workdir: Path, how: str, rate: float = 40.0, before: float = 2.0) -> Outcome:
    """Traffic until objects land, `before` s more, then `how` (terminate | kill), start
    again, let the shipper send what failed meanwhile, and count."""
    kinesis = boto3.client("kinesis", endpoint_url=stack.endpoint, region_name="us-east-1")
    workdir.mkdir(parents=True, exist_ok=True)
    writer = Writer(workdir / "access.log", rate, run=workdir.name)
    writer.log.touch()
    shipper = Shipper(kinesis, STREAM, writer.log, workdir / "nginx-access.pos", max_backoff=1.0).start()
    try:
        s3 = s3_client(stack)
        writer.start()
        assert wait_until(lambda: request_numbers(bucket_objects(s3, BUCKET), writer.run), 60, interval=0.5)
        time.sleep(before)  # traffic keeps running: the stop comes in the middle of it
        objects = bucket_objects(s3, BUCKET)
        accepted = shipper.shipped
        stopped_at = time.monotonic()
        getattr(stack, how)()
        assert stack.survivors == set(), "a process of the stopped LocalStack outlived it"
        stack.start()
        restart = time.monotonic() - stopped_at
        writer.stop()
        total = len(writer.written)
        # the shipper, like fluentd, kept retrying its failed puts: they land in the new stream
        assert wait_until(lambda: shipper.shipped >= total, 120, interval=0.5), (shipper.shipped, total)
        counts: Counter[int] = Counter()

        def settled() -> bool:
            nonlocal counts
            previous, counts = counts, request_numbers(bucket_objects(s3, BUCKET), writer.run)
            return counts == previous and total - 1 in counts

        assert wait_until(settled, 60, interval=1.0)
        after = bucket_objects(s3, BUCKET)
    finally:
        writer.stop()
        shipper.stop()
    lost = [n for n in range(total) if n not in counts]
    return Outcome(
        how=how,
        lines=total,
        accepted_at_stop=accepted,
        lost=lost,
        lost_ages=[stopped_at - writer.written[n] for n in lost],
        duplicated=[n for n, c in counts.items() if c > 1],
        objects_before=len(objects),
        objects_lost=[k for k in objects if k not in after],
        objects_changed=[k for k in objects if k in after and after[k] != objects[k]],
        restart_seconds=restart,
        lost_written_after_stop=[n for n in lost if writer.written[n] > stopped_at],
    )
