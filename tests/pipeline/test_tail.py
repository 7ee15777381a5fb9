"""./start.sh tail's tool (query/tail.py) on the real pipeline: real nginx -> the fluentd
stand-in -> LocalStack's Kinesis (two shards) -> its mapping -> the handler -> its S3.
Known requests are each printed exactly once, in order per shard, with the filters applied."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading

import pytest
from support.net import wait_until
from support.nginx import raw_request
from support.query_data import QUERY

pytestmark = pytest.mark.localstack


class TailProcess:
    """query/tail.py --json as a process; its stdout lines collected by a thread."""

    def __init__(self, endpoint: str, bucket: str, *options: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT")}
        target = ["--endpoint-url", endpoint, "--bucket", bucket]
        self.proc = subprocess.Popen(
            [sys.executable, str(QUERY / "tail.py"), "--json", "--interval", "0.2", *options, *target],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.records: list[dict] = []
        first = self.proc.stderr.readline()
        assert first.startswith("tail: following"), first + self.proc.stderr.read()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.records.append(json.loads(line))

    def stop(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=10)
        return err


def request(port: int, path: str) -> None:
    raw_request(port, f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())


def test_tail_prints_every_landed_request_once_in_shard_order_with_filters(start_pipeline):
    # given a two-shard pipeline (one Kinesis record per line, random keys) and two tails:
    # everything, and 5xx under /v1/ only
    pipeline = start_pipeline("--shards", "2", output="kinesis_streams")
    port = pipeline.nginx.port
    request(port, "/before-the-tail")  # already there or in flight: never shown as new twice
    pipeline.wait_for(1)
    everything = TailProcess(pipeline.endpoint, pipeline.names.bucket)
    errors_v1 = TailProcess(pipeline.endpoint, pipeline.names.bucket, "--status", "5xx", "--path", "/v1/")
    try:
        # when known requests are made: 200s, 404s, 500s and 503s, under /v1/ and not
        paths = []
        for n in range(60):
            path = ["/v1/ok/{n}", "/v1/checkout?n={n}", "/v1/status?n={n}", "/missing/{n}"][n % 4].format(n=n)
            paths.append(path)
            request(port, path)
        landed = pipeline.wait_for(61)
        assert wait_until(lambda: len(everything.records) >= 60 and len(errors_v1.records) >= 30, 30)
        pipeline.settle()
    finally:
        err_all, err_v1 = everything.stop(), errors_v1.stop()
    assert "Traceback" not in err_all + err_v1
    # then the tail showed each request exactly once (and the one before it not at all)
    shown = [r["request_uri"] for r in everything.records]
    assert collections.Counter(shown) == collections.Counter(paths)
    # in each shard's order: the order of the shard's objects (by sequence number) and lines
    shard_of: dict[str, str] = {}
    in_s3: dict[str, list[str]] = collections.defaultdict(list)
    for key, record in sorted(landed, key=lambda item: int(item[0].rsplit("_", 1)[-1].split(".")[0])):
        shard = key.rsplit("_", 2)[-2]
        shard_of[record["request_uri"]] = shard
        in_s3[shard].append(record["request_uri"])
    assert len(in_s3) == 2, "both shards carried records"
    for shard, uris in in_s3.items():
        assert [u for u in shown if shard_of[u] == shard] == [u for u in uris if u != "/before-the-tail"]
    # and the filtered tail exactly the 5xx under /v1/, with their statuses
    expected = [p for p in paths if p.startswith(("/v1/checkout", "/v1/status"))]
    assert collections.Counter(r["request_uri"] for r in errors_v1.records) == collections.Counter(expected)
    assert {r["status"] for r in errors_v1.records} == {500, 503}
