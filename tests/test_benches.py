"""Every benchmark still starts: the benches run on their own, not in the test command,
so a module they import can move away unnoticed (two did in one merge). And the parts of
them that decide what a figure means."""

from __future__ import annotations

import gzip
import os
import random
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from moto import mock_aws
from support.compose import ROOT

BENCHES = sorted(p for p in (ROOT / "bench").glob("*.py") if p.name != "bench_env.py")


@pytest.mark.parametrize("bench", BENCHES, ids=lambda p: p.name)
def test_the_bench_imports_and_answers_help(bench):
    result = subprocess.run([sys.executable, str(bench), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:")


class OnePass(threading.Event):
    """A stop event that lets a poller's loop run once."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    def is_set(self) -> bool:
        self.asked += 1
        return self.asked > 1


def test_the_pipeline_benches_poller_counts_what_the_function_wrote_once(monkeypatch):
    # the engine bench's stack runs the compactor: its manifest (pretty JSON) and merged
    # parts (gzip, lines seen before) once stopped the poller with a JSONDecodeError
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    monkeypatch.syspath_prepend(str(ROOT / "query"))
    import bucket_reader
    import pipeline_bench

    line = b'{"request_uri": "/a"}\n{"request_uri": "/b"}\n'
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=pipeline_bench.BUCKET)
        prefix = "2026/12/03/10/"
        s3.put_object(Bucket=pipeline_bench.BUCKET, Key=prefix + "nginx_access_log_1.json", Body=line)
        s3.put_object(Bucket=pipeline_bench.BUCKET, Key=prefix + "_compaction.json", Body=b'{\n  "sources": []\n}\n')
        merged = prefix + "nginx_access_log" + bucket_reader.COMPACTED_MARK + "0f.json.gz"
        s3.put_object(Bucket=pipeline_bench.BUCKET, Key=merged, Body=gzip.compress(line))
        seen = pipeline_bench.Seen()
        pipeline_bench.poll_bucket(s3, seen, OnePass(), interval=0)
    assert list(seen.keys) == [prefix + "nginx_access_log_1.json"]
    assert seen.counts() == {"/a": 1, "/b": 1}


def test_the_benches_latency_rows_cover_windows_of_any_width(monkeypatch):
    # the engine bench's hour-long soak prints a row per 5 minutes: every request in the
    # window it left in, a line never seen counted as lost
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import pipeline_bench

    start = 1000.0
    sent = {"/a": start + 10, "/b": start + 299, "/c": start + 300, "/d": start + 650}
    first_seen = {"/a": start + 10.5, "/b": start + 301, "/c": start + 300.25}
    rows = pipeline_bench.minute_rows(sent, first_seen, [], ["1.0", "2.0"], start, 660, width=300)
    assert len(rows) == 3  # 660 s: two whole windows and a part
    assert rows[0][2].startswith("  minutes  0.0- 5.0: sent 2, p50 ")
    assert "max 2.00 s, lost 0" in rows[0][2]
    assert rows[1][2].startswith("  minutes  5.0-10.0: sent 1, p50 0.25 s")
    assert rows[2][2].startswith("  minutes 10.0-15.0: sent 1,") and "lost 1" in rows[2][2]
    assert rows[2][1] == float("inf")  # a lost line: the window's p99 is too late
    minute = pipeline_bench.minute_rows(sent, first_seen, [], [], start, 120)
    assert minute[0][2].startswith("  minute  1: sent 1, p50 0.50 s")


def test_the_benches_show_the_cpu_time_a_vms_neighbours_took(monkeypatch):
    # a slow stretch of the stack is told from one of the machine by /proc/stat's steal
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import engine_bench
    import pipeline_bench

    before = pipeline_bench.cpu_ticks("cpu  100 0 50 800 0 0 0 50 30 0\n")
    after = pipeline_bench.cpu_ticks("cpu  200 0 100 900 0 0 0 150 60 0\n")
    assert before == (50, 1000) and after == (150, 1350)  # guest time is counted in user's
    assert pipeline_bench.stolen(before, after) == 100 * 100 / 350
    assert pipeline_bench.stolen(before, None) is None and pipeline_bench.stolen(after, before) is None
    assert pipeline_bench.cpu_ticks("no such line") is None
    assert engine_bench.stolen_note(33.4, 61.0) == ", CPU stolen 33% (10 s max 61%)"
    assert engine_bench.stolen_note(None) == ""

    readings = iter([(0, 0), (60, 100), (65, 200)])  # each reading ends one stretch and begins the next
    monkeypatch.setattr(pipeline_bench, "cpu_ticks", lambda: next(readings))
    monkeypatch.setattr(engine_bench.time, "sleep", lambda seconds: None)
    clock = iter([0.0, 0.0, 10.0, 20.0])
    monkeypatch.setattr(engine_bench.time, "monotonic", lambda: next(clock))
    # two 10 s stretches, 60% then 5% stolen: 32.5% over the 20 s, the worst stretch 60%
    assert engine_bench.watched_sleep(20) == ", CPU stolen 32% (10 s max 60%)"

    # the query rounds' times apart: those where the machine kept its CPU, the rest
    times, stolen = [0.3, 4.7, 0.5, 2.9], [0.0, 65.0, None, 10.0]
    assert engine_bench.apart_from_stolen(times, stolen) == (
        "; max 0.50 s in the 2 rounds with under 10% of the CPU stolen (2 more: max 4.70 s)"
    )
    assert engine_bench.apart_from_stolen(times, [0.0, 1.0, None, 9.9]) == ""


class SlowAnswer(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(0.3)
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args) -> None:
        pass


def test_the_engine_benchs_curl_wrapper_keeps_start_shs_status_and_times_each_part(monkeypatch, tmp_path):
    # start.sh reads the status curl prints; the wrapper adds its phases on curl's stderr
    assert "--write-out '%{http_code}'" in (ROOT / "start.sh").read_text()  # what the wrapper extends
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, os.environ.get(name, "bench"))
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import engine_bench

    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowAnswer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env, times = engine_bench.wrapped_curl(tmp_path, dict(os.environ))
    script = (
        "set -euo pipefail; sleep 0.2; "
        f"status=$(printf 'q\\0' | curl --silent --data-binary @- --output {tmp_path / 'answer'} "
        f"--write-out '%{{http_code}}' http://127.0.0.1:{server.server_address[1]}/api/query); "
        'echo "$status"; sleep 0.1'
    )
    try:
        began = time.time()
        result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
        ended = time.time()
    finally:
        server.shutdown()
        server.server_close()
    assert (result.stdout, result.stderr) == ("200\n", "")
    assert (tmp_path / "answer").read_bytes() == b"ok\n"
    parts = engine_bench.curl_parts(times, began, ended)
    assert parts["before curl"] >= 0.2 and parts["first byte"] >= 0.3 and parts["after curl"] >= 0.1, parts
    assert 0 <= parts["connect"] < parts["first byte"] and sum(parts.values()) <= ended - began, parts
    assert engine_bench.curl_parts(times, began, ended) == {}  # each query's line is read once


def test_the_query_benchs_dedupe_cost_loads_the_hour_it_fetched(monkeypatch, aws, capsys):
    # it called the query tool's fetch with an old signature and crashed after the
    # hour's first figures, before the compacted hour's (its --help still answered)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import query_bench

    s3 = boto3.client("s3", endpoint_url=aws, region_name="us-east-1")
    s3.create_bucket(Bucket=query_bench.BUCKET)
    prefix = f"{query_bench.HOUR:%Y/%m/%d/%H}/"
    rng = random.Random(7)
    first, second = (query_bench.line_to_json(query_bench.nginx_line(rng, query_bench.HOUR))[1] for _ in "ab")
    first, second = first.encode() + b"\n", second.encode() + b"\n"
    s3.put_object(Bucket=query_bench.BUCKET, Key=prefix + "nginx_access_log_1.json", Body=first + second)
    # the next object holds a re-sent copy of "b", compressed as COMPRESSION=gzip writes it
    s3.put_object(Bucket=query_bench.BUCKET, Key=prefix + "nginx_access_log_2.json.gz", Body=gzip.compress(second))
    query_bench.dedupe_cost(aws, 1)
    out = capsys.readouterr().out
    assert "keeping every line (3 rows)" in out and "one row per request_id (2 rows)" in out, out
    assert "compaction's dedupe of the same 3 lines" in out and "(2 kept)" in out, out
