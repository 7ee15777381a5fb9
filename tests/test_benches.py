"""Every benchmark still starts: the benches run on their own, not in the test command,
so a module they import can move away unnoticed (two did in one merge). And the parts of
them that decide what a figure means."""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading

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
