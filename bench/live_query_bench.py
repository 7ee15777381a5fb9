"""Live query benchmark: queries while traffic flows through the real LocalStack, and a soak.

    python3 bench/live_query_bench.py                          # 200 req/s for 60 min
    python3 bench/live_query_bench.py --minutes 5              # a short run
    python3 bench/live_query_bench.py --no-compactor           # without rolling compaction
    python3 bench/live_query_bench.py --rates 0,100,200 --minutes 5   # objects an hour only

The rig is bench/pipeline_bench.py's `localstack` one, with the project's hooks as the
stack runs them: LocalStack 4.14.0 as a host process, provisioned by its ready.d hook
(init_resource.py) which also starts the saved-logs watcher into its data dir; a real
nginx; the fluentd stand-in shipping as fluent.conf says; the stack's speed settings.
An open-loop client sends `--rate` unique requests a second, over `--paths` paths (40:
a site has tens; the number of the request in the query string), or each on its own path
(`--paths 0`: the summary's path statements then group every row apart, its worst case);
a poller lists the open hours every `--poll` s and notes when each request's line first
appears in an object.

Every `--sample-every` s, one after the other, as a user runs them on the host
(`logs_query.py --endpoint-url ... --quiet`, and `--saved-logs <data dir>` when the
script has that flag): the `--since 1h` summary, a GROUP BY status over `--since 1h`,
the `--since 15m` summary. Each is timed wall-clock; its count is compared with the
poller's: every line seen in the bucket >= 2 s before the query started must be counted
(`missed`); freshness is the query's start less the newest row's timestamp (the GROUP
BY; nginx's timestamps have whole seconds). Every 5 minutes an exact check lists every
request path of the last hour (untimed) against the poller's set, and a row shows that
window's request->S3 latency, lost lines, objects in the hour's listing, the memory of
LocalStack and kinesis-mock and the load average. With `--compactor` (default when
query/compact_hours.py has `--follow`) the stack's rolling compactor runs beside it; with
`--dashboard` (default when dashboard.py has `--query-socket`) the stack's dashboard runs
as its own process and the query tool asks it first (`--socket`), as `./start.sh query`
does in its container; each sample says who answered, and a decline counts as a failure.
At the end: p50/p99 of each query and of freshness, objects written an hour, what the
bucket holds, and the closed hours (goal <= 2 s): the hour the traffic finished, if it
crossed an hour's end, as the stack left it and compacted; then a past hour written as
the stack writes it at 200 req/s (bench/query_bench.py's), queried with --from/--to
before and after compact_hours.py merged it. `--query-dir` takes the query tools from
another checkout (a branch under work).

`--rates`: objects the function writes an hour at each rate, nothing else (the cost
model: docs/performance.md, docs/aws.md).
Goals (issue 19): `--since 1h` and the GROUP BY <= 3 s, `--since 15m` <= 1 s, at any
moment; closed hours <= 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bench_env

ROOT = bench_env.prepare("init", "query", "tests", "bench")

import boto3  # noqa: E402
import pipeline_bench  # noqa: E402
from bucket_layout import RECORD_NAME  # noqa: E402
from pipeline_bench import BUCKET, FUNCTION, load_average, percentile, send_load  # noqa: E402
from support import localstack_host  # noqa: E402

QUERY = ROOT / "query" / "logs_query.py"
COMPACTOR_NICE = 6  # CPU weight 272 of a default process's 1024, as the stack's cpu_shares 256
ASSETS = ROOT / "query" / "assets"  # uPlot for the dashboard (npm ci), as the tests install it
COMPACTOR = ROOT / "query" / "compact_hours.py"
GROUP_BY = 'SELECT status, count(*) AS requests, max("timestamp") AS newest FROM logs GROUP BY 1 ORDER BY 1'
WINDOW = 300  # seconds per soak row
RULE = 2.0  # a line in the bucket this long before a query starts must be counted
URI = re.compile(rb'"request_uri":"([^"]*)"')
KINESIS_MOCK = re.compile(
    r"kinesis[-_](mock|local)"
)  # LocalStack runs the Node.js build: node .../kinesis-local/main.js
GOALS = {"since 1h": 3.0, "group by 1h": 3.0, "since 15m": 1.0}


def accepts(script: Path, flag: str) -> bool:
    """Whether `script --help` lists `flag` (the bench measures both versions of a tool)."""
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=False)
    return flag in result.stdout


def hour_prefix(moment: float) -> str:
    return f"{datetime.fromtimestamp(moment, UTC):%Y/%m/%d/%H}/"


@dataclass
class Watch:
    """What the poller saw: raw objects (key -> size, lines) and each path's first sighting."""

    run: str
    raw: dict[str, tuple[int, int]] = field(default_factory=dict)
    raw_seen_at: dict[str, float] = field(default_factory=dict)
    first_seen: dict[str, float] = field(default_factory=dict)
    lists: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def early(self, before: float, sent_after: float, sent: dict[str, float]) -> set[str]:
        """Paths seen in the bucket before `before` and sent after `sent_after`."""
        with self.lock:
            return {p for p, t in self.first_seen.items() if t <= before and sent.get(p, 0) >= sent_after}


def poll(s3, watch: Watch, stop: threading.Event, interval: float) -> None:
    """List the open hours from two minutes back (keys carry the batch's arrival time, so
    one short page), get each new raw object once; compacted objects are not new lines."""
    while not stop.is_set():
        now = time.time()
        since = now - 120
        for prefix in sorted({hour_prefix(since), hour_prefix(now)}):
            start_after = f"{prefix}{RECORD_NAME}_{datetime.fromtimestamp(since, UTC):%Y%m%dT%H%M%S}"
            token = None
            while True:
                extra = {"ContinuationToken": token} if token else {"StartAfter": start_after}
                try:
                    page = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix, **extra)
                except Exception as exc:  # a slow moment must not end the soak
                    print(f"  poller: {type(exc).__name__}: {exc}", flush=True)
                    break
                watch.lists += 1
                for item in page.get("Contents", []):
                    key = item["Key"]
                    name = key.rsplit("/", 1)[-1]
                    if key in watch.raw or not name.startswith(RECORD_NAME + "_") or "_compacted_" in name:
                        continue
                    try:
                        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                    except s3.exceptions.NoSuchKey:  # compacted away before we looked
                        continue
                    seen = time.time()
                    uris = [m.decode() for m in URI.findall(body)]
                    with watch.lock:
                        watch.raw[key] = (item["Size"], len(uris))
                        watch.raw_seen_at[key] = seen
                        for uri in uris:
                            watch.first_seen.setdefault(uri, seen)
                token = page.get("NextContinuationToken")
                if not token:
                    break
        stop.wait(interval)


def count_objects(s3, prefixes: list[str]) -> int:
    total = 0
    for prefix in prefixes:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            total += len(page.get("Contents", []))
    return total


# --- memory of the emulator's processes ------------------------------------------------------


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


def memory(localstack: localstack_host.LocalStack) -> dict[str, float]:
    """RSS (MB) of LocalStack's own process, of kinesis-mock (its child, found by its
    command line), and of everything LocalStack started together."""
    root = localstack.process.pid
    members = localstack_host.family(root)
    kinesis = [pid for pid in members if KINESIS_MOCK.search(cmdline(pid))]
    return {
        "localstack": rss_mb(root),
        "kinesis-mock": sum(rss_mb(pid) for pid in kinesis),
        "all": sum(rss_mb(pid) for pid in members),
    }


# --- the queries -----------------------------------------------------------------------------


@dataclass
class Sample:
    at: float  # seconds into the run
    name: str
    seconds: float
    counted: int
    expected: int  # lines seen >= RULE s before the start, in the range
    missed: int  # at least this many of them not counted
    freshness: float | None
    error: str = ""
    via: str = "bucket"  # or "dashboard": who answered
    parts: str = ""  # the dashboard's answer, refresh and SQL seconds, as its note gives them

    def row(self) -> str:
        fresh = f"{self.freshness:5.1f} s" if self.freshness is not None else "    - "
        text = (
            f"  {self.at / 60:5.1f} min  {self.name:<12} {self.seconds:6.2f} s  counted {self.counted:7d}"
            f"  (seen >= {RULE:g} s before: {self.expected:7d}, missed {self.missed})  freshness {fresh}"
            f"  via {self.via}{' (' + self.parts + ')' if self.parts else ''}"
        )
        return text + (f"  ERROR {self.error}" if self.error else "")


class Queries:
    def __init__(self, endpoint: str, saved_logs: Path | None, socket: Path | None = None) -> None:
        self.base = [sys.executable, str(QUERY), "--endpoint-url", endpoint]
        self.saved_logs = saved_logs
        if saved_logs is not None:
            self.base += ["--saved-logs", str(saved_logs)]
        # with a dashboard, its note on stderr tells who answered; without, no note
        self.base += ["--socket", str(socket)] if socket else ["--quiet"]

    def run(self, args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
        started = time.perf_counter()
        result = subprocess.run([*self.base, *args], capture_output=True, text=True, check=False)
        return time.perf_counter() - started, result


def via(result: subprocess.CompletedProcess) -> str:
    return "dashboard" if "answered by the dashboard" in result.stderr else "bucket"


def parts(result: subprocess.CompletedProcess) -> str:
    """`answered in A s, refresh R s (listing L s, ...), SQL S s` from the dashboard's note:
    where an answer's time went (A on the tool's clock from asking to the answer; the
    refresh's parts as the dashboard measured them; the rest of the sample's time is the
    tool's process starting)."""
    found = re.search(r"tables in ([\d.]+) s .*?(refresh [\d.]+ s( \([^)]*\))?, SQL [\d.]+ s)", result.stderr)
    return f"answered in {found.group(1)} s, {found.group(2)}" if found else ""


def summary_count(output: str) -> int:
    match = re.match(r"(\d+) requests,", output)
    return int(match.group(1)) if match else 0


def sample(queries: Queries, watch: Watch, sent: dict[str, float], began: float) -> list[Sample]:
    """The three queries, one after the other, each checked against the poller."""
    samples = []
    for name, args, span in (
        ("since 1h", ["--since", "1h"], 3600),
        ("group by 1h", ["--since", "1h", "--format", "json", GROUP_BY], 3600),
        ("since 15m", ["--since", "15m"], 900),
    ):
        start = time.time()
        # the range starts at a whole second of nginx's clock: leave its edge out
        early = watch.early(start - RULE, start - span + 2, sent)
        seconds, result = queries.run(args)
        freshness = None
        if result.returncode != 0:
            counted, error = 0, (result.stderr.strip().splitlines() or ["failed"])[-1]
        elif name.startswith("group"):
            rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
            counted, error = sum(r["requests"] for r in rows), ""
            newest = max((r["newest"] for r in rows), default=None)
            if newest:
                freshness = start - datetime.fromisoformat(newest).replace(tzinfo=UTC).timestamp()
        else:
            counted, error = summary_count(result.stdout), ""
        if "did not answer" in result.stderr:  # answered from the bucket all the same: say why
            error = error or result.stderr.strip().splitlines()[0]
        missed = max(0, len(early) - counted)
        who = (via(result), parts(result))
        samples.append(Sample(start - began, name, seconds, counted, len(early), missed, freshness, error, *who))
    return samples


def exact_check(queries: Queries, watch: Watch, sent: dict[str, float], run: str) -> str:
    """Every request path of the last hour, listed (untimed), against the poller's set."""
    start = time.time()
    early = watch.early(start - RULE, start - 3600 + 2, sent)
    sql = f"SELECT request_uri FROM logs WHERE request_uri LIKE '/bench/{run}/%'"  # noqa: S608 - our own run id
    # the hour before `start` itself: the tool's own clock starts later (by its start-up)
    since, until = (datetime.fromtimestamp(t, UTC).isoformat() for t in (start - 3600, start + 60))
    seconds, result = queries.run(["--from", since, "--to", until, "--format", "csv", sql])
    if result.returncode != 0:
        return f"exact check failed: {result.stderr.strip()[-300:]}"
    listed = result.stdout.splitlines()[1:]
    found = set(listed)
    missing = early - found
    return (
        f"exact check ({seconds:.1f} s): {len(listed)} rows, {len(listed) - len(found)} twice, "
        f"{len(missing)} of {len(early)} lines seen >= {RULE:g} s before missing"
    )


# --- the soak rows ---------------------------------------------------------------------------


def window_row(
    index: int, windows: list[float], sent: dict[str, float], watch: Watch, began: float, snapshot: dict
) -> str:
    """Window `index` (ends at `windows[index]` s into the run; the last takes the stragglers)."""
    start = windows[index - 1] if index else 0.0
    low = began + start
    high = began + windows[index] if index < len(windows) - 1 else float("inf")
    paths = [p for p, t in list(sent.items()) if low <= t < high]
    with watch.lock:
        latencies = [watch.first_seen[p] - sent[p] for p in paths if p in watch.first_seen]
    mem = snapshot["memory"]
    return (
        f"  {start / 60:4.1f}-{windows[index] / 60:<4.1f} min: sent {len(paths)}, "
        f"p50 {percentile(latencies, 50):.2f} s, p99 {percentile(latencies, 99):.2f} s, "
        f"max {max(latencies, default=float('nan')):.2f} s, lost {len(paths) - len(latencies)}, "
        f"objects in the hour {snapshot['objects']}, RSS LocalStack {mem['localstack']:.0f} MB, "
        f"kinesis-mock {mem['kinesis-mock']:.0f} MB (all its processes {mem['all']:.0f} MB), "
        + (f"dashboard {snapshot['dashboard']:.0f} MB, " if snapshot.get("dashboard") else "")
        + f"load {snapshot['load']}"
    )


# --- the rig ---------------------------------------------------------------------------------


@contextlib.contextmanager
def rig(workdir: Path):
    """(LocalStack, pipeline_bench.Bench without its poller) with the project's hooks."""
    with pipeline_bench.emulator("localstack", workdir, {}, hooks=True) as (endpoint, localstack):
        bench = pipeline_bench.Bench(
            workdir, endpoint, stand_in_mapping=False, localstack=localstack, provision=False, poll=False
        )
        try:
            yield localstack, bench
        finally:
            bench.close()


@contextlib.contextmanager
def poller(s3, watch: Watch, interval: float):
    # objects already there belong to an earlier run: known, never counted as this one's
    now = time.time()
    for prefix in sorted({hour_prefix(now - 120), hour_prefix(now)}):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            for item in page.get("Contents", []):
                watch.raw.setdefault(item["Key"], (0, 0))
    stop = threading.Event()
    thread = threading.Thread(target=poll, args=(s3, watch, stop, interval), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def end_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def compactor(endpoint: str, enabled: bool, log: Path):
    if not enabled:
        yield None
        return
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, str(COMPACTOR), "--follow", "--endpoint-url", endpoint],
            stdout=out,
            stderr=subprocess.STDOUT,
            # as the stack weighs it (cpu_shares 256 of 1024): it yields to the queries
            preexec_fn=lambda: os.nice(COMPACTOR_NICE),
        )
    try:
        yield process
    finally:
        end_process(process)


@contextlib.contextmanager
def dashboard(endpoint: str, saved: Path | None, enabled: bool, folder: Path, log: Path):
    """The stack's dashboard as its own process, answering the query tool on a socket in
    `folder` (QUERY_SOCKET in the stack); yields (the socket's path, the process), or Nones."""
    if not enabled:
        yield None, None
        return
    if not (ASSETS / "node_modules" / "uplot" / "dist" / "uPlot.iife.min.js").is_file():
        subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=ASSETS, check=True)
    path = folder / "query" / "query.sock"
    command = [sys.executable, str(QUERY.with_name("dashboard.py")), "--port", "0", "--endpoint-url", endpoint]
    command += ["--query-socket", str(path)] + (["--saved-logs", str(saved)] if saved else [])
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not path.is_socket():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the dashboard did not start: {log.read_text()[-500:]}")
            time.sleep(0.1)
        yield path, process
    finally:
        end_process(process)


def traffic(port: int, rate: float, seconds: float, run: str, sent: dict[str, float], paths: int) -> threading.Thread:
    thread = threading.Thread(target=lambda: asyncio.run(send_load(port, rate, seconds, run, sent, paths)), daemon=True)
    thread.start()
    return thread


def settle(watch: Watch, sent: dict[str, float], drain: float) -> None:
    deadline = time.monotonic() + drain
    while time.monotonic() < deadline and not all(p in watch.first_seen for p in list(sent)):
        time.sleep(0.5)


# --- the modes -------------------------------------------------------------------------------


def live(args: argparse.Namespace) -> int:
    run = f"live-{int(time.time())}"
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory() as tmp, rig(Path(tmp)) as (localstack, bench), contextlib.ExitStack() as stack:
        endpoint = localstack.endpoint
        saved = localstack.data_dir if accepts(QUERY, "--saved-logs") else None
        log = Path(tmp) / "dashboard.log"
        socket, answering = stack.enter_context(dashboard(endpoint, saved, args.dashboard, Path(tmp), log))
        queries = Queries(endpoint, saved, socket)
        print(
            f"query tool: {'reads the saved logs in ' + str(saved) if saved else 'S3 only (no --saved-logs flag)'}; "
            f"compactor: {'compact_hours.py --follow' if args.compactor else 'none'}; "
            f"dashboard: {'answers on its query socket' if args.dashboard else 'none'}",
            flush=True,
        )
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        watch, sent = Watch(run), {}
        samples: list[Sample] = []
        windows = [began_offset * WINDOW for began_offset in range(1, int(-(-seconds // WINDOW)) + 1)]
        windows[-1] = min(windows[-1], seconds)  # a last, shorter window ends with the sending
        snapshots: list[dict] = []

        def snapshot() -> None:
            snapshots.append(
                {
                    "objects": count_objects(s3, [hour_prefix(time.time())]),
                    "memory": memory(localstack),
                    "dashboard": rss_mb(answering.pid) if answering else None,
                    "load": load_average(),
                }
            )
            if args.exact:
                print("  " + exact_check(queries, watch, sent, run), flush=True)

        with poller(s3, watch, args.poll), compactor(endpoint, args.compactor, Path(tmp) / "compactor.log"):
            began = time.time()
            sender = traffic(bench.nginx.port, args.rate, seconds, run, sent, args.paths)
            spread = f"over {args.paths} paths" if args.paths else "each on its own path"
            print(
                f"sending {args.rate:g} req/s {spread} for {args.minutes:g} min; samples every {args.sample_every:g} s:"
            )
            next_sample, printed = began + args.sample_every, 0
            while sender.is_alive():
                now = time.time()
                if len(snapshots) < len(windows) and now >= began + windows[len(snapshots)]:
                    snapshot()
                if printed < len(snapshots) and now >= began + windows[printed] + 15:  # its last lines landed
                    print(window_row(printed, windows, sent, watch, began, snapshots[printed]), flush=True)
                    printed += 1
                if next_sample <= now < began + seconds:  # samples while traffic flows
                    for one in sample(queries, watch, sent, began):
                        samples.append(one)
                        print(one.row(), flush=True)
                    next_sample = max(next_sample + args.sample_every, time.time())
                time.sleep(0.2)
            ended = began + seconds
            while len(snapshots) < len(windows):
                snapshot()
            settle(watch, sent, 30)
            for index in range(printed, len(snapshots)):
                print(window_row(index, windows, sent, watch, began, snapshots[index]), flush=True)
        report_live(samples, watch, sent, began, ended, s3, localstack, args)
        if args.closed_hour:
            finished_hour(endpoint, queries, began, ended)
            closed_hour(s3, endpoint, queries, localstack)
    return 0


def report_live(
    samples: list[Sample],
    watch: Watch,
    sent: dict[str, float],
    began: float,
    ended: float,
    s3,
    localstack: localstack_host.LocalStack,
    args: argparse.Namespace,
) -> None:
    latencies = [watch.first_seen[p] - t for p, t in sent.items() if p in watch.first_seen]
    print(
        f"total: sent {len(sent)}, in S3 {len(latencies)}, lost {len(sent) - len(latencies)}, request->S3 p50 "
        f"{percentile(latencies, 50):.2f} s, p99 {percentile(latencies, 99):.2f} s, "
        f"max {max(latencies, default=float('nan')):.2f} s",
        flush=True,
    )
    for name, goal in GOALS.items():
        times = [s.seconds for s in samples if s.name == name and not s.error]
        fails = sum(1 for s in samples if s.name == name and s.error)
        missed = sum(s.missed for s in samples if s.name == name)
        by_dashboard = sum(1 for s in samples if s.name == name and s.via == "dashboard")
        met = times and percentile(times, 100) <= goal and not missed and not fails
        print(
            f"{name:<12}: {len(times)} samples ({by_dashboard} answered by the dashboard), "
            f"p50 {percentile(times, 50):.2f} s, p99 {percentile(times, 99):.2f} s, "
            f"max {max(times, default=float('nan')):.2f} s; failed {fails}; lines missed by the {RULE:g} s rule "
            f"{missed}; goal <= {goal:g} s every time: {'met' if met else 'NOT met'}",
            flush=True,
        )
    fresh = [s.freshness for s in samples if s.freshness is not None]
    print(f"freshness (query start - newest row): p50 {percentile(fresh, 50):.1f} s, p99 {percentile(fresh, 99):.1f} s")
    in_run = [k for k, t in watch.raw_seen_at.items() if began <= t <= ended + 5]
    hours = (ended - began) / 3600
    size = sum(watch.raw[k][0] for k in watch.raw_seen_at)
    lines = sum(watch.raw[k][1] for k in watch.raw_seen_at)
    prefixes = sorted({hour_prefix(t) for t in (began, ended)})
    remaining = count_objects(s3, prefixes)
    invocations = len(localstack.invocations(FUNCTION))
    print(
        f"objects the function wrote: {len(watch.raw_seen_at)} ({len(in_run) / hours:,.0f} an hour while sending; "
        f"{size / max(lines, 1):.0f} bytes a line); invocations {invocations}; the bucket holds {remaining} "
        f"object(s) in {', '.join(prefixes)} now; poller: {watch.lists} LISTs",
        flush=True,
    )


def time_closed(queries: Queries, hour: datetime, label: str, runs: int, expected: dict | None) -> dict:
    """`--from/--to` a GROUP BY over one closed hour, `runs` times; each answer must equal
    `expected` (or, without one, the first). Goal: <= 2 s."""
    import query_bench  # its GROUP BY, the one every bench checks against the lines written

    args = ["--from", f"{hour:%Y-%m-%dT%H:%M}", "--to", f"{hour + timedelta(hours=1):%Y-%m-%dT%H:%M}"]
    times = []
    for _ in range(runs):
        seconds, result = queries.run([*args, "--format", "json", query_bench.SQL])
        got = {json.loads(x)["status"]: json.loads(x)["requests"] for x in result.stdout.splitlines()}
        expected = got if expected is None else expected
        if got != expected:
            print(f"  {label}: WRONG ANSWER {got} (expected {expected}) {result.stderr[-300:]}", flush=True)
        times.append(seconds)
    met = "met" if max(times) <= 2 else "NOT met"
    counted = sum(expected.values())
    print(f"  {label}: {', '.join(f'{t:.2f}' for t in times)} s, {counted:,} requests (goal <= 2 s: {met})", flush=True)
    return expected


def compact(endpoint: str, hour: datetime) -> None:
    import compact_hours
    import logs_query

    started = time.perf_counter()
    bucket = logs_query.Bucket(logs_query.s3_client(endpoint, "us-east-1", 16), BUCKET)
    outcome = compact_hours.compact(bucket, [f"{hour:%Y/%m/%d/%H}/"])
    print(f"  compacted in {time.perf_counter() - started:.1f} s ({outcome})", flush=True)


def finished_hour(endpoint: str, queries: Queries, began: float, ended: float) -> None:
    """The hour the run's traffic finished, as the stack left it, then compacted."""
    first, last = hour_prefix(began), hour_prefix(ended)
    if first == last:
        print("finished hour: none (the traffic did not cross an hour's end)", flush=True)
        return
    hour = datetime.strptime(first, "%Y/%m/%d/%H/").replace(tzinfo=UTC)
    print(f"finished hour {hour:%Y-%m-%d %H}:00 (the run's traffic):", flush=True)
    counts = time_closed(queries, hour, "--from/--to GROUP BY, as the stack left it", 1, None)
    compact(endpoint, hour)
    time_closed(queries, hour, "--from/--to GROUP BY, compacted", 3, counts)


def closed_hour(s3, endpoint: str, queries: Queries, localstack: localstack_host.LocalStack) -> None:
    """A past hour as the stack writes it at 200 req/s, queried before and after compaction."""
    import query_bench

    started = time.perf_counter()
    objects, lines, expected = query_bench.write_hour(s3, 200, query_bench.OBJECTS_PER_SECOND, "", 0.01)
    hour = query_bench.HOUR
    print(
        f"closed hour {hour:%Y-%m-%d %H}:00: {lines:,} requests in {objects:,} objects "
        f"(written in {time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    save_copy(endpoint, queries, localstack)
    time_closed(queries, hour, "--from/--to GROUP BY, as written", 1, dict(expected))
    compact(endpoint, hour)
    time_closed(queries, hour, "--from/--to GROUP BY, compacted, fetched from S3", 3, dict(expected))
    if save_copy(endpoint, queries, localstack):
        time_closed(queries, hour, "--from/--to GROUP BY, compacted, from the saved copy", 3, dict(expected))


def save_copy(endpoint: str, queries: Queries, localstack: localstack_host.LocalStack) -> bool:
    """What the stack's watcher does within seconds of a write: the saved-logs copy made
    whole (bucket_mirror.py sync); whether the query tool reads one."""
    if queries.saved_logs is None:
        return False
    mirror = [sys.executable, str(ROOT / "init" / "bucket_mirror.py"), "--endpoint-url", endpoint]
    mirror += ["--data-dir", str(localstack.data_dir), "--state-dir", str(localstack.state_dir)]
    started = time.perf_counter()
    synced = subprocess.run([*mirror, "sync", "--timeout", "900"], capture_output=True, text=True, check=False)
    outcome = "saved" if synced.returncode == 0 else synced.stderr.strip()[-300:]
    print(f"  saved-logs copy: {outcome} ({time.perf_counter() - started:.0f} s)", flush=True)
    return synced.returncode == 0


def rates(args: argparse.Namespace) -> int:
    """Objects and invocations an hour at each rate, one rig, one rate after the other."""
    values = [float(x) for x in args.rates.split(",")]
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory() as tmp, rig(Path(tmp)) as (localstack, bench):
        s3 = boto3.client("s3", endpoint_url=localstack.endpoint, region_name="us-east-1")
        rows = []
        for rate in values:
            run = f"rate{rate:g}-{int(time.time())}"
            watch, sent = Watch(run), {}
            invocations_before = len(localstack.invocations(FUNCTION))
            with poller(s3, watch, args.poll):
                began = time.time()
                if rate > 0:
                    traffic(bench.nginx.port, rate, seconds, run, sent).join()
                else:
                    time.sleep(seconds)
                ended = time.time()
                settle(watch, sent, 30)
            objects = [k for k, t in watch.raw_seen_at.items() if began <= t <= ended + 5]
            invocations = len(localstack.invocations(FUNCTION)) - invocations_before
            lines = sum(watch.raw[k][1] for k in objects)
            size = sum(watch.raw[k][0] for k in objects)
            hours = (ended - began) / 3600
            latencies = [watch.first_seen[p] - t for p, t in sent.items() if p in watch.first_seen]
            row = (
                f"{rate:5g} req/s for {args.minutes:g} min: objects {len(objects)} ({len(objects) / hours:,.0f} per "
                f"hour), invocations {invocations} ({invocations / hours:,.0f} per hour), lines {lines} "
                f"({size / max(lines, 1):.0f} bytes a line), lost {len(sent) - len(latencies)}, request->S3 p50 "
                f"{percentile(latencies, 50):.2f} s, p99 {percentile(latencies, 99):.2f} s; load {load_average()}"
            )
            rows.append(row)
            print(row, flush=True)
    return 0


def main() -> int:
    global QUERY, COMPACTOR
    # another checkout's query tools (a branch under work), read before the defaults below
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--query-dir", type=Path, default=ROOT / "query")
    query_dir = early.parse_known_args()[0].query_dir.resolve()
    QUERY, COMPACTOR = query_dir / "logs_query.py", query_dir / "compact_hours.py"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--query-dir", type=Path, default=ROOT / "query", help="logs_query.py and compact_hours.py from here"
    )
    parser.add_argument("--rate", type=float, default=200, help="requests per second (default 200)")
    parser.add_argument("--minutes", type=float, default=60, help="how long to send (default 60)")
    parser.add_argument(
        "--paths",
        type=int,
        default=40,
        help="distinct request paths, each request's number in its query string (default 40, a site's "
        "tens); 0: each request on its own path, the summary's worst case",
    )
    parser.add_argument("--sample-every", type=float, default=30, help="seconds between samples (default 30)")
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between the poller's lists (default 0.25)")
    follow = COMPACTOR.exists() and accepts(COMPACTOR, "--follow")
    parser.add_argument(
        "--compactor",
        action=argparse.BooleanOptionalAction,
        default=follow,
        help=f"run compact_hours.py --follow beside it (default: {'on' if follow else 'off, no --follow yet'})",
    )
    answers = accepts(QUERY.with_name("dashboard.py"), "--query-socket")
    parser.add_argument(
        "--dashboard",
        action=argparse.BooleanOptionalAction,
        default=answers,
        help="run dashboard.py beside it, the query tool asking it first, as ./start.sh query does "
        f"(default: {'on' if answers else 'off, no --query-socket yet'})",
    )
    parser.add_argument(
        "--exact", action=argparse.BooleanOptionalAction, default=True, help="the 5-minute exact check (default on)"
    )
    parser.add_argument(
        "--closed-hour",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="then write, compact and query a past hour (default on)",
    )
    parser.add_argument("--rates", help="comma-separated rates: objects an hour at each, nothing else")
    args = parser.parse_args()
    if args.compactor and not follow:
        parser.error("query/compact_hours.py has no --follow yet")
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        parser.error("nginx is not installed (apt-get install nginx)")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {load_average()}",
        flush=True,
    )
    print("settings: " + ", ".join(f"{k} {v}" for k, v in pipeline_bench.stack_settings().items()), flush=True)
    return rates(args) if args.rates else live(args)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
