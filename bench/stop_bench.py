"""What a stop of LocalStack in the middle of traffic costs: lines lost, lines twice,
objects lost, and how long the stop and the next start take.

    python3 bench/stop_bench.py                       # 3 x SIGTERM, 3 x SIGKILL at 100 req/s
    python3 bench/stop_bench.py --rate 200 --runs 5 --how kill

Each run is tests/support/stop_scenario.py's `stop_with_traffic` (the same code the
persistence tests assert on): the real LocalStack 4.14.0 host process with the project's
hooks (restore, provision, watcher; shutdown.d save), a writer appending unique nginx
lines at `--rate` lines/s, the fluentd stand-in shipping them with the stack's settings;
after `--before` s of traffic, SIGTERM to LocalStack alone (`docker stop` or `docker
compose restart localstack`: no drain, which only `./start.sh down` does) or SIGKILL to
everything (a crash); then a start on the same saved-logs folder, the shipper retrying
what failed meanwhile, and a count of every request's line in the bucket.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import bench_env

ROOT = bench_env.prepare("init", "tests")

from support.localstack_host import LocalStack, install  # noqa: E402
from support.stop_scenario import stop_with_traffic  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="lines per second (default 100)")
    parser.add_argument("--runs", type=int, default=3, help="stops of each kind (default 3)")
    parser.add_argument("--how", choices=["terminate", "kill", "both"], default="both")
    parser.add_argument("--before", type=float, default=5.0, help="seconds of traffic before the stop (default 5)")
    args = parser.parse_args()
    kinds = ["terminate", "kill"] if args.how == "both" else [args.how]
    print(f"rate {args.rate:g} lines/s, {args.runs} run(s) each, {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="stop-bench-") as workdir:
        stack = LocalStack(install(), Path(workdir) / "localstack")
        stack.start()
        try:
            results = {how: [] for how in kinds}
            for run in range(args.runs):
                for how in kinds:
                    outcome = stop_with_traffic(stack, Path(workdir) / f"{how}-{run}", how, args.rate, args.before)
                    results[how].append(outcome)
                    print(f"  run {run + 1}: {outcome.summary()}; load {os.getloadavg()[0]:.1f}", flush=True)
        finally:
            stack.stop()
    print("\n| stop | runs | lines | lost (max of a run) | oldest lost line | twice | objects lost | stop+start |")
    print("|---|---|---|---|---|---|---|---|")
    for how, outcomes in results.items():
        oldest = max((max(o.lost_ages) for o in outcomes if o.lost), default=0.0)
        print(
            f"| {'SIGTERM' if how == 'terminate' else 'SIGKILL'} | {len(outcomes)} "
            f"| {sum(o.lines for o in outcomes):,} | {max(len(o.lost) for o in outcomes)} "
            f"| {oldest:.2f} s before the stop | {sum(len(o.duplicated) for o in outcomes)} "
            f"| {max(len(o.objects_lost) for o in outcomes)} "
            f"| {statistics.median(o.restart_seconds for o in outcomes):.1f} s (median) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
