"""Restore benchmark: how long the ready.d hook takes to put a saved day back into LocalStack's S3.

    python3 bench/restore_bench.py                            # both scenarios, 200 req/s
    python3 bench/restore_bench.py --scenario raw --hours 1   # a smaller slice
    python3 bench/restore_bench.py --scenario compacted --compaction none   # ~7 GB of merged hours
    python3 bench/restore_bench.py --keep --workdir /tmp/rb   # keep the saved files afterwards
    python3 bench/restore_bench.py --scenario watch           # the watcher beside a bulk put, a merge

The saved folder is written as the mirror keeps it (`<data-dir>/<bucket>/<key>`, the
object's bytes), then `init/bucket_mirror.py restore` runs with LocalStack's own Python
(it has boto3, as in the image) against the real LocalStack 4.14.0 host process
(tests/support/localstack_host.py), and is timed. Afterwards: the bucket holds as many
objects as the folder has files, and a sample of objects has the files' bytes.

Scenarios, for a day at `--rate` req/s (objects as the handler writes them with a 0 s
batching window: `--objects-per-hour`, by default docs/performance.md's 13,944 measured at 200
req/s; each object holds the handler's records of realistic nginx lines):
- compacted: 23 closed hours, each one merged object as query/compact_hours.py names it
  plus its `_compaction.json` manifest naming the ~14,000 objects it replaced, and the
  open hour's objects as the handler wrote them. A merged hour (720,000 lines at 200
  req/s) is one minute of realistic records repeated 60 times, streamed to disk: gzip (the
  compaction's default) as 60 gzip members of that minute, which decompress to the same
  lines and are as large as one member of the hour would be (gzip's window is 32 KiB).
- raw: nobody compacts. `--hours` hours of objects are restored and the day extrapolated
  linearly from them; the restore's progress lines give the rate of each 10,000 objects,
  to see whether it slows down as the bucket fills.
- watch: the other direction. With LocalStack running and `bucket_mirror.py watch` beside
  it, one raw hour is put at once (`bucket_mirror.py restore` into the running bucket) and
  then merged (query/compact_hours.py); `bucket_mirror.py sync` times how long the saved
  copy lags behind each, and the copy is compared with the bucket at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bench_env

ROOT = bench_env.prepare("init", "query", "bench", "tests")

import boto3  # noqa: E402
import bucket_mirror  # noqa: E402
import bucket_reader  # noqa: E402
import compact_hours  # noqa: E402
import pipeline_target  # noqa: E402
from bucket_reader import MANIFEST_NAME  # noqa: E402
from kinesis_event_to_s3 import S3Object, line_to_json, object_key  # noqa: E402
from query_bench import nginx_line  # noqa: E402
from support import localstack_host  # noqa: E402

BUCKET = pipeline_target.DEFAULTS["bucket"][1]
SHARD = "shardId-000000000000"
DAY = datetime(2026, 11, 26, tzinfo=UTC)
OBJECTS_PER_HOUR = 13_944  # docs/performance.md: 200 req/s for 5 minutes on LocalStack
FIRST_SEQUENCE = 49_658_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000  # 56 digits
ARRIVAL_DELAY = timedelta(milliseconds=300)  # docs/performance.md's p50 from nginx to the batch
SAMPLE = 40  # objects compared byte for byte after a restore
MIRROR = ROOT / "init" / "bucket_mirror.py"


def load_average() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


# --- the saved folder -------------------------------------------------------------------


@dataclass
class Saved:
    """What was written to the saved folder."""

    objects: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def add(self, path: Path, body: bytes | None = None) -> None:
        self.objects += 1
        self.bytes += len(body) if body is not None else path.stat().st_size


def records(rng: random.Random, start: datetime, count: int, rate: int) -> list[str]:
    """`count` handler records of realistic lines, the n-th at `start + n / rate` s."""
    lines = []
    for n in range(count):
        parsed = line_to_json(nginx_line(rng, start + timedelta(seconds=n / rate)))
        if parsed is None:
            raise SystemExit("the handler did not parse a generated line: query_bench.nginx_line changed?")
        lines.append(parsed[1])
    return lines


def batches(hour: datetime, rate: int, per_hour: int) -> Iterator[tuple[str, int, int]]:
    """(key, first line, end line) of each of the hour's objects, as the handler names them:
    the hour's lines split evenly, one Kinesis record (one flush) per object."""
    total = rate * 3600
    hour_index = int((hour - DAY) / timedelta(hours=1))
    for n in range(per_hour):
        first, end = n * total // per_hour, (n + 1) * total // per_hour
        arrival = hour + timedelta(seconds=first / rate) + ARRIVAL_DELAY
        sequence = FIRST_SEQUENCE + (hour_index * per_hour + n) * 1_000_003
        yield object_key(f"{hour:%Y/%m/%d/%H}", arrival, SHARD, str(sequence), ""), first, end


def write_file(folder: Path, key: str, body: bytes) -> Path:
    path = folder / BUCKET / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


def write_raw_hour(folder: Path, rng: random.Random, hour: datetime, rate: int, per_hour: int, saved: Saved) -> None:
    """The hour's objects with the bytes the handler writes (COMPRESSION none, the default)."""
    for key, first, end in batches(hour, rate, per_hour):
        body = S3Object(key, records(rng, hour + timedelta(seconds=first / rate), end - first, rate)).body("")
        saved.add(write_file(folder, key, body), body)


def merged_key(prefix: str, sha256_hex: str, compression: str) -> str:
    """compact_hours.compacted_key without holding the hour's bytes: same name, checked in main()."""
    extension = ".json.gz" if compression == "gzip" else ".json"
    return f"{prefix}nginx_access_log{compact_hours.COMPACTED_MARK}{sha256_hex[:16]}{extension}"


def write_compacted_hour(
    folder: Path, rng: random.Random, hour: datetime, rate: int, per_hour: int, compression: str, saved: Saved
) -> None:
    """The merged object and manifest compact_hours.py leaves for the hour: its lines (one
    realistic minute, 60 times) streamed to disk, named by the hash of the plain lines."""
    prefix = f"{hour:%Y/%m/%d/%H}/"
    minute = ("\n".join(records(rng, hour, rate * 60, rate)) + "\n").encode()
    block = gzip.compress(minute, mtime=0) if compression == "gzip" else minute
    digest = hashlib.sha256()
    staging = folder / BUCKET / prefix / ".merging"
    staging.parent.mkdir(parents=True, exist_ok=True)
    with staging.open("wb") as out:
        for _ in range(60):
            digest.update(minute)
            out.write(block)
    key = merged_key(prefix, digest.hexdigest(), compression)
    merged = folder / BUCKET / key
    staging.rename(merged)
    saved.add(merged)
    sources = sorted(key for key, _, _ in batches(hour, rate, per_hour))
    manifest = json.dumps({"object": key, "sources": sources}, indent=0).encode()
    saved.add(write_file(folder, prefix + MANIFEST_NAME, manifest), manifest)


def write_day(scenario: str, folder: Path, rate: int, per_hour: int, hours: int, compression: str) -> Saved:
    """compacted: 23 merged hours + the open hour's objects; raw: `hours` hours of objects."""
    rng = random.Random(12)
    saved = Saved()
    started = time.perf_counter()
    if scenario == "compacted":
        for h in range(23):
            write_compacted_hour(folder, rng, DAY + timedelta(hours=h), rate, per_hour, compression, saved)
        write_raw_hour(folder, rng, DAY + timedelta(hours=23), rate, per_hour, saved)
    else:
        for h in range(hours):
            write_raw_hour(folder, rng, DAY + timedelta(hours=h), rate, per_hour, saved)
    saved.seconds = time.perf_counter() - started
    return saved


# --- the restore ------------------------------------------------------------------------

COUNT = re.compile(r"(\d[\d,]*)\s*(?:/|of)\s*(\d[\d,]*)|(\d[\d,]*)\s+objects?")


@dataclass
class Restore:
    seconds: float
    returncode: int
    output: list[tuple[float, str]]  # (seconds since start, line)
    progress: list[tuple[float, int]] = field(default_factory=list)  # (seconds, objects restored)
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    rss_peak_kib: int = 0
    temp_files_bytes: int = 0
    load: str = ""
    restore_peak_kib: int = 0  # the restore process's own peak RSS


def rss_kib(pid: int) -> int:
    result = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, check=False)
    return int(result.stdout.strip() or 0)


def deleted_files_bytes(pid: int) -> int:
    """Bytes in the unlinked temporary files `pid` holds open: LocalStack's S3 keeps objects
    above 512 KiB in such files, smaller ones in its memory."""
    total = 0
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir() if fds.exists() else ():
        with contextlib.suppress(OSError):
            if fd.readlink().name.endswith("(deleted)"):
                total += fd.stat().st_size
    return total


def progress_counts(output: list[tuple[float, str]]) -> list[tuple[float, int]]:
    """(seconds, objects restored) from progress lines such as "restored 10000 of 27888"
    or "10000 objects"."""
    points = []
    for at, line in output:
        match = COUNT.search(line)
        if match:
            points.append((at, int((match.group(1) or match.group(3)).replace(",", ""))))
    return points


def mirror_command(python: Path, mirror: Path, endpoint: str, data_dir: Path, *args: str) -> list[str]:
    """bucket_mirror.py run as the hooks run it, on the bench's bucket and folder."""
    return [
        str(python),
        str(mirror),
        "--endpoint-url",
        endpoint,
        "--bucket",
        BUCKET,
        "--data-dir",
        str(data_dir),
        *args,
    ]


def run_restore(python: Path, mirror: Path, endpoint: str, data_dir: Path, pid: int) -> Restore:
    """Run the mirror's restore as the hook does, timestamping each line it prints."""
    command = mirror_command(python, mirror, endpoint, data_dir, "restore")
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    output: list[tuple[float, str]] = []
    peak = [rss_kib(pid)]
    done = threading.Event()

    def watch_memory() -> None:
        while not done.wait(1):
            peak[0] = max(peak[0], rss_kib(pid))

    before = peak[0]
    watcher = threading.Thread(target=watch_memory, daemon=True)
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment, cwd=ROOT
    )
    watcher.start()
    if process.stdout is not None:
        with process.stdout:
            for line in process.stdout:
                output.append((time.perf_counter() - started, line.rstrip("\n")))
    _, status, usage = os.wait4(process.pid, 0)  # its own peak memory, which Popen.wait() does not give
    process.returncode = returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    done.set()
    watcher.join()
    after = rss_kib(pid)
    return Restore(
        seconds,
        returncode,
        output,
        progress_counts(output),
        before,
        after,
        max(peak[0], after),
        deleted_files_bytes(pid),
        load_average(),
        usage.ru_maxrss,
    )


def verify(s3, data_dir: Path) -> str:
    """Same number of objects as files; a sample (the largest files among them) has the same bytes."""
    files = sorted(p for p in (data_dir / BUCKET).rglob("*") if p.is_file())
    listed = sum(
        len(page.get("Contents", []))
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, PaginationConfig={"PageSize": 1000})
    )
    if listed != len(files):
        return f"FAILED: {listed} objects in the bucket, {len(files)} files"
    largest = sorted(files, key=lambda p: p.stat().st_size)[-5:]
    sample = set(random.Random(3).sample(files, min(SAMPLE, len(files)))) | set(largest)
    for path in sorted(sample):
        key = path.relative_to(data_dir / BUCKET).as_posix()
        if s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() != path.read_bytes():
            return f"FAILED: s3://{BUCKET}/{key} differs from {path}"
    return f"ok ({listed:,} objects = files; {len(sample)} sampled objects byte-identical, the 5 largest among them)"


# --- the report -------------------------------------------------------------------------


def row(name: str, objects: int, size: int, seconds: float) -> str:
    seconds = max(seconds, 1e-9)
    return (
        f"{name:<28} {objects:>9,} {size / 1e6:>10,.1f} {seconds:>9.1f} "
        f"{objects / seconds:>10,.0f} {size / 1e6 / seconds:>8.1f}"
    )


HEADER = f"{'':<28} {'objects':>9} {'MB':>10} {'seconds':>9} {'objects/s':>10} {'MB/s':>8}"


def per_10000(progress: list[tuple[float, int]]) -> list[str]:
    """Rate of each successive 10,000 objects (and of the rest) from the progress points."""
    rows, mark, last = [], 10_000, (0.0, 0)
    for n, (at, count) in enumerate(progress):
        if count >= mark or (n == len(progress) - 1 and count > last[1]):
            rate = (count - last[1]) / (at - last[0]) if at > last[0] else float("nan")
            rows.append(f"  objects {last[1]:>7,}-{count:>7,}: {rate:7,.0f} objects/s (at {at:6.1f} s)")
            last, mark = (at, count), (count // 10_000 + 1) * 10_000
    return rows


def measure(scenario: str, args, interpreters: localstack_host.Interpreters, workdir: Path) -> list[str]:
    """Write the scenario's saved folder, restore it into a fresh LocalStack; report lines."""
    data_dir = workdir / f"saved-{scenario}"
    shutil.rmtree(data_dir, ignore_errors=True)
    saved = write_day(scenario, data_dir, args.rate, args.objects_per_hour, args.hours, args.compaction)
    print(
        f"{scenario}: wrote {saved.objects:,} files, {saved.bytes / 1e6:,.1f} MB in {saved.seconds:.0f} s "
        f"under {data_dir}; load average {load_average()}",
        flush=True,
    )
    lines: list[str] = []
    try:
        with localstack_host.running(interpreters, workdir / f"localstack-{scenario}", provision_hook=False) as ls:
            s3 = boto3.client("s3", endpoint_url=ls.endpoint, region_name=localstack_host.REGION)
            s3.list_buckets()  # LocalStack loads S3 at its first request: RSS "before" includes it
            pid = ls.process.pid if ls.process is not None else 0
            restore = run_restore(interpreters.localstack, args.mirror, ls.endpoint, data_dir, pid)
            for at, line in restore.output[-5:]:
                print(f"  restore [{at:6.1f} s] {line}", flush=True)
            if restore.returncode != 0:
                raise SystemExit(f"restore exited {restore.returncode}")
            check = verify(s3, data_dir)
        name = "compacted day" if scenario == "compacted" else f"raw, {args.hours} h slice"
        lines.append(row(name, saved.objects, saved.bytes, restore.seconds))
        if scenario == "raw":
            factor = 24 / args.hours
            lines.append(
                row(
                    "raw day (extrapolated)",
                    round(saved.objects * factor),
                    round(saved.bytes * factor),
                    restore.seconds * factor,
                )
            )
        lines.append(
            f"  LocalStack RSS {restore.rss_before_kib / 1024:,.0f} MiB before, "
            f"{restore.rss_after_kib / 1024:,.0f} MiB after (peak {restore.rss_peak_kib / 1024:,.0f} MiB); "
            f"unlinked temp files it holds {restore.temp_files_bytes / 1e6:,.1f} MB; the restore's own peak RSS "
            f"{restore.restore_peak_kib / 1024:,.0f} MiB; load average after {restore.load}"
        )
        lines.append(f"  check: {check}")
        rates = per_10000(restore.progress)
        if scenario == "raw":
            lines.extend(rates or ["  (the restore printed no progress counts: no rates per 10,000 objects)"])
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return lines


def timed_sync(command: list[str], environment: dict[str, str]) -> float:
    """Seconds until `bucket_mirror.py sync` says every object now in the bucket is saved."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=ROOT, check=False)
    if result.returncode != 0:
        raise SystemExit(f"sync exited {result.returncode}: {(result.stderr or result.stdout).strip()}")
    return time.perf_counter() - started


def measure_watch(args, interpreters: localstack_host.Interpreters, workdir: Path) -> list[str]:
    """The watcher beside a bulk change: an hour's objects put at once (a restore into a
    running stack, a user's upload), then the hour merged by compact_hours.py (its parts,
    its manifest, and a delete for each object it replaced): how long until the saved copy
    holds each, timed with `bucket_mirror.py sync` (the stack's own waiter)."""
    data_dir, copy_dir, state = workdir / "saved-watch", workdir / "copy-watch", workdir / "state-watch"
    for folder in (data_dir, copy_dir, state):
        shutil.rmtree(folder, ignore_errors=True)
    state.mkdir(parents=True)
    saved = write_day("raw", data_dir, args.rate, args.objects_per_hour, 1, args.compaction)
    print(f"watch: wrote {saved.objects:,} files, {saved.bytes / 1e6:,.1f} MB under {data_dir}", flush=True)
    python = interpreters.localstack
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "PIPELINE_STATE_DIR": str(state)}
    lines: list[str] = []
    try:
        with localstack_host.running(interpreters, workdir / "localstack-watch", provision_hook=False) as ls:
            s3 = bucket_reader.s3_client(ls.endpoint, localstack_host.REGION, 16)
            s3.create_bucket(Bucket=BUCKET)
            with (workdir / "watcher.log").open("w") as log:
                watcher = subprocess.Popen(
                    mirror_command(python, args.mirror, ls.endpoint, copy_dir, "watch"),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=environment,
                    cwd=ROOT,
                )
            try:
                (state / "mirror.pid").write_text(str(watcher.pid))
                deadline = time.monotonic() + 60
                while "watching s3://" not in (workdir / "watcher.log").read_text():
                    if watcher.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"the watcher did not start: {(workdir / 'watcher.log').read_text()}")
                    time.sleep(0.1)
                sync = mirror_command(python, args.mirror, ls.endpoint, copy_dir, "sync", "--timeout", "1800")
                pid = ls.process.pid if ls.process is not None else 0
                put = run_restore(python, args.mirror, ls.endpoint, data_dir, pid)
                if put.returncode != 0:
                    raise SystemExit(f"the put (bucket_mirror.py restore) exited {put.returncode}")
                caught_up = timed_sync(sync, environment)
                total = put.seconds + caught_up
                lines.append(
                    f"an hour put at once: {saved.objects:,} objects ({saved.bytes / 1e6:,.1f} MB) in "
                    f"{put.seconds:.1f} s; saved {caught_up:.1f} s after the last put "
                    f"({saved.objects / total:,.0f} objects/s in all)"
                )
                started = time.perf_counter()
                prefix = f"{DAY:%Y/%m/%d/%H}/"
                outcome = compact_hours.compact_hour(bucket_reader.Bucket(s3, BUCKET), prefix, args.compaction or "")
                merged = time.perf_counter() - started
                caught_up = timed_sync(sync, environment)
                events = outcome.deleted + len(bucket_reader.Bucket(s3, BUCKET).list(prefix))
                lines.append(
                    f"the hour merged: compact_hours {merged:.1f} s ({outcome.deleted:,} objects deleted, "
                    f"~{events:,} events); saved {caught_up:.1f} s after the merge's last delete"
                )
                watcher_rss = rss_kib(watcher.pid)
            finally:
                watcher.terminate()
                watcher.wait(timeout=30)
            listed = bucket_mirror.bucket_objects(s3, BUCKET) or {}
            in_bucket = {key: size for key, size in listed.items() if not key.startswith(bucket_mirror.CONTROL_PREFIX)}
        in_copy = {
            path.relative_to(copy_dir / BUCKET).as_posix(): path.stat().st_size
            for path in (copy_dir / BUCKET).rglob("*")
            if path.is_file()
        }
        same = "the copy is the bucket" if in_copy == in_bucket else "FAILED: the copy differs from the bucket"
        lines.append(
            f"  check: {same} ({len(in_bucket):,} objects in the bucket, {len(in_copy):,} files); the watcher's RSS "
            f"{watcher_rss / 1024:,.0f} MiB; load average {load_average()}"
        )
    finally:
        if not args.keep:
            for folder in (data_dir, copy_dir):
                shutil.rmtree(folder, ignore_errors=True)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["compacted", "raw", "both", "watch"], default="both")
    parser.add_argument("--hours", type=int, default=2, help="raw: hours restored, the day extrapolated (default 2)")
    parser.add_argument("--rate", type=int, default=200, help="requests a second (default 200)")
    parser.add_argument(
        "--objects-per-hour",
        type=int,
        default=OBJECTS_PER_HOUR,
        help=f"handler objects an hour (default {OBJECTS_PER_HOUR:,})",
    )
    parser.add_argument(
        "--compaction",
        choices=["gzip", "none"],
        default="gzip",
        help="merged hours' compression (default gzip, as compact_hours.py)",
    )
    parser.add_argument("--mirror", type=Path, default=MIRROR, help="the bucket_mirror.py to time (default: init's)")
    parser.add_argument("--keep", action="store_true", help="keep the saved folders")
    parser.add_argument("--workdir", type=Path, help="where the saved folders and LocalStack go (default: a temp dir)")
    args = parser.parse_args()
    if not 1 <= args.hours <= 24:
        parser.error("--hours: 1 to 24")
    compression = "" if args.compaction == "none" else args.compaction
    args.compaction = compression
    sample = b'{"a":1}\n'
    ours = merged_key("x/", hashlib.sha256(sample).hexdigest(), compression)
    if ours != compact_hours.compacted_key("x/", sample, compression):
        raise SystemExit("compact_hours.compacted_key changed: update merged_key")
    if not args.mirror.exists():
        raise SystemExit(f"{args.mirror} not found (the mirror is written on main)")
    interpreters = localstack_host.install()
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"restore with {interpreters.localstack}; load average {load_average()}",
        flush=True,
    )
    span = "an hour" if args.scenario == "watch" else "a day"
    print(f"{span} at {args.rate} req/s, {args.objects_per_hour:,} handler objects an hour", flush=True)
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="restore-bench-")))
        else:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        report = [HEADER]
        if args.scenario == "watch":
            report = measure_watch(args, interpreters, workdir)
        for scenario in {"both": ("compacted", "raw"), "watch": ()}.get(args.scenario, (args.scenario,)):
            report += measure(scenario, args, interpreters, workdir)
    print("\n".join(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
