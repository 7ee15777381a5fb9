"""End-to-end benchmark without Docker: requests to a real nginx until their lines are in S3.

    python3 bench/pipeline_bench.py                      # 200 req/s for 60 s
    python3 bench/pipeline_bench.py --rate 500 --seconds 30
    python3 bench/pipeline_bench.py --ceiling            # also find the highest clean rate
    python3 bench/pipeline_bench.py --rig localstack     # one rig only (default: both)
    python3 bench/pipeline_bench.py --rig localstack --rate 100 --seconds 600
    python3 bench/pipeline_bench.py --baseline           # the settings before the speed work

Settings are the stack's: fluent.conf's output type and flush timers (the fluentd
stand-in reads them), init_resource.py's mapping, docker-compose.yml's LocalStack poll
interval, one shard. `--baseline` runs the earlier ones instead: `kinesis_streams` (one
Kinesis record per line), flush_interval 1 with fluentd's default 1 s flush thread, a 1 s
batching window and LocalStack's default 1 s poll. `--output` and `--shards` change one
thing at a time.

Two rigs, run one after the other with the same load:
- moto: Debian's nginx running the project's config, moto server (its own process) as
  Kinesis/S3/IAM/Lambda, init/init_resource.py provisioning it, the handler loaded from
  its deployment package, and the test stand-ins for fluentd (fluent.conf's output and
  timers) and the event source mapping (the provisioned window, the stack's poll interval).
- localstack: the same nginx, provisioning and fluentd stand-in, with the real LocalStack
  4.14.0 as a host process (tests/support/localstack_host.py): its Kinesis (kinesis-mock),
  its event source mapping, the handler run by its Lambda (host executor), its S3. Needs
  Python 3.13 and 3.12 and Node.js; the first run installs it into .cache/ (~1.5 min).
An open-loop async client sends R unique requests a second; a poller lists the bucket
every 100 ms and notes when each request's line first appears in a listable object.
Printed per minute of sending (requests sent in that minute): p50/p99/max latency, lost,
PutRecords calls and their p50 duration, Kinesis records stored so far, load average;
then the totals, invocations and objects per hour.
Targets: 100 req/s: p50 <= 0.5 s, p99 <= 1.5 s, in every minute; 200 req/s:
0 lost, 0 duplicated, p99 <= 3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import bench_env

ROOT = bench_env.prepare("init", "tests", "query")

import boto3  # noqa: E402
import init_resource  # noqa: E402
import pipeline_target  # noqa: E402
from bucket_reader import function_object  # noqa: E402
from support import localstack_host  # noqa: E402
from support.event_source_mapping import EventSourceMapping, load_deployed_handler  # noqa: E402
from support.net import free_port  # noqa: E402
from support.nginx import Nginx  # noqa: E402
from support.shipper import Shipper  # noqa: E402

POLL_SETTING = "LAMBDA_EVENT_SOURCE_MAPPING_POLL_INTERVAL_SEC"
BASELINE = {
    "output": "kinesis_streams",
    "flush_interval": 1.0,
    "flush_thread_interval": 1.0,
    "window": 1,
    "poll_interval": "1",
}

BUCKET, STREAM, FUNCTION = (pipeline_target.DEFAULTS[name][1] for name in ("bucket", "stream", "function"))
RIGS = {
    "moto": "moto server + the event source mapping stand-in, handler in this process",
    "localstack": "LocalStack 4.14.0 host process: kinesis-mock, its mapping, its Lambda (host executor), its S3",
}


@contextlib.contextmanager
def moto_process():
    """moto server in its own process, so it does not share this one's interpreter lock."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)  # noqa: S310 - loopback
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class Seen:
    """What the bucket holds: per key its ETag and request URIs; first sighting per URI."""

    keys: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    first_seen: dict[str, float] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, uris in self.keys.values():
            for uri in uris:
                counts[uri] = counts.get(uri, 0) + 1
        return counts


def poll_bucket(s3, seen: Seen, stop: threading.Event, interval: float = 0.1) -> None:
    # only the function's objects: the compactor's manifest and merged parts (the stack's
    # compactor service) hold lines of the objects they replace
    while not stop.is_set():
        paginator = s3.get_paginator("list_objects_v2")
        now = time.time()
        for page in paginator.paginate(Bucket=BUCKET):
            for item in page.get("Contents", []):
                key, etag = item["Key"], item["ETag"]
                if key.startswith("errors/") or not function_object(key) or seen.keys.get(key, ("",))[0] == etag:
                    continue
                body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                uris = [json.loads(line)["request_uri"] for line in body.splitlines()]
                seen.keys[key] = (etag, uris)
                for uri in uris:
                    seen.first_seen.setdefault(uri, now)
        stop.wait(interval)


async def send_load(
    port: int, rate: float, seconds: float, run: str, sent: dict[str, float] | None = None, paths: int = 0
) -> dict[str, float]:
    """Open loop: request n leaves at start + n/rate whatever happened to the others.
    `sent` (request URI -> wall-clock send time) fills as they leave, for a reader meanwhile.
    Each URI is unique: its own path, or with `paths` one of that many paths and n in the
    query string (a site's traffic: what the summary groups is the path)."""
    sent = {} if sent is None else sent
    start = time.monotonic()
    total = int(rate * seconds)
    failures = 0

    async def one(n: int) -> None:
        nonlocal failures
        path = f"/bench/{run}/{n % paths}?n={n}" if paths else f"/bench/{run}/{n}"
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            sent[path] = time.time()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            await reader.read()
            writer.close()
        except OSError:
            failures += 1

    tasks = []
    for n in range(total):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    if failures:
        print(f"  {failures} request(s) could not connect", flush=True)
    return sent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] if ordered else float("nan")


@dataclass
class Result:
    rate: float
    seconds: float
    sent: int
    landed: int
    lost: int
    duplicated: int
    p50: float
    p95: float
    p99: float
    throughput: float
    latency_max: float = float("nan")
    minutes: list[tuple[float, float, str]] = field(default_factory=list)
    invocations: int = 0
    objects: int = 0
    put_calls: int = 0
    stored_records: int = 0
    load: str = ""

    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.p99 <= 5.0

    def report(self) -> str:
        return (
            f"rate {self.rate:g} req/s for {self.seconds:g} s: sent {self.sent}, lines in S3 {self.landed}, "
            f"lost {self.lost}, duplicated {self.duplicated}, latency p50 {self.p50:.2f} s, "
            f"p95 {self.p95:.2f} s, p99 {self.p99:.2f} s, max {self.latency_max:.2f} s, "
            f"throughput {self.throughput:.0f} lines/s"
        )

    def costs(self) -> str:
        hours = self.seconds / 3600
        return (
            f"  costs over the {self.seconds:g} s of sending: PutRecords {self.put_calls} "
            f"({self.put_calls / self.seconds:.1f}/s), Kinesis records stored {self.stored_records} "
            f"({self.stored_records / self.seconds:.1f}/s), invocations {self.invocations} "
            f"({self.invocations / self.seconds:.1f}/s), objects {self.objects} "
            f"({self.objects / hours:,.0f} per hour); load average at the end {self.load}"
        )


def load_average() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def cpu_ticks(stat: str | None = None) -> tuple[int, int] | None:
    """(stolen, all) clock ticks of every CPU since boot, from /proc/stat's first line (Linux);
    None where there is none. Stolen: time the hypervisor ran others on this VM's CPUs."""
    try:
        if stat is None:
            with Path("/proc/stat").open() as f:
                stat = f.readline()
        fields = [int(x) for x in stat.split()[1:9]]  # user .. steal; guest time is in user's
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) == 8 else 0), sum(fields)


def stolen(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The % of the machine's CPU time stolen between two cpu_ticks() readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return 100 * (after[0] - before[0]) / (after[1] - before[1])


def minute_rows(
    sent: dict[str, float],
    first_seen: dict[str, float],
    puts: list[tuple[float, float]],
    loads: list[str],
    start: float,
    seconds: float,
    width: float = 60,
) -> list[tuple[float, float, str]]:
    """(p50, p99, row) per minute of sending (per `width` seconds): that window's requests'
    latencies and its puts."""
    rows = []
    minutes = max(1, math.ceil(seconds / width))
    for m in range(minutes):
        low, high = start + width * m, start + width * (m + 1)
        if m == minutes - 1:  # the last requests may leave a moment after the last minute
            high = math.inf
        paths = [p for p, t in sent.items() if low <= t < high]
        latencies = [first_seen[p] - sent[p] for p in paths if p in first_seen]
        in_minute = [d for end, d in puts if low <= end < high]
        stored = sum(1 for end, _ in puts if end < min(high, start + seconds))
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        if len(latencies) < len(paths):  # a lost line counts as too late
            p99 = float("inf")
        rows.append(
            (
                p50,
                p99,
                f"  {_window(m, width)}: sent {len(paths)}, p50 {p50:.2f} s, "
                f"p99 {percentile(latencies, 99):.2f} s, max {max(latencies, default=float('nan')):.2f} s, "
                f"lost {len(paths) - len(latencies)}, PutRecords {len(in_minute)} (p50 "
                f"{percentile(in_minute, 50):.3f} s, max {max(in_minute, default=float('nan')):.3f} s), "
                f"puts so far {stored}, load {loads[m] if m < len(loads) else load_average()}",
            )
        )
    return rows


def _window(m: int, width: float) -> str:
    if width == 60:
        return f"minute {m + 1:2d}"
    return f"minutes {m * width / 60:4.1f}-{(m + 1) * width / 60:4.1f}"


class Bench:
    """One pipeline, reused across runs (each run's requests have their own paths). With
    `stand_in_mapping`, the handler runs here through the mapping stand-in (moto cannot
    invoke); without, the emulator's own mapping and Lambda run it (LocalStack)."""

    def __init__(
        self,
        workdir: Path,
        endpoint: str,
        stand_in_mapping: bool = True,
        settings: dict | None = None,
        shards: int = 1,
        localstack: localstack_host.LocalStack | None = None,
        provision: bool = True,
        poll: bool = True,
    ) -> None:
        """`provision` False: the project's ready.d hook provisioned it already; `poll`
        False: the caller watches the bucket its own way."""
        settings = settings or {}
        nginx_binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.nginx = Nginx(nginx_binary, workdir / "nginx")
        self.localstack = localstack
        mapping_settings = dict(init_resource.MAPPING)
        if "window" in settings:
            init_resource.MAPPING["MaximumBatchingWindowInSeconds"] = settings["window"]
        try:
            with contextlib.redirect_stdout(sys.stderr):
                args = ["--endpoint-url", endpoint, "--wait-timeout", "30", "--shards", str(shards)]
                if provision and init_resource.main(args) != 0:
                    raise RuntimeError("provisioning failed")
        finally:
            init_resource.MAPPING.clear()
            init_resource.MAPPING.update(mapping_settings)
        clients = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        self.s3 = boto3.client("s3", **clients)
        names = ("output", "flush_interval", "flush_thread_interval")
        shipper_options = {k: settings[k] for k in names if k in settings}
        self.shipper = Shipper(
            boto3.client("kinesis", **clients), STREAM, self.nginx.access_log, workdir / "pos", **shipper_options
        ).start()
        self.mapping: EventSourceMapping | None = None
        if stand_in_mapping:
            lam = boto3.client("lambda", **clients)
            config = lam.get_function_configuration(FunctionName=FUNCTION)
            environment = {**config["Environment"]["Variables"], "AWS_ENDPOINT_URL": endpoint}
            module = load_deployed_handler(init_resource.function_zip(), environment, workdir)
            module.log = lambda *args, **kwargs: None
            (mapping,) = lam.list_event_source_mappings(FunctionName=FUNCTION)["EventSourceMappings"]
            poll = float(settings.get("poll_interval", localstack_host.stack_tuning()[POLL_SETTING]))
            self.mapping = EventSourceMapping(endpoint, mapping["UUID"], module.handler, poll_interval=poll).start()
        self.seen = Seen()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=poll_bucket, args=(self.s3, self.seen, self._stop), daemon=True)
        if poll:
            self._poller.start()

    def invocations(self) -> int:
        if self.mapping is not None:
            return len(self.mapping.invocations)
        return len(self.localstack.invocations(FUNCTION)) if self.localstack is not None else 0

    def run(self, rate: float, seconds: float, drain: float = 30.0) -> Result:
        run = f"r{int(rate)}-{int(time.time())}"
        started = time.time()
        keys_before, invocations_before = set(self.seen.keys), self.invocations()
        puts_before = len(self.shipper.put_timings)
        stored_before = self.shipper.stored_records
        loads: list[str] = []
        sending = threading.Event()

        def sample() -> None:  # the load average at the end of each minute, and progress
            while not sending.wait(60):
                loads.append(load_average())
                landed = sum(1 for p in list(self.seen.first_seen) if p.startswith(f"/bench/{run}/"))
                print(f"  ... {len(loads)} min: {landed} lines in S3, load {loads[-1]}", flush=True)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        sent = asyncio.run(send_load(self.nginx.port, rate, seconds, run))
        sending.set()
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline and not all(path in self.seen.first_seen for path in sent):
            time.sleep(0.2)
        time.sleep(1.5)  # a last look for duplicates
        counts = self.seen.counts()
        ours = {path: counts.get(path, 0) for path in sent}
        latencies = [self.seen.first_seen[p] - t for p, t in sent.items() if p in self.seen.first_seen]
        last = max((self.seen.first_seen[p] for p in sent if p in self.seen.first_seen), default=started)
        landed = sum(1 for c in ours.values() if c)
        objects = [k for k in self.seen.keys if k not in keys_before and not k.startswith("errors/")]
        puts = self.shipper.put_timings[puts_before:]
        return Result(
            rate=rate,
            seconds=seconds,
            sent=len(sent),
            landed=landed,
            lost=sum(1 for c in ours.values() if c == 0),
            duplicated=sum(c - 1 for c in ours.values() if c > 1),
            p50=percentile(latencies, 50),
            p95=percentile(latencies, 95),
            p99=percentile(latencies, 99),
            throughput=landed / max(last - started, 1e-9),
            latency_max=max(latencies, default=float("nan")),
            minutes=minute_rows(sent, self.seen.first_seen, puts, loads, started, seconds),
            invocations=self.invocations() - invocations_before,
            objects=len(objects),
            put_calls=len(puts),
            stored_records=self.shipper.stored_records - stored_before,
            load=load_average(),
        )

    def close(self) -> None:
        self._stop.set()
        self.shipper.stop()
        if self.mapping is not None:
            self.mapping.stop()
        self.nginx.stop()


@contextlib.contextmanager
def emulator(rig: str, workdir: Path, settings: dict, hooks: bool = False):
    """(endpoint, the LocalStack or None) for a fresh emulator of that rig; None means the
    mapping stand-in must run (moto). `hooks`: LocalStack runs the project's ready.d and
    shutdown.d hooks (provisioning, the saved-logs watcher) as the stack does."""
    if rig == "moto":
        with moto_process() as endpoint:
            yield endpoint, None
    else:
        interpreters = localstack_host.install()
        environment = {POLL_SETTING: settings["poll_interval"]} if "poll_interval" in settings else {}
        environment.update(settings.get("localstack_env", {}))
        with localstack_host.running(
            interpreters, workdir / "localstack", provision_hook=hooks, environment=environment
        ) as localstack:
            yield localstack.endpoint, localstack


def measure(
    rate: float, seconds: float, rig: str = "moto", settings: dict | None = None, shards: int = 1, drain: float = 30
) -> Result:
    """One run on a fresh pipeline (new emulator, new log): no backlog from earlier runs."""
    settings = settings or {}
    with tempfile.TemporaryDirectory() as workdir, emulator(rig, Path(workdir), settings) as (endpoint, localstack):
        bench = Bench(
            Path(workdir),
            endpoint,
            stand_in_mapping=localstack is None,
            settings=settings,
            shards=shards,
            localstack=localstack,
        )
        try:
            return bench.run(rate, seconds, drain)
        finally:
            bench.close()


SETTINGS: dict = {}
SHARDS = 1


def find_ceiling(start: float, seconds: float, start_ok: bool, rig: str) -> str:
    """Double the rate until a step fails, then bisect twice between the last two."""
    good, bad = (start, None) if start_ok else (0.0, start)
    rate = start * 2
    while bad is None:
        step = measure(rate, seconds, rig, SETTINGS, SHARDS)
        print(f"  step: {step.report()}", flush=True)
        if step.ok():
            good, rate = rate, rate * 2
        else:
            bad = rate
    for _ in range(2):
        rate = round((good + bad) / 2 / 50) * 50
        if rate in (good, bad):
            break
        step = measure(rate, seconds, rig, SETTINGS, SHARDS)
        print(f"  step: {step.report()}", flush=True)
        good, bad = (rate, bad) if step.ok() else (good, rate)
    return f"{good:g} req/s with 0 lost, 0 duplicated and p99 <= 5 s over {seconds:g} s (fails at {bad:g} req/s)"


def stack_settings() -> dict:
    from support import shipper

    return {
        "output": shipper.OUTPUT,
        "flush_interval": shipper.FLUSH_INTERVAL,
        "flush_thread_interval": shipper.FLUSH_THREAD_INTERVAL,
        "window": init_resource.MAPPING["MaximumBatchingWindowInSeconds"],
        "poll_interval": localstack_host.stack_tuning()[POLL_SETTING],
    }


def targets(result: Result) -> str:
    """The goals: at 100 req/s p50 <= 0.5 s and p99 <= 1.5 s in every minute; at
    200 req/s 0 lost, 0 duplicated, p99 <= 3 s (other rates: the 200 req/s goal)."""
    clean = result.lost == 0 and result.duplicated == 0
    if result.rate <= 100:
        met = clean and all(p50 <= 0.5 and p99 <= 1.5 for p50, p99, _ in result.minutes)
        return f"0 lost, 0 duplicated, p50 <= 0.5 s and p99 <= 1.5 s in every minute: {'met' if met else 'NOT met'}"
    met = clean and result.p99 <= 3
    return f"0 lost, 0 duplicated, p99 <= 3 s: {'met' if met else 'NOT met'}"


def main() -> int:
    parser = argparse.ArgumentParser(description="End-to-end pipeline benchmark (no Docker).")
    parser.add_argument("--rate", type=float, default=200, help="requests per second (default 200)")
    parser.add_argument("--seconds", type=float, default=60, help="how long to send (default 60)")
    parser.add_argument("--ceiling", action="store_true", help="then raise the rate until loss or p99 > 5 s")
    parser.add_argument("--rig", choices=["both", *RIGS], default="both", help="which emulator (default: both)")
    parser.add_argument("--step-seconds", type=float, default=20, help="seconds per ceiling step (default 20)")
    parser.add_argument("--baseline", action="store_true", help="the earlier, slower settings (see above)")
    parser.add_argument("--output", choices=["kinesis_streams", "kinesis_streams_aggregated"], help="fluentd output")
    parser.add_argument("--shards", type=int, default=1, help="Kinesis shards (default 1, the stack's)")
    parser.add_argument(
        "--localstack-env", action="append", default=[], metavar="NAME=VALUE", help="extra LocalStack setting"
    )
    parser.add_argument("--drain", type=float, default=30, help="seconds to wait for the last lines (default 30)")
    args = parser.parse_args()
    global SETTINGS, SHARDS  # the ceiling steps reuse the run's settings
    SETTINGS = dict(BASELINE) if args.baseline else {}
    if args.output:
        SETTINGS["output"] = args.output
    SHARDS = args.shards
    if args.localstack_env:
        SETTINGS["localstack_env"] = dict(item.split("=", 1) for item in args.localstack_env)
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        parser.error("nginx is not installed (apt-get install nginx)")

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}",
        flush=True,
    )
    shown = {**stack_settings(), **SETTINGS, "shards": SHARDS}
    print("settings: " + ", ".join(f"{k} {v}" for k, v in shown.items()), flush=True)
    for rig in RIGS if args.rig == "both" else (args.rig,):
        print(f"rig: {RIGS[rig]}; load average before {load_average()}", flush=True)
        result = measure(args.rate, args.seconds, rig, SETTINGS, SHARDS, args.drain)
        print(result.report(), flush=True)
        print("\n".join(row for _, _, row in result.minutes), flush=True)
        print(result.costs(), flush=True)
        print(f"targets at {args.rate:g} req/s: {targets(result)}", flush=True)
        if args.ceiling:
            print(f"ceiling: {find_ceiling(args.rate, args.step_seconds, result.ok(), rig)}", flush=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
