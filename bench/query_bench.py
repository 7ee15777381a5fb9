"""Query benchmark: one hour of the stack's objects at 200 req/s in moto's S3, counted by status.

    python3 bench/query_bench.py                 # 720,000 lines in 14,400 objects
    python3 bench/query_bench.py --rate 50       # a smaller hour
    python3 bench/query_bench.py --gzip          # COMPRESSION=gzip objects
    python3 bench/query_bench.py --resend 0.05   # 5% of the lines land a second time

The hour is written as the stack writes it: one object per poll that finds records, about
4 a second (OBJECTS_PER_SECOND), under `YYYY/MM/DD/HH/`, each line a record made by the
handler's own parser from a realistic nginx line in the stack's `main_timed` format; a
share of them (`--resend`, default 1%) is written again in the next object, as fluentd's
re-sent chunks land. moto server runs in its own process (no shared interpreter lock).
Then, in the same run: the query tool (`query/logs_query.py`: parallel boto3, DuckDB) and
a naive path (list, get every object one by one, `json.loads` each line), same answer
asserted;
then the hour is compacted (`query/compact_hours.py`) and the query tool timed again.
Goal on a 2-core machine: <= 5 s and >= 5x the naive path. Last, what counting each
request once costs: DuckDB's load of the fetched hour with and without the dedupe.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bench_env

ROOT = bench_env.prepare("init", "query", "bench")

import boto3  # noqa: E402
import bucket_reader  # noqa: E402
import compact_hours  # noqa: E402
import logs_query  # noqa: E402
import pipeline_target  # noqa: E402
from kinesis_event_to_s3 import S3Object, line_to_json, object_key  # noqa: E402
from pipeline_bench import moto_process  # noqa: E402

BUCKET = pipeline_target.DEFAULTS["bucket"][1]
# One object per poll that finds records: 3.6-4.4 a second measured under traffic at 100
# and 200 req/s (bench/pipeline_bench.py, both rigs; docs/performance.md), ~14,000 an hour.
OBJECTS_PER_SECOND = 4
HOUR = datetime(2026, 11, 26, 17, tzinfo=UTC)
SQL = "SELECT status, count(*) AS requests FROM logs GROUP BY status ORDER BY status"

PATHS = ["/", "/index.html", "/products/{n}", "/search?q=shoes&page={n}", "/v1/orders/{n}", "/old/{n}", "/missing/{n}"]
STATUSES = [200, 200, 200, 200, 301, 404, 404, 500, 304]
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "curl/8.5.0",
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
]


def nginx_line(rng: random.Random, second: datetime) -> str:
    """A `main_timed` line, as nginx writes one."""
    path = rng.choice(PATHS).format(n=rng.randrange(1000))
    method = "POST" if path.startswith("/v1/") and rng.random() < 0.3 else "GET"
    forwarded = f"203.0.113.{rng.randrange(256)}" if rng.random() < 0.2 else "-"
    return (
        f"10.0.{rng.randrange(256)}.{rng.randrange(256)} - - [{second:%d/%b/%Y:%H:%M:%S} +0000] "
        f'"{method} {path} HTTP/1.1" {rng.choice(STATUSES)} {rng.randrange(100, 20000)} '
        f'"-" "{rng.choice(AGENTS)}" "{forwarded}" rt={rng.expovariate(20):.3f} urt="-" '
        f'rl={rng.randrange(80, 900)} rid={rng.getrandbits(128):032x} host="localhost"'
    )


def write_hour(
    s3, rate: int, per_second: int, compression: str, resend: float, hour: datetime = HOUR
) -> tuple[int, int, Counter]:
    """`per_second` objects per second of `hour`, `rate` records a second spread over them,
    keys as the handler names them; a `resend` share of each object's records again in the
    next object."""
    rng = random.Random(11)
    expected: Counter = Counter()
    objects = []
    again: list[str] = []
    for second in range(3600):
        for part in range(per_second):
            at = hour + timedelta(seconds=second + part / per_second)
            first = second * rate + part * (rate // per_second) + 1
            key = object_key(f"{at:%Y/%m/%d/%H}", at, "shardId-000000000000", str(first), compression)
            s3_object = S3Object(key)
            s3_object.lines.extend(again)
            again = []
            count = rate // per_second + (1 if part < rate % per_second else 0)
            for _ in range(count):
                _, record = line_to_json(nginx_line(rng, at))
                s3_object.lines.append(record)
                expected[json.loads(record)["status"]] += 1
                if rng.random() < resend:
                    again.append(record)
            objects.append((s3_object.key, s3_object.body(compression)))

    def put(item: tuple[str, bytes]) -> None:
        s3.put_object(Bucket=BUCKET, Key=item[0], Body=item[1], ContentType="application/x-ndjson")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, objects))
    return len(objects), sum(expected.values()), expected


def naive(s3) -> Counter:
    """List and get every object one by one, json.loads each line, each request id once."""
    counts: Counter = Counter()
    seen: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{HOUR:%Y/%m/%d/%H}/"):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            if body[:2] == b"\x1f\x8b":
                import gzip

                body = gzip.decompress(body)
            for line in body.splitlines():
                record = json.loads(line)
                if record["request_id"] not in seen:
                    seen.add(record["request_id"])
                    counts[record["status"]] += 1
    return counts


def tool(endpoint: str) -> tuple[Counter, int]:
    bucket = logs_query.Bucket(logs_query.s3_client(endpoint, "us-east-1", 16), BUCKET)
    out = io.StringIO()
    fetched = logs_query.query(bucket, HOUR, HOUR + timedelta(hours=1), SQL, "json", out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    return Counter({row["status"]: row["requests"] for row in rows}), fetched.objects


def timed(function, runs: int):
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=200, help="requests a second in the hour (default 200)")
    parser.add_argument(
        "--runs", type=int, default=3, help="runs of the query after compaction; the median is shown (default 3)"
    )
    parser.add_argument(
        "--objects-per-second",
        type=int,
        default=OBJECTS_PER_SECOND,
        help=f"objects the stack writes a second (default {OBJECTS_PER_SECOND}; see the module's help)",
    )
    parser.add_argument("--gzip", action="store_true", help="write .json.gz objects")
    parser.add_argument(
        "--resend", type=float, default=0.01, help="share of lines written twice, as re-sent (default %(default)s)"
    )
    args = parser.parse_args()
    compression = "gzip" if args.gzip else ""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, load average {load}")
    with moto_process() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        started = time.perf_counter()
        objects, lines, expected = write_hour(s3, args.rate, args.objects_per_second, compression, args.resend)
        size = sum(
            item["Size"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for item in page.get("Contents", [])
        )
        print(
            f"hour {HOUR:%Y-%m-%d %H}:00 UTC: {lines:,} requests in {objects:,} objects (and {args.resend:.0%} "
            f"of them again, re-sent), {size / 1e6:.0f} MB "
            f"{'gzip ' if compression else ''}(written in {time.perf_counter() - started:.0f} s)"
        )
        tool_s, (tool_counts, _) = timed(lambda: tool(endpoint), 1)
        naive_s, naive_counts = timed(lambda: naive(s3), 1)
        if not tool_counts == expected == naive_counts:
            raise SystemExit(f"different answers: tool {tool_counts}, naive {naive_counts}, written {expected}")
        print(f"count by status, query tool (parallel boto3 + DuckDB): {tool_s:6.2f} s")
        print(f"count by status, naive (one by one + json.loads):      {naive_s:6.2f} s")
        print(f"speed-up: {naive_s / tool_s:.1f}x")
        dedupe_cost(endpoint, args.runs)
        started = time.perf_counter()
        compacted = compact_hours.compact(
            logs_query.Bucket(logs_query.s3_client(endpoint, "us-east-1", 16), BUCKET),
            [f"{HOUR:%Y/%m/%d/%H}/"],
        )
        compact_s = time.perf_counter() - started
        print(f"compaction of the hour: {compact_s:.2f} s ({compacted})")
        after_s, (after_counts, after_objects) = timed(lambda: tool(endpoint), args.runs)
        if after_counts != expected:
            raise SystemExit(f"different answer after compaction: {after_counts}, written {expected}")
        print(
            f"after compaction, query tool: {after_s:6.2f} s (median of {args.runs}; {after_objects} object read; "
            f"{naive_s / after_s:.0f}x the naive path before compaction)"
        )
        ok = after_s <= 5 and naive_s / after_s >= 5
        print(
            f"goal (<= 5 s and >= 5x naive): {'met' if ok else 'NOT met'} with compaction; "
            f"{'met' if tool_s <= 5 and naive_s / tool_s >= 5 else 'not met'} without"
        )
    return 0


def dedupe_cost(endpoint: str, runs: int) -> None:
    """DuckDB's load of the hour (re-sent lines included), fetched once, with and without
    the dedupe; and compaction's own dedupe of the same lines."""
    bucket = logs_query.Bucket(logs_query.s3_client(endpoint, "us-east-1", 16), BUCKET)
    with tempfile.TemporaryDirectory() as tmp:
        files, _ = logs_query._fetch_to_files(bucket, [f"{HOUR:%Y/%m/%d/%H}/"], Path(tmp) / "logs", 16, None)

        def load(dedupe: bool) -> int:
            con = logs_query.connect()
            logs_query.load_tables(con, files, [], HOUR, HOUR + timedelta(hours=1), dedupe=dedupe)
            return con.execute("SELECT count(*) FROM logs").fetchone()[0]

        best = {False: float("inf"), True: float("inf")}
        rows = {}
        for _ in range(runs):  # alternating, best of each: a busy moment favours neither
            for dedupe in best:
                started = time.perf_counter()
                rows[dedupe] = load(dedupe)
                best[dedupe] = min(best[dedupe], time.perf_counter() - started)
        (kept_s, kept), (once_s, once) = (best[False], rows[False]), (best[True], rows[True])
        data = b"".join(bucket_reader.plain(Path(f).read_bytes()) for f in files)
        compaction_s, deduped = timed(lambda: compact_hours.first_of_each_request(data), runs)
    print(
        f"load into DuckDB (best of {runs}): {kept_s:.2f} s keeping every line ({kept:,} rows), "
        f"{once_s:.2f} s one row per request_id ({once:,} rows): dedupe costs {once_s - kept_s:+.2f} s "
        f"({(once_s - kept_s) / kept_s:+.0%})"
    )
    # a gzip file's objects end in a member holding one newline (bucket_reader.GZIP_NEWLINE)
    lines, left = (sum(1 for x in text.splitlines() if x.strip()) for text in (data, deduped))
    print(f"compaction's dedupe of the same {lines:,} lines: {compaction_s:.2f} s ({left:,} kept)")


if __name__ == "__main__":
    sys.exit(main())
