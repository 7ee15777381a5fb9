"""How LocalStack 4.14.0's Kinesis (kinesis-mock) slows down as a shard fills.

    python3 bench/kinesis_fill_bench.py                 # fill for 180 s
    python3 bench/kinesis_fill_bench.py --seconds 300

The real LocalStack as a host process (tests/support/localstack_host.py), one stream of
one shard. It fills the shard with PutRecords of 500 small records as fast as it answers
and, every `--every` stored records, times what the pipeline does at that fill level:
a PutRecords of ONE record (what fluentd's kinesis_streams_aggregated sends per flush, a
~8 kB aggregated record), a PutRecords of 100 one-line records (kinesis_streams at
100 req/s, one second's lines) and a GetRecords of the newest records (what the event
source mapping does at every poll). Median of 3 each. The printed rows are what the
docs/performance.md's whole-day model is fitted to.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import bench_env

ROOT = bench_env.prepare("init", "tests")

import boto3  # noqa: E402
from support import localstack_host  # noqa: E402

STREAM = "fill-bench"
LINE = (  # one nginx line as fluentd's json formatter writes it, ~140 bytes
    b'{"message":"127.0.0.1 - - [27/Nov/2026:08:00:00 +0000] \\"GET /bench/1 HTTP/1.1\\" 404 153 '
    b'\\"-\\" \\"b\\" \\"-\\""}\n'
)


def timed(call) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def median_of_3(call) -> float:
    return statistics.median(timed(call) for _ in range(3))


def main() -> int:
    parser = argparse.ArgumentParser(description="kinesis-mock: latency against records stored on a shard.")
    parser.add_argument("--seconds", type=float, default=180, help="how long to fill (default 180)")
    parser.add_argument("--every", type=int, default=2500, help="measure every N stored records (default 2500)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; load average before {'{:.2f} {:.2f} {:.2f}'.format(*os.getloadavg())}")
    with tempfile.TemporaryDirectory() as workdir:
        interpreters = localstack_host.install()
        with localstack_host.running(interpreters, Path(workdir) / "ls", provision_hook=False) as localstack:
            kinesis = boto3.client("kinesis", endpoint_url=localstack.endpoint, region_name="us-east-1")
            kinesis.create_stream(StreamName=STREAM, ShardCount=1)
            kinesis.get_waiter("stream_exists").wait(StreamName=STREAM, WaiterConfig={"Delay": 0.5})
            shard = kinesis.list_shards(StreamName=STREAM)["Shards"][0]["ShardId"]
            aggregated = [{"Data": LINE * 40, "PartitionKey": "k"}]  # 0.2 s of lines at 200 req/s
            plain = [{"Data": LINE, "PartitionKey": f"k{n}"} for n in range(100)]
            fill = [{"Data": LINE, "PartitionKey": f"k{n}"} for n in range(500)]
            stored, deadline, next_row = 0, time.monotonic() + args.seconds, 0
            print("stored records | PutRecords 1 aggregated | PutRecords 100 lines | GetRecords newest | load")
            while time.monotonic() < deadline:
                if stored >= next_row:
                    latest = kinesis.get_shard_iterator(StreamName=STREAM, ShardId=shard, ShardIteratorType="LATEST")
                    put_one = median_of_3(lambda: kinesis.put_records(StreamName=STREAM, Records=aggregated))
                    put_plain = median_of_3(lambda: kinesis.put_records(StreamName=STREAM, Records=plain))
                    iterator = latest["ShardIterator"]
                    get = median_of_3(lambda it=iterator: kinesis.get_records(ShardIterator=it, Limit=1000))
                    stored += 3 + 300
                    print(
                        f"{stored:14d} | {put_one:21.3f} s | {put_plain:18.3f} s | {get:15.3f} s | "
                        + "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
                        flush=True,
                    )
                    next_row += args.every
                kinesis.put_records(StreamName=STREAM, Records=fill)
                stored += 500
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
