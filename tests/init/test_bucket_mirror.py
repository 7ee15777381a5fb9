"""init/bucket_mirror.py: the saved copy of the bucket, on moto server (its S3 sends
event notifications to SQS as LocalStack's does); tests/localstack/test_persistence.py
runs the same code in the real LocalStack across stops and crashes."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import bucket_mirror
import pytest
from bucket_mirror import Copy, content_headers, key_to_relative, notification_keys, relative_to_key
from support.compose import ROOT
from support.net import wait_until

BUCKET = "nginx-accesslog"
SCRIPT = ROOT / "init" / "bucket_mirror.py"


@pytest.fixture
def clients(aws):
    return (
        boto3.client("s3", endpoint_url=aws, region_name="us-east-1"),
        boto3.client("sqs", endpoint_url=aws, region_name="us-east-1"),
    )


NOWHERE = "http://127.0.0.1:9"  # no S3 at all: the stack is down


def run_cli(*args: str, endpoint: str, data_dir: Path, state_dir: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--endpoint-url", endpoint, "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PIPELINE_STATE_DIR": str(state_dir or data_dir / "state")},
    )


# --- pure functions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "2026/11/27/10/nginx_access_log_20261127T100000123Z_shardId-000000000000_4959.json",
        "errors/2026/11/27/10/x.json.gz",
        "with space+plus/ünïcode%20.json",
        "a//b",
        "../../etc/passwd",
        "./.",
        "trailing/",
        "/leading",
        "%",
    ],
)
def test_every_key_maps_to_a_file_inside_the_bucket_folder_and_back(key, tmp_path):
    relative = key_to_relative(key)
    # no segment climbs out or collapses, and the mapping is reversible
    assert all(segment not in ("", ".", "..") for segment in relative.split("/"))
    assert relative_to_key(relative) == key
    copy = Copy(tmp_path, BUCKET)
    assert copy.path(key).resolve().is_relative_to(copy.folder.resolve())


def test_plain_keys_are_their_own_file_names():
    key = "2026/11/27/10/nginx_access_log_20261127T100000123Z_shardId-000000000000_4959.json"
    assert key_to_relative(key) == key


def test_content_headers_are_those_the_pipeline_writes():
    assert content_headers("2026/11/27/10/a.json") == {"ContentType": "application/x-ndjson"}
    assert content_headers("errors/2026/11/27/10/a.json.gz") == {
        "ContentType": "application/x-ndjson",
        "ContentEncoding": "gzip",
    }
    assert content_headers("2026/11/27/10/_compaction.json") == {"ContentType": "application/json"}
    assert content_headers("notes.txt") == {}


def test_notification_keys_are_decoded_as_s3_encodes_them():
    body = json.dumps(
        {
            "Records": [
                {"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "with+space%2Bplus/%C3%BC.json"}}},
                {"eventName": "ObjectRemoved:Delete", "s3": {"object": {"key": "gone.json"}}},
                {"eventName": "ObjectCreated:Put"},  # malformed: skipped
            ]
        }
    )
    assert list(notification_keys(body)) == [
        ("ObjectCreated:Put", "with space+plus/ü.json"),
        ("ObjectRemoved:Delete", "gone.json"),
    ]
    assert list(notification_keys('{"Service":"Amazon S3","Event":"s3:TestEvent"}')) == []
    assert list(notification_keys("not json")) == []


# --- restore -------------------------------------------------------------------------------


def test_a_batch_is_saved_written_objects_first_then_manifests_then_removals():
    hour = "2026/11/27/10/"
    events = [
        ("ObjectCreated:Put", hour + "part-1.json.gz"),
        ("ObjectCreated:Put", hour + "_compaction.json"),
        ("ObjectRemoved:Delete", hour + "raw-1.json"),
        ("ObjectCreated:Put", hour + "raw-2.json"),
        ("ObjectRemoved:Delete", hour + "raw-2.json"),  # the last event of a key decides
        ("ObjectRemoved:Delete", hour + "raw-3.json"),
        ("ObjectCreated:Put", hour + "raw-3.json"),
        ("ObjectCreated:Copy", hour + "part-1.json.gz"),  # each key once
    ]
    assert bucket_mirror.save_order(events) == (
        [hour + "raw-3.json", hour + "part-1.json.gz"],
        [hour + "_compaction.json"],
        [hour + "raw-1.json", hour + "raw-2.json"],
    )
    assert bucket_mirror.save_order([]) == ([], [], [])


def test_absent_keys_come_from_one_listing_of_the_range_they_span(aws, clients):
    s3, _ = clients
    s3.create_bucket(Bucket=BUCKET)
    hour, other = "2026/11/27/10/", "2026/11/27/11/"
    kept = [hour + f"o-{n:02}.json" for n in (3, 5, 9)] + [other + "o-01.json", "top.json"]
    for key in kept:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"{}\n")
    asked = [hour + f"o-{n:02}.json" for n in range(2, 8)] + [other + "o-01.json", other + "o-02.json", "gone.json"]
    lists = []
    s3.meta.events.register("before-call.s3.ListObjectsV2", lambda **kw: lists.append(kw["params"]))
    # one listing per folder, and only keys it listed and did not find are absent
    gone = bucket_mirror.absent(s3, BUCKET, asked)
    assert gone == {hour + "o-02.json", hour + "o-04.json", hour + "o-06.json", hour + "o-07.json"} | {
        other + "o-02.json",
        "gone.json",
    }
    assert len(lists) == 3
    # past what its pages list, a key is not called absent: the caller reads it
    gone = bucket_mirror.absent(s3, BUCKET, asked[:6], pages=1, page=2)
    assert gone == {hour + "o-02.json", hour + "o-04.json"}


def save_files(data_dir: Path, objects: dict[str, bytes]) -> None:
    copy = Copy(data_dir, BUCKET)
    for key, body in objects.items():
        copy.save(key, body)


def test_restore_puts_every_saved_file_back_under_its_key_once(aws, clients, tmp_path):
    # given files saved at the last stop, and no bucket (LocalStack forgot it)
    s3, _ = clients
    objects = {
        "2026/11/27/10/a.json": b'{"status":200}\n',
        "errors/2026/11/27/10/b.json.gz": gzip.compress(b'{"errorCode":"x"}\n', mtime=0),
        "odd//../key": b"bytes",
    }
    save_files(tmp_path / "saved", objects)
    # when restore runs, twice (a re-run of the hook)
    first = run_cli("restore", endpoint=aws, data_dir=tmp_path / "saved")
    second = run_cli("restore", endpoint=aws, data_dir=tmp_path / "saved")
    # then the bucket holds the same keys and bytes, with the pipeline's headers
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("restored 3 objects (") and f"to s3://{BUCKET}" in first.stdout
    listed = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    found = {o["Key"]: s3.get_object(Bucket=BUCKET, Key=o["Key"]) for o in listed}
    assert {k: v["Body"].read() for k, v in found.items()} == objects
    assert found["errors/2026/11/27/10/b.json.gz"]["ContentEncoding"] == "gzip"
    assert found["2026/11/27/10/a.json"]["ContentType"] == "application/x-ndjson"
    assert second.returncode == 0
    assert "restored 0 objects" in second.stdout and "(3 were there already)" in second.stdout


def test_restore_with_nothing_saved_leaves_the_bucket_to_provisioning(aws, clients, tmp_path):
    s3, _ = clients
    result = run_cli("restore", endpoint=aws, data_dir=tmp_path / "saved")
    assert result.returncode == 0 and result.stdout == f"nothing saved for s3://{BUCKET} yet\n"
    assert s3.list_buckets()["Buckets"] == []


# --- the watcher and sync ------------------------------------------------------------------


@pytest.fixture
def watcher(aws, clients, tmp_path):
    """`bucket_mirror.py watch` as the hook starts it: a process of its own, its pid file."""
    s3, _ = clients
    s3.create_bucket(Bucket=BUCKET)
    state = tmp_path / "state"
    state.mkdir()
    copy = Copy(tmp_path / "saved", BUCKET)
    log = (tmp_path / "watcher.log").open("w")
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--endpoint-url", aws, "--data-dir", str(copy.root), "watch"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PIPELINE_STATE_DIR": str(state)},
    )
    (state / "mirror.pid").write_text(str(process.pid))
    assert wait_until(lambda: "watching s3://" in (tmp_path / "watcher.log").read_text(), 30, interval=0.1)
    yield copy, state
    process.terminate()
    process.wait(timeout=10)
    log.close()


def hung_watcher() -> subprocess.Popen:
    """A process whose command line is the watcher's but that never reads its queue."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "bucket_mirror.py", "watch"])


IGNORES_SIGTERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
time.sleep(60)
"""


def test_stop_watcher_ends_the_watcher_and_only_the_watcher(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    # given a pid file naming another live process (this one): nothing to stop
    (state / "mirror.pid").write_text(str(os.getpid()))
    assert bucket_mirror.stop_watcher(state, timeout=5) is None
    # given a watcher: SIGTERM ends it
    watcher = hung_watcher()
    (state / "mirror.pid").write_text(str(watcher.pid))
    assert wait_until(lambda: bucket_mirror.watcher_pid(state) == watcher.pid, 10, interval=0.05)
    assert bucket_mirror.stop_watcher(state, timeout=5) == f"stopped the watcher (pid {watcher.pid})"
    assert watcher.wait(timeout=5) == -signal.SIGTERM
    # given one that ignores SIGTERM (busy saving): SIGKILL after the timeout
    stubborn = subprocess.Popen(
        [sys.executable, "-c", IGNORES_SIGTERM, "bucket_mirror.py", "watch"], stdout=subprocess.PIPE, text=True
    )
    assert stubborn.stdout.readline() == "ignoring SIGTERM\n"
    (state / "mirror.pid").write_text(str(stubborn.pid))
    stopped = bucket_mirror.stop_watcher(state, timeout=0.5)
    assert stopped == f"stopped the watcher (pid {stubborn.pid}) with SIGKILL after 0.5 s"
    assert stubborn.wait(timeout=5) == -signal.SIGKILL


def test_the_watcher_saves_new_objects_forgets_deleted_ones_and_skips_control_objects(aws, clients, watcher):
    s3, sqs = clients
    copy, state = watcher
    # when objects are written, one deleted, one a control object, one that cannot be a file
    for key in ("2026/11/27/10/a.json", "2026/11/27/10/b.json", "_pipeline/drain/x/shard.json", "a.json"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    s3.put_object(Bucket=BUCKET, Key="a.json/inside", Body=b"a file and a folder at once")
    s3.delete_object(Bucket=BUCKET, Key="2026/11/27/10/b.json")
    # and sync waits until everything is saved
    summary = bucket_mirror.sync(s3, sqs, copy, state, timeout=30, clock=time.monotonic)
    # then the copy matches the bucket, less control objects and the impossible file
    saved = {key: path.read_bytes() for key, path in copy.files()}
    assert saved == {"2026/11/27/10/a.json": b"2026/11/27/10/a.json", "a.json": b"a.json"}
    assert summary == f"saved: 2 objects (26 B) of s3://{BUCKET} in {copy.folder}"
    assert not (copy.folder / "2026" / "11" / "27" / "10" / "b.json").exists()
    # the sync's barrier is gone from the bucket and from the watcher's folder
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert not [k for k in keys if k.startswith("_pipeline/barrier/")]
    assert list((copy.state / "barriers").iterdir()) == []


def test_the_watcher_first_saves_what_the_bucket_held_before_it_started(aws, clients, tmp_path):
    # given objects written before the watcher existed (e.g. between provisioning and it)
    s3, sqs = clients
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="early.json", Body=b"{}\n")
    copy = Copy(tmp_path / "saved", BUCKET)
    running = bucket_mirror.Watcher(s3, sqs, copy, bucket_mirror.subscribe(s3, sqs, BUCKET))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    try:
        assert wait_until(copy.path("early.json").exists, 10, interval=0.1)
    finally:
        running.stopping.set()
        thread.join(timeout=10)


def test_sync_without_a_watcher_compares_the_bucket_with_the_copy(aws, clients, tmp_path):
    s3, _ = clients
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="x.json", Body=b"{}\n")
    result = run_cli("sync", endpoint=aws, data_dir=tmp_path / "saved")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "saved: 1 objects were missing from the copy (the watcher was not running)\n"
    assert (tmp_path / "saved" / BUCKET / "x.json").read_bytes() == b"{}\n"


def test_sync_times_out_with_one_line_when_the_watcher_does_not_answer(aws, clients, tmp_path):
    # given a queue, and a pid file naming a watcher that hangs
    s3, sqs = clients
    s3.create_bucket(Bucket=BUCKET)
    bucket_mirror.subscribe(s3, sqs, BUCKET)
    state = tmp_path / "state"
    state.mkdir()
    hung = hung_watcher()
    try:
        (state / "mirror.pid").write_text(str(hung.pid))
        result = run_cli("sync", "--timeout", "1", endpoint=aws, data_dir=tmp_path / "saved", state_dir=state)
    finally:
        hung.kill()
        hung.wait()
    assert result.returncode == 1
    assert result.stderr.startswith("bucket_mirror.py: error: not saved within 1 s: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_pid_file_left_from_before_a_restart_names_no_watcher(aws, clients, tmp_path):
    # given a pid file whose number now belongs to another live process (this test's)
    s3, _ = clients
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="x.json", Body=b"{}\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / "mirror.pid").write_text(str(os.getpid()))
    # when sync runs, then it does not wait for a watcher that is not there: it compares
    result = run_cli("sync", "--timeout", "5", endpoint=aws, data_dir=tmp_path / "saved", state_dir=state)
    assert result.returncode == 0, result.stderr
    assert "(the watcher was not running)" in result.stdout
    assert (tmp_path / "saved" / BUCKET / "x.json").exists()


# --- status and export ---------------------------------------------------------------------


def test_status_and_export_need_no_s3(tmp_path):
    # given saved files, and no endpoint at all (the stack is down)
    save_files(tmp_path / "saved", {"2026/11/27/10/a.json": b"1\n", "errors/x.json": b"22\n"})
    status = run_cli("status", endpoint=NOWHERE, data_dir=tmp_path / "saved")
    exported = run_cli("export", "--to", str(tmp_path / "out"), endpoint=NOWHERE, data_dir=tmp_path / "saved")
    # then status counts them, and export copies the bucket's tree as plain files
    assert status.stdout == (
        f"saved: 2 objects (5 B) of s3://{BUCKET} in {tmp_path / 'saved' / BUCKET} (as of the last stop)\n"
    )
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == f"exported 2 objects (5 B) of s3://{BUCKET} to {tmp_path / 'out'}\n"
    assert (tmp_path / "out" / "2026" / "11" / "27" / "10" / "a.json").read_bytes() == b"1\n"
    assert (tmp_path / "out" / "errors" / "x.json").read_bytes() == b"22\n"


def test_export_of_nothing_is_one_line_and_an_error(tmp_path):
    result = run_cli("export", "--to", str(tmp_path / "out"), endpoint=NOWHERE, data_dir=tmp_path / "saved")
    assert result.returncode == 1
    folder = tmp_path / "saved" / BUCKET
    assert result.stderr == f"bucket_mirror.py: error: nothing saved for s3://{BUCKET} in {folder}\n"


def test_saved_files_are_readable_by_others_and_never_half_written(tmp_path):
    copy = Copy(tmp_path, BUCKET)
    copy.save("a/b.json", b"x")
    assert (copy.path("a/b.json").stat().st_mode & 0o777) == 0o644
    assert [p.name for p in copy.path("a/b.json").parent.iterdir()] == ["b.json"]
    copy.forget("a/b.json")
    assert not (copy.folder / "a").exists() and copy.folder.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--aws", "status"],
        ["bogus"],
        ["sync", "--timeout", "0"],
        ["restore", "--workers", "0"],
        ["sync", "--timeout", "x"],
    ],
)
def test_wrong_use_is_one_line(args, tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert re.match(r"bucket_mirror.py( \w+)?: error:", result.stderr.strip().splitlines()[-1])


def test_status_of_a_data_dir_that_does_not_exist_says_where_the_logs_are(tmp_path):
    # e.g. run on a host, where /var/lib/pipeline is the container's path
    result = run_cli("status", endpoint=NOWHERE, data_dir=tmp_path / "nowhere")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert f"{tmp_path / 'nowhere'} does not exist" in result.stderr and "--data-dir" in result.stderr


def test_only_an_emulator_is_offered():
    # on AWS the bucket keeps its objects itself: no --aws flag to offer
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "--endpoint-url" in result.stdout and "--aws" not in result.stdout
