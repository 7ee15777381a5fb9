"""The stack on a real Docker engine: start times, request -> S3 latency, memory, disk.

    python3 bench/engine_bench.py                  # cached engine; 100 req/s, 300 s measured, 600 s soak
    python3 bench/engine_bench.py --cold           # a new engine data root: every image built from nothing
    python3 bench/engine_bench.py --rate 50 --seconds 60 --soak 120

Runs `./start.sh` in a copy of the checkout on the tests' private engine (needs root on
Linux and tests/engine/install.sh; tests/support/engine.py), with the stand-in images
(tests/engine/images), exactly as the engine tests do. Prints:
- with --cold: the seconds to debootstrap the base and build each stand-in image;
- the first start (new volumes) and a warm start (after `./start.sh down`), each until
  ./start.sh says the pipeline is up;
- request -> listable S3 object at --rate req/s for --seconds, per minute (p50/p99/max,
  lost), requests sent from this host to the published port (over --paths paths, as
  live_query_bench's), lines through the compose network (nginx -> fluentd -> LocalStack);
- each container's memory (docker stats) at start, every 5 minutes of the soak and after
  --soak seconds of traffic; request -> S3 per 5 minutes of the soak;
- with --queries N: during the soak, N rounds of the user's query commands, each timed
  from the shell (`./start.sh query --since 1h`, a GROUP BY over 1h, `--since 15m`), with
  the newest row's age when the query began, and where the time of each went (a wrapper
  in front of curl, CURL_WRAPPER: start.sh before its curl, connecting, the dashboard's
  first byte, after);
- with each row and round, the load average and the CPU time the hypervisor stole from
  this machine (/proc/stat's steal: a VM's neighbours), overall and its worst 10 s, so a
  slow stretch of the stack can be told from one of the machine;
- disk: the images, and this stack's volumes;
- with --closed-hour: after the soak, a closed hour of the last week as the stack writes
  it at 200 req/s (query_bench's 14,400 objects, 1% re-sent) put into the stack's
  bucket and merged (`./start.sh compact`), then `./start.sh query --from/--to` a GROUP
  BY over it, as a user asks about a past day (goal <= 2 s), each answer checked against
  the lines written, with how many objects were on this machine (the saved logs, or the
  query tools' cache where the merge kept its parts and their Parquet copies).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import shlex
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bench_env

ROOT = bench_env.prepare("init", "tests", "bench")

import pipeline_bench  # noqa: E402
from support.engine import Engine, engine_problem, private_engine  # noqa: E402
from support.stack import Stack  # noqa: E402


def timed_start(stack: Stack, what: str) -> float:
    began = time.monotonic()
    result = stack.run(timeout=1800)
    seconds = time.monotonic() - began
    if result.returncode != 0:
        raise SystemExit(f"engine_bench: {what} failed:\n{result.stdout}{result.stderr}")
    print(f"{what}: ./start.sh said the pipeline is up after {seconds:.1f} s", flush=True)
    return seconds


def memory(stack: Stack, when: str) -> None:
    stats = stack.docker("stats", "--no-stream", "--format", "{{json .}}").stdout.splitlines()
    rows = [json.loads(line) for line in stats]
    mine = [row for row in rows if row["Name"].startswith(stack.project + "-")]
    shown = [f"{row['Name'].removeprefix(stack.project + '-')} {row['MemUsage'].split(' / ')[0]} (CPU {row['CPUPerc']})"
             for row in mine]  # fmt: skip
    print(f"memory {when}: " + ", ".join(shown), flush=True)


def memory_every(stack: Stack, every: float, seconds: float) -> None:
    # not at the end: the reading after the soak is run()'s
    for n in range(1, math.ceil(seconds / every)):
        time.sleep(every)
        memory(stack, f"after {n * every / 60:g} min of the soak")


def disk(stack: Stack) -> None:
    images = stack.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}").stdout.splitlines()
    print("images: " + ", ".join(images))
    volumes = stack.docker("system", "df", "-v", "--format", "{{json .Volumes}}", check=False).stdout
    try:
        listed = json.loads(volumes)
    except json.JSONDecodeError:
        listed = []
    print("volumes: " + ", ".join(f"{v['Name'].removeprefix(stack.project + '_')} {v['Size']}" for v in listed
                                  if v["Name"].startswith(stack.project)), flush=True)  # fmt: skip


PEAK = 10.0  # seconds: the CPU stolen is also shown for the worst stretch this long


def stolen_note(share: float | None, peak: float | None = None) -> str:
    """The text `, CPU stolen 3% (10 s max 40%)`: the machine's CPU time the hypervisor gave
    others (a VM's neighbours), so a slow stretch of the stack's can be told from one of
    the machine's; "" where /proc/stat has none."""
    if share is None:
        return ""
    worst = f" ({PEAK:g} s max {peak:.0f}%)" if peak is not None else ""
    return f", CPU stolen {share:.0f}%{worst}"


def watched_sleep(seconds: float) -> str:
    """Sleep `seconds`; stolen_note() of that time."""
    first = before = pipeline_bench.cpu_ticks()
    end, peak = time.monotonic() + seconds, None
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(PEAK, left))
        after = pipeline_bench.cpu_ticks()
        share = pipeline_bench.stolen(before, after)
        if share is not None and left >= PEAK / 2:  # a short last stretch says little
            peak = max(peak or 0.0, share)
        before = after
    return stolen_note(pipeline_bench.stolen(first, before), peak)


STARVED = 10.0  # % of the machine's CPU stolen during a round: its times are the machine's


def apart_from_stolen(values: list[float], stolen: list[float | None]) -> str:
    """The text `; max 0.62 s in the 110 rounds with under 10% of the CPU stolen (10 more: max
    4.68 s)`: the rounds where the machine kept its CPU apart from the rest; "" if none was
    starved."""
    kept = [value for value, share in zip(values, stolen, strict=True) if share is None or share < STARVED]
    starved = [value for value, share in zip(values, stolen, strict=True) if share is not None and share >= STARVED]
    if not starved:
        return ""
    return (
        f"; max {max(kept, default=math.nan):.2f} s in the {len(kept)} rounds with under {STARVED:g}% of the "
        f"CPU stolen ({len(starved)} more: max {max(starved):.2f} s)"
    )


def load(stack: Stack, rate: float, seconds: float, paths: int, width: float = 60, poll: float = 0.1) -> None:
    """pipeline_bench's open-loop client (requests over `paths` paths, 0: each its own) and
    bucket poller, against the stack's ports; a row per `width` seconds of sending. The
    poller lists the whole bucket every `poll` s: over an hour, 0.25 s (as
    live_query_bench's) keeps it from weighing on LocalStack."""
    seen = pipeline_bench.Seen()
    stop = threading.Event()
    poller = threading.Thread(target=pipeline_bench.poll_bucket, args=(stack.s3(), seen, stop, poll), daemon=True)
    poller.start()
    start, ticks = time.time(), pipeline_bench.cpu_ticks()
    loads: list[str] = []

    def sample() -> None:
        for _ in range(int(seconds // width)):
            note = watched_sleep(width)
            loads.append(pipeline_bench.load_average() + note)

    threading.Thread(target=sample, daemon=True).start()
    port, run = int(stack.env["WEB_PORT"]), f"engine{int(start)}"
    sent = asyncio.run(pipeline_bench.send_load(port, rate, seconds, run, paths=paths))
    deadline = time.time() + 60
    while time.time() < deadline and not set(sent) <= set(seen.first_seen):
        time.sleep(0.5)
    stop.set()
    poller.join(timeout=30)
    for _, _, row in pipeline_bench.minute_rows(sent, seen.first_seen, [], loads, start, seconds, width):
        # fluentd's puts are inside its container here: no PutRecords timings to show
        print(re.sub(r", PutRecords .*, puts so far \d+", "", row), flush=True)
    latencies = [seen.first_seen[p] - t for p, t in sent.items() if p in seen.first_seen]
    counts = seen.counts()
    duplicated = sum(1 for p in sent if counts.get(p, 0) > 1)
    print(
        f"rate {rate:g} req/s for {seconds:g} s: sent {len(sent)}, lost {len(set(sent) - set(seen.first_seen))}, "
        f"duplicated {duplicated}, p50 {pipeline_bench.percentile(latencies, 50):.2f} s, "
        f"p99 {pipeline_bench.percentile(latencies, 99):.2f} s, max {max(latencies, default=float('nan')):.2f} s, "
        f"objects {len(seen.keys)}, load {pipeline_bench.load_average()}"
        + stolen_note(pipeline_bench.stolen(ticks, pipeline_bench.cpu_ticks())),
        flush=True,
    )


QUERIES = {
    "summary 1h": ["query", "--since", "1h"],
    "GROUP BY 1h": ["query", "--since", "1h", "--format", "csv", "SELECT status, count(*) AS n FROM logs GROUP BY 1"],
    "summary 15m": ["query", "--since", "15m"],
}
# the tool's note when the dashboard answered (query/logs_query.py answered_by_dashboard)
ANSWERED = re.compile(r"answered by the dashboard's loaded tables in ([0-9.]+) s")
SLOW = 1.0  # seconds: a query this slow has its note printed (the goal of --since 15m)
NEWEST = ["query", "--since", "1h", "--format", "csv", "SELECT max(timestamp) FROM logs"]


# In front of curl on start.sh's PATH: the same call, with curl's own phases and the moment
# it began appended to $CURL_TIMES (through curl's %{stderr}: start.sh reads only the status
# it prints). Bench-only; a user's start.sh runs curl itself.
CURL_WRAPPER = """#!/usr/bin/env bash
set -euo pipefail
phases='%{time_connect} %{time_pretransfer} %{time_starttransfer} %{time_total}\\n'
args=()
for arg in "$@"; do
  [[ $arg == '%{http_code}' ]] && arg+="%{stderr}$EPOCHREALTIME $phases"
  args+=("$arg")
done
exec {curl} "${args[@]}" 2>>"$CURL_TIMES"
"""
PARTS = ("before curl", "connect", "first byte", "after curl")


def curl_parts(times: Path, began: float, ended: float) -> dict[str, float]:
    """Where a query's time went, from the wrapper's line (seconds since the epoch for
    `began`/`ended`); empty when curl did not run or the line is not there."""
    lines = times.read_text().split() if times.exists() else []
    times.write_text("")
    if len(lines) < 5:
        return {}
    start, connect, pretransfer, first_byte, total = (float(value) for value in lines[-5:])
    return {
        "before curl": start - began,
        "connect": connect,
        "first byte": first_byte - pretransfer,  # the request sent: the dashboard's answer and its waits
        "after curl": ended - start - total,
    }


def wrapped_curl(folder: Path, env: dict[str, str]) -> tuple[dict[str, str], Path]:
    """An environment whose curl is CURL_WRAPPER in `folder`, and the file it writes."""
    curl = shutil.which("curl", path=env.get("PATH"))
    if curl is None:
        raise SystemExit("engine_bench: no curl on PATH: ./start.sh query would not ask the dashboard's port")
    wrapper = folder / "curl"
    wrapper.write_text(CURL_WRAPPER.replace("{curl}", shlex.quote(curl)))
    wrapper.chmod(0o755)
    times = folder / "curl-times"
    return {**env, "PATH": f"{folder}:{env.get('PATH', '')}", "CURL_TIMES": str(times)}, times


def queries(stack: Stack, rounds: int, seconds: float) -> None:
    """The user's query commands, timed as the shell sees them, spread over `seconds`."""
    times: dict[str, list[float]] = {name: [] for name in QUERIES}
    inside: dict[str, list[float]] = {name: [] for name in QUERIES}  # the dashboard's answer, as the tool saw it
    parts: dict[str, dict[str, list[float]]] = {name: {part: [] for part in PARTS} for name in QUERIES}
    stolen: list[float | None] = []  # the CPU stolen during each round's queries
    folder = Path(tempfile.mkdtemp(prefix="engine-bench-curl-"))
    env, curl_times = wrapped_curl(folder, stack.env)
    for n in range(rounds):
        began_round, ticks = time.monotonic(), pipeline_bench.cpu_ticks()
        slow: list[str] = []
        for name, command in QUERIES.items():
            began, began_epoch = time.monotonic(), time.time()
            result = stack.run(*command, timeout=300, env=env)
            times[name].append(time.monotonic() - began)
            spent = curl_parts(curl_times, began_epoch, time.time())
            for part, value in spent.items():
                parts[name][part].append(value)
            if result.returncode != 0:
                raise SystemExit(f"engine_bench: ./start.sh {' '.join(command)} failed:\n{result.stderr}")
            answered = ANSWERED.search(result.stderr)
            inside[name].append(float(answered.group(1)) if answered else math.nan)
            if times[name][-1] > SLOW:  # where it went: the tool's note has the refresh's parts
                where = ", ".join(f"{part} {value:.2f} s" for part, value in spent.items())
                slow.append(
                    f"  {name} {times[name][-1]:.2f} s: {(result.stderr.strip().splitlines() or [''])[-1]}"
                    + (f" [{where}]" if where else "")
                )
        stolen.append(pipeline_bench.stolen(ticks, pipeline_bench.cpu_ticks()))
        asked = time.time()
        newest = stack.run(*NEWEST, timeout=300).stdout.strip().splitlines()[-1]
        age = asked - datetime.fromisoformat(newest).replace(tzinfo=UTC).timestamp()
        print(
            f"queries round {n + 1}: "
            + ", ".join(
                f"{name} {values[-1]:.2f} s (dashboard {inside[name][-1]:.2f} s)" for name, values in times.items()
            )
            + f", newest row {age:.1f} s old, load {pipeline_bench.load_average()}"
            + stolen_note(stolen[-1]),
            *slow,
            sep="\n",
            flush=True,
        )
        time.sleep(max(0.0, seconds / rounds - (time.monotonic() - began_round)))
    for name, values in times.items():
        answers = [value for value in inside[name] if not math.isnan(value)]
        rest = [total - answer for total, answer in zip(values, inside[name], strict=True) if not math.isnan(answer)]
        print(
            f"./start.sh {name}: p50 {pipeline_bench.percentile(values, 50):.2f} s, max {max(values):.2f} s "
            f"over {len(values)} runs; answered by the dashboard {len(answers)}, its answer p50 "
            f"{pipeline_bench.percentile(answers, 50):.2f} s, the rest (start.sh and its client) p50 "
            f"{pipeline_bench.percentile(rest, 50):.2f} s, max {max(rest, default=math.nan):.2f} s"
            + apart_from_stolen(values, stolen),
            flush=True,
        )
        if parts[name]["connect"]:
            print(
                f"  where it went ({len(parts[name]['connect'])} through curl): "
                + ", ".join(
                    f"{part} p50 {pipeline_bench.percentile(values, 50):.3f} s, max {max(values):.3f} s"
                    for part, values in parts[name].items()
                ),
                flush=True,
            )
    shutil.rmtree(folder, ignore_errors=True)


MIRROR = "/opt/pipeline/init/bucket_mirror.py"  # in the LocalStack container (start.sh)
# the tool's note: how many of the objects it read were on this machine (query/logs_query.py)
READ_NOTE = re.compile(r"read (\d+) object\(s\)(?: \((\d+) already on this machine\))?")


def closed_hour(stack: Stack, runs: int = 3) -> None:
    """A closed hour six days back, as the stack writes one at 200 req/s, put into the
    stack's bucket and merged by `./start.sh compact` (the stack's compactor checks each
    closed hour once an hour: it would merge it at the next hour's turn, to the same
    bytes), then a user's `./start.sh query --from/--to` over it: once right away (fetched
    from LocalStack), then, once the saved logs hold the merged parts, `runs` times."""
    import query_bench

    hour = (datetime.now(UTC) - timedelta(days=6)).replace(minute=0, second=0, microsecond=0)
    s3, end = stack.s3(), hour + timedelta(hours=1)
    began = time.monotonic()
    objects, lines, expected = query_bench.write_hour(s3, 200, query_bench.OBJECTS_PER_SECOND, "", 0.01, hour)
    print(
        f"closed hour {hour:%Y-%m-%d %H}:00: {lines:,} requests in {objects:,} objects, put in "
        f"{time.monotonic() - began:.0f} s",
        flush=True,
    )
    span = ["--from", f"{hour:%Y-%m-%dT%H:%M}", "--to", f"{end:%Y-%m-%dT%H:%M}"]
    began = time.monotonic()
    merged = stack.run("compact", *span, timeout=1800)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=query_bench.BUCKET, Prefix=f"{hour:%Y/%m/%d/%H}/")
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    raw = sum(1 for key in keys if query_bench.bucket_reader.function_object(key))
    said = (merged.stdout + merged.stderr).strip().splitlines()[-1:] or ["(nothing)"]
    print(
        f"  ./start.sh compact: exit {merged.returncode} after {time.monotonic() - began:.0f} s, {len(keys)} objects "
        f"left ({raw} not merged): {said[0]}",
        flush=True,
    )

    def ask(label: str) -> tuple[float, int, int]:
        started = time.monotonic()
        result = stack.run("query", *span, "--format", "json", query_bench.SQL, timeout=300)
        seconds = time.monotonic() - started
        got = {json.loads(row)["status"]: json.loads(row)["requests"] for row in result.stdout.splitlines()}
        note = READ_NOTE.search(result.stderr)
        read, local = (int(note.group(1)), int(note.group(2) or 0)) if note else (-1, 0)
        right = "right" if got == dict(expected) else f"WRONG: {got} (expected {dict(expected)})"
        print(f"  {label}: {seconds:.2f} s ({read} objects read, {local} on this machine; {right})", flush=True)
        said = [line for line in result.stderr.splitlines() if line.startswith("logs_query:")]
        print(f"    {said[-1] if said else '(no note)'}", flush=True)
        return seconds, read, local

    # the merge kept its parts in the query tools' cache (query-cache volume), and their
    # records as Parquet: read from there while the saved logs catch up
    first = ask("./start.sh query --from/--to GROUP BY, right after the merge")[0]
    # the watcher saves the objects events name, 16 GETs at once, and checks deletes with a
    # listing (init/bucket_mirror.py): the hour's 14,400 puts queue before the merged parts,
    # its 14,400 deletes after them; `sync` waits until all is saved
    began = time.monotonic()
    synced = stack.compose(
        "exec", "-T", "localstack", "python3", MIRROR, "sync", "--timeout", "1800", check=False, timeout=1900
    )
    print(
        f"  saved logs caught up (bucket_mirror.py sync): exit {synced.returncode} after "
        f"{time.monotonic() - began:.0f} s",
        flush=True,
    )
    # (the merge's Parquet copies in the cache still come first, then the saved logs)
    times = [ask("./start.sh query --from/--to GROUP BY, the saved logs caught up")[0] for _ in range(runs)]
    met = "met" if max(first, *times) <= 2 else "NOT met"
    print(
        f"  closed hour: right after the merge {first:.2f} s, then {', '.join(f'{t:.2f}' for t in times)} s "
        f"(goal <= 2 s each: {met})",
        flush=True,
    )


def run(engine_env: dict[str, str], args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        stack = Stack(Path(folder) / "stack", engine_env)
        try:
            timed_start(stack, "first start (new volumes)")
            memory(stack, "at start")
            load(stack, args.rate, args.seconds, args.paths)
            if args.soak > args.seconds:
                pipeline_bench_soak = args.soak - args.seconds
                print(f"soak: {args.rate:g} req/s for {pipeline_bench_soak:g} s more", flush=True)
                # request -> S3 per 5 minutes and the memory every 5 minutes, through the soak
                soak = threading.Thread(
                    target=load, args=(stack, args.rate, pipeline_bench_soak, args.paths, 300, 0.25)
                )
                soak.start()
                watched = threading.Thread(target=memory_every, args=(stack, 300, pipeline_bench_soak), daemon=True)
                watched.start()
                if args.queries:
                    queries(stack, args.queries, pipeline_bench_soak)
                soak.join()
            memory(stack, f"after {max(args.soak, args.seconds):g} s of traffic")
            disk(stack)
            if args.closed_hour:
                closed_hour(stack)
            began = time.monotonic()
            stopped = stack.run("down", timeout=600)
            took = time.monotonic() - began
            said = "" if stopped.returncode == 0 else ": " + (stopped.stderr.strip().splitlines() or [""])[-1]
            print(f"./start.sh down: exit {stopped.returncode} after {took:.1f} s{said}", flush=True)
            timed_start(stack, "warm start (images and saved logs kept)")
        finally:
            stack.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100, help="requests a second (default 100)")
    parser.add_argument("--seconds", type=float, default=300, help="measured seconds of traffic (default 300)")
    parser.add_argument("--soak", type=float, default=600, help="seconds of traffic before the second memory reading")
    parser.add_argument("--queries", type=int, default=0, help="rounds of ./start.sh query during the soak")
    parser.add_argument(
        "--paths",
        type=int,
        default=40,
        help="distinct request paths, each request's number in its query string (default 40, a site's "
        "tens); 0: each request on its own path, the summary's worst case (runs before 2026-12-03 14:30)",
    )
    parser.add_argument(
        "--closed-hour",
        action="store_true",
        help="after the soak: a closed hour of the last week (14,400 objects), ./start.sh compact, "
        "then ./start.sh query over it",
    )
    parser.add_argument("--cold", action="store_true", help="a new engine data root: build every image from nothing")
    args = parser.parse_args()
    problem = engine_problem()
    if problem:
        print(f"engine_bench: {problem}", file=sys.stderr)
        return 2
    print(f"engine_bench: load average before {pipeline_bench.load_average()}", flush=True)
    if args.cold:
        with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as home:
            engine = Engine(home=Path(home))
            engine.start()
            try:
                seconds = engine.stand_ins()
                print("cold build: " + ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
                      + f", total {sum(seconds.values()):.0f} s", flush=True)  # fmt: skip
                run(engine.env, args)
            finally:
                engine.stop()
        return 0
    with private_engine() as engine:
        run(engine.env, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
