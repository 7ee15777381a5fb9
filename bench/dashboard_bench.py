"""Dashboard benchmark: the API's time per page refresh over an hour of 200 req/s.

    python3 bench/dashboard_bench.py               # 720,000 lines in 3,600 objects
    python3 bench/dashboard_bench.py --rate 50     # a smaller hour

The hour is written as bench/query_bench.py writes it (the handler's parser and key
layout, one object per second) into moto's S3 in its own process. The dashboard server
(query/dashboard.py) runs in this process on a loopback port, its clock at the end of
that hour. One refresh is what the page asks every 5 s: the 8 requests of
query/static/app.js, sent at once. Timed: the first refresh (reads the whole hour), then
refreshes with one new second of traffic landed before each (the steady state: a listing
and one new object), the 24 h window, and, for comparison, the query tool reading the
hour from scratch as `./start.sh query` does. Goal: a steady refresh well under the 5 s
refresh interval (<= 1 s).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import resource
import statistics
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import bench_env

ROOT = bench_env.prepare("init", "query", "bench")

import boto3  # noqa: E402
import dashboard  # noqa: E402
import logs_query  # noqa: E402
from kinesis_event_to_s3 import S3Object, line_to_json, object_key  # noqa: E402
from pipeline_bench import moto_process  # noqa: E402
from query_bench import BUCKET, HOUR, nginx_line, write_hour  # noqa: E402

END = HOUR + timedelta(hours=1)


def page_requests(window: str) -> list[str]:
    """The requests of one refresh of the page (query/static/app.js load())."""
    q = f"window={window}"
    return [
        f"/api/traffic?{q}",
        f"/api/latency?{q}",
        f"/api/errors?{q}&examples=3",
        f"/api/pipeline?{q}",
        *(f"/api/top?{q}&by={by}&limit=10" for by in ("path", "agent", "client")),
    ]


def refresh(url: str, window: str) -> tuple[float, dict]:
    """All of one refresh's requests at once, as the browser sends them; seconds, traffic."""
    started = time.perf_counter()

    def get(path: str) -> dict:
        with urllib.request.urlopen(url + path, timeout=300) as response:  # noqa: S310 - our loopback URL
            return json.loads(response.read())

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(get, page_requests(window)))
    return time.perf_counter() - started, answers[0]


def land_one_second(s3, rate: int, sequence: int, rng: random.Random) -> int:
    """One more object of `rate` lines (a new batch that just arrived), as the handler names it."""
    at = END - timedelta(seconds=1)
    s3_object = S3Object(object_key(f"{at:%Y/%m/%d/%H}", at, "shardId-000000000001", str(sequence), ""))
    s3_object.lines.extend(line_to_json(nginx_line(rng, at))[1] for _ in range(rate))
    s3.put_object(Bucket=BUCKET, Key=s3_object.key, Body=s3_object.body(""))
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=200, help="requests a second in the hour (default 200)")
    parser.add_argument("--runs", type=int, default=10, help="steady refreshes timed (default 10)")
    args = parser.parse_args()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, load average {load}")
    with moto_process() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        started = time.perf_counter()
        # one object a second, no re-sent lines: the hour docs/dashboard.md measured
        objects, lines, _ = write_hour(s3, args.rate, 1, "", 0.0)
        print(
            f"hour {HOUR:%Y-%m-%d %H}:00 UTC: {lines:,} lines in {objects:,} objects "
            f"(written in {time.perf_counter() - started:.0f} s)"
        )

        client = logs_query.s3_client(endpoint, "us-east-1", 16)
        store = dashboard.Store(logs_query.Bucket(client, BUCKET), workers=16, clock=lambda: END)
        app = dashboard.App(store, dashboard.vendor_dir(None) if _has_uplot() else ROOT)
        server = dashboard.make_server(app, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            first_s, traffic = refresh(url, "1h")
            if traffic["requests"] != lines:
                raise SystemExit(f"the dashboard counted {traffic['requests']} requests, {lines} were written")
            print(f"first refresh, 1 h window (reads the whole hour): {first_s:6.2f} s")

            rng, sequence, total, steady = random.Random(5), 10**9, lines, []
            for _ in range(args.runs):
                total += land_one_second(s3, args.rate, sequence, rng)
                sequence += 1
                store.synced = None  # as after the page's 5 s pause: the refresh lists again
                seconds, traffic = refresh(url, "1h")
                if traffic["requests"] != total:
                    raise SystemExit(f"the dashboard counted {traffic['requests']}, {total} were written")
                steady.append(seconds)
            print(
                f"steady refresh, 1 h window, one new object each: median {statistics.median(steady):.3f} s, "
                f"max {max(steady):.3f} s ({args.runs} refreshes, 8 requests each)"
            )
            store.synced = None
            first_day, _ = refresh(url, "24h")
            store.synced = None
            day_s, traffic = refresh(url, "24h")
            print(f"24 h window (25 hour prefixes listed): first {first_day:.3f} s, then {day_s:.3f} s")
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"dashboard process peak RSS (moto runs apart): {rss:.0f} MiB")
        finally:
            server.shutdown()
            server.server_close()
            store.close()

        started = time.perf_counter()
        logs_query.query(
            logs_query.Bucket(client, BUCKET), HOUR, END, "SELECT count(*) FROM logs", "json", io.StringIO()
        )
        tool_s = time.perf_counter() - started
        print(f"for comparison, the query tool over the hour from scratch (./start.sh query): {tool_s:.2f} s")
        median = statistics.median(steady)
        print(f"goal (steady refresh <= 1 s): {'met' if median <= 1 else 'NOT met'}")
    return 0


def _has_uplot() -> bool:
    try:
        dashboard.vendor_dir(None)
    except logs_query.Failure:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
