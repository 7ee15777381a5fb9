"""The dashboard's load per refresh as an hour of 200 req/s accumulates in its DuckDB.

    python3 bench/dashboard_load_bench.py              # the dashboard's way, then DuckDB's
    python3 bench/dashboard_load_bench.py --rows 1000

Each refresh under traffic loads the lines that landed since the last one into the
dashboard's tables (query/dashboard.py Store._insert, on a Store of its own in a fresh
process per way). DuckDB checkpoints an in-memory database inside the statement that
writes past `checkpoint_threshold` (16 MiB by default); the dashboard turns that off and
checkpoints after an answer went out (Store.tidy). This times every load of an hour
(720,000 lines in loads of `--rows`) both ways, and the dashboard's checkpoints apart
(no answer waits for them), and prints the median, p99 and worst load, the total, and
the process's peak resident memory. No S3: the lines are the handler's records of
bench/query_bench.py's nginx lines.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from datetime import timedelta

import bench_env

ROOT = bench_env.prepare("init", "query", "bench")

HOUR_LINES = 720_000


WAYS = {
    "dashboard": "checkpoints after answers (Store.tidy), none inside a load",
    "duckdb": "DuckDB's own checkpoints at 16 MiB, inside the load that crosses it",
}


def one_way(way: str, rows: int) -> dict[str, float]:
    """Load an hour in loads of `rows` lines, checkpointing the dashboard's way or DuckDB's."""
    import dashboard
    import query_bench

    if way == "duckdb":
        dashboard.CHECKPOINT_THRESHOLD, dashboard.TIDY_BYTES = "16MiB", 1 << 62
    store = dashboard.Store(bucket=None, workers=1)  # type: ignore[arg-type]  # no reads here
    rng = random.Random(7)
    # two loads' worth of distinct lines, alternated: the load, not the line maker, is timed
    made = [
        query_bench.line_to_json(query_bench.nginx_line(rng, query_bench.HOUR + timedelta(seconds=n // 200)))[1]
        for n in range(2 * rows)
    ]
    bodies = [("\n".join(made[:rows]) + "\n").encode(), ("\n".join(made[rows:]) + "\n").encode()]
    times, checkpoints = [], []
    try:
        for n in range(HOUR_LINES // rows):
            began = time.perf_counter()
            with store.lock:
                store._insert("logs_all", query_bench.HOUR.strftime("%Y/%m/%d/%H/"), [bodies[n % 2]])
            times.append(time.perf_counter() - began)
            tidied = store.tidy()  # as the answer's handler does once it sent the answer
            if tidied is not None:
                checkpoints.append(tidied)
    finally:
        store.close()
    times.sort()
    return {
        "loads": len(times),
        "p50": statistics.median(times),
        "p99": times[int(0.99 * (len(times) - 1))],
        "worst": times[-1],
        "total": sum(times),
        "over_0.3": sum(1 for t in times if t > 0.3),
        "checkpoints": len(checkpoints),
        "checkpoint_worst": max(checkpoints, default=0.0),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,  # KiB on Linux
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000, help="lines a load (default 3000: 15 s at 200 req/s)")
    parser.add_argument("--one", choices=WAYS, help=argparse.SUPPRESS)  # a child process: one way, JSON out
    args = parser.parse_args()
    if not 100 <= args.rows <= HOUR_LINES:
        parser.error(f"--rows must be between 100 and {HOUR_LINES}")
    if args.one:
        print(json.dumps(one_way(args.one, args.rows)))
        return 0
    print(f"{HOUR_LINES:,} lines in loads of {args.rows:,}, Python {sys.version.split()[0]}, one process per way")
    for way, how in WAYS.items():
        child = [sys.executable, __file__, "--rows", str(args.rows), "--one", way]
        result = subprocess.run(child, capture_output=True, text=True, check=False)
        if result.returncode:
            print(f"{way}: failed: {result.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(result.stdout)
        tidy = f"; {r['checkpoints']} checkpoints after answers, worst {r['checkpoint_worst']:.3f} s"
        tidy = tidy if r["checkpoints"] else ""
        print(
            f"{way} ({how}): {r['loads']} loads, p50 {r['p50']:.3f} s, p99 {r['p99']:.3f} s, "
            f"worst {r['worst']:.3f} s, {r['over_0.3']} over 0.3 s, total {r['total']:.1f} s{tidy}; "
            f"peak RSS {r['peak_rss_mb']} MB",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
