"""Handler throughput and memory on the real corpus, beside a naive implementation.

PutObject is answered at once (an in-process stand-in), so the figures are the handler's
own work: decoding, parsing, serialising, batching. Run: python3 bench/handler_bench.py
Twice: the corpus as it is (combined/main), then each line with the stack's main_timed
tail appended (rt, urt, rl, rid, host), the naive regex reading that tail too.
Targets: at least 2x the naive throughput; at most 64 MB peak for a 6 MB batch.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "init"), str(ROOT / "tests")]
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")

import kinesis_event_to_s3 as handler_module  # noqa: E402
from support.corpus import corpus_files, corpus_lines  # noqa: E402
from support.events import KinesisRecord, fluentd_message, kinesis_event, sequence_numbers  # noqa: E402


class InstantS3:
    """Answers PutObject at once and keeps only the byte count."""

    def __init__(self) -> None:
        self.bytes = 0

    def put_object(self, Body: bytes, **_: object) -> None:  # boto3's argument name
        self.bytes += len(Body)


# The design this project replaced, tidied: a lazy regex searched per line, groupdict,
# json.dumps per record, one object per batch.
NAIVE_RE = re.compile(
    r'(?P<remote_addr>.*?) - (?P<remote_user>.*?) \[(?P<time_local>.*?)\] "(?P<request>.*?)" '
    r'(?P<status>\d+) (?P<body_bytes_sent>\S+) "(?P<http_referer>.*?)" "(?P<http_user_agent>.*?)"'
    r'(?: "(?P<http_x_forwarded_for>.*?)")?'
    r'(?: rt=(?P<request_time>\S+) urt="(?P<upstream_response_time>.*?)" rl=(?P<request_length>\S+)'
    r' rid=(?P<request_id>\S+) host="(?P<host>.*?)")?$'
)


def naive_handler(event: dict, s3: InstantS3) -> None:
    out = []
    for record in event["Records"]:
        message = json.loads(base64.b64decode(record["kinesis"]["data"]))["message"]
        match = NAIVE_RE.search(message)
        out.append(json.dumps(match.groupdict() if match else None))
    s3.put_object(Body="\n".join(out).encode())


def timed_tail(n: int) -> str:
    """A main_timed tail as nginx writes one: a time, a length, a random-looking id."""
    upstream = "-" if n % 3 else f"{n % 97 / 1000:.3f}"
    return f' rt={n % 1000 / 1000:.3f} urt="{upstream}" rl={300 + n % 500} rid={n * 2654435761:032x} host="localhost"'


def corpus_events(batch_size: int, timed: bool = False) -> tuple[list[dict], int]:
    lines = [raw.decode("utf-8") for path in corpus_files() for raw in corpus_lines(path)]
    if timed:
        lines = [line + timed_tail(n) for n, line in enumerate(lines)]
    seqs = sequence_numbers(len(lines))
    events = []
    for start in range(0, len(lines), batch_size):
        chunk = range(start, min(start + batch_size, len(lines)))
        events.append(kinesis_event([KinesisRecord(fluentd_message(lines[i]), seqs[i]) for i in chunk]))
    return events, len(lines)


def lines_per_second(runs: dict[str, object], events: list[dict], lines: int, rounds: int) -> dict[str, float]:
    """Best of `rounds` for each implementation, alternating them so that a busy moment
    of the machine does not favour one; in CPU time (the work is one thread's, and other
    processes on a shared machine then stretch it less than the wall clock)."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.process_time()
            for event in events:
                run(event)
            best[name] = min(best[name], time.process_time() - started)
    return {name: lines / seconds for name, seconds in best.items()}


def six_mb_event() -> dict:
    """A batch just under Lambda's 6 MB invocation payload, of corpus lines."""
    lines = [raw.decode("utf-8") for path in corpus_files() for raw in corpus_lines(path)]
    seqs = sequence_numbers(100_000)
    records = []
    size = len(json.dumps(kinesis_event([])))
    limit = 6 * 1024 * 1024
    while True:
        record = KinesisRecord(fluentd_message(lines[len(records) % len(lines)]), seqs[len(records)])
        size += len(json.dumps(kinesis_event([record])["Records"][0])) + 2
        if size > limit:
            return kinesis_event(records)
        records.append(record)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=1000, help="records per event (default 1000)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds, best kept (default 7)")
    args = parser.parse_args()

    ours_s3, naive_s3 = InstantS3(), InstantS3()
    handler_module.s3 = ours_s3
    handler_module.log = lambda *a, **k: None
    runs = {"ours": handler_module.handler, "naive": lambda e: naive_handler(e, naive_s3)}
    events, lines = corpus_events(args.batch_size)
    speeds = lines_per_second(runs, events, lines, args.rounds)
    ours, naive = speeds["ours"], speeds["naive"]
    timed_speeds = lines_per_second(runs, corpus_events(args.batch_size, timed=True)[0], lines, args.rounds)

    event = six_mb_event()
    payload_mb = len(json.dumps(event)) / 1024 / 1024
    tracemalloc.start()
    handler_module.handler(event)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"corpus: {lines} lines in {len(events)} events of {args.batch_size} records")
    print(f"handler: {ours:,.0f} lines/s")
    print(f"naive:   {naive:,.0f} lines/s")
    print(f"speed-up: {ours / naive:.2f}x (target >= 2x)")
    timed_ours, timed_naive = timed_speeds["ours"], timed_speeds["naive"]
    print(f"main_timed lines (the corpus with the tail appended): handler {timed_ours:,.0f} lines/s, ", end="")
    print(f"naive {timed_naive:,.0f} lines/s, speed-up {timed_ours / timed_naive:.2f}x (target >= 2x)")
    print(
        f"peak memory for a {payload_mb:.1f} MB batch ({len(event['Records'])} records): "
        f"{peak / 1024 / 1024:.1f} MB (target <= 64 MB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
