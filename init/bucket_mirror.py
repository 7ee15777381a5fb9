#!/usr/bin/env python3
"""Keep a copy of the bucket on disk, and put it back when LocalStack starts again.

LocalStack's free image forgets every bucket when it stops. This keeps one file per
object under `<data dir>/<bucket>/<key>` (the compose volume `saved-logs`, or a folder of
the user's): the same bytes as the object, so the folder is also a plain export of the
logs as JSON Lines files. The stream is never saved: the event source mapping keeps its
position in memory only, so a restored stream would be read again from its start and
every line in it written twice. Stops drain the stream into the bucket first instead.

    bucket_mirror.py restore     put every saved file back under its key (ready.d hook,
                                 before provisioning creates the stream)
    bucket_mirror.py subscribe   have the bucket's event notifications sent to a queue
    bucket_mirror.py watch       save each object the queue names (a daemon; first it
                                 saves whatever the bucket holds and the copy lacks)
    bucket_mirror.py sync        wait until every object now in the bucket is saved
    bucket_mirror.py stop-watcher   stop the watcher (before a new one starts; at shutdown)
    bucket_mirror.py status      how much is saved, where
    bucket_mirror.py export --to DIR   copy the saved files to DIR (no S3 needed)

It runs in the LocalStack container (its python3 has boto3), or on any host with boto3.
Only for an emulator: on AWS the bucket keeps its objects by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, unquote, unquote_plus

import pipeline_target  # beside this file: the names' defaults, flags, clients, error wording
from pipeline_target import Failure, describe, positive, positive_seconds

CONTROL_PREFIX = "_pipeline/"  # drain acknowledgements, sync barriers: never saved
BARRIER_PREFIX = CONTROL_PREFIX + "barrier/"
NOTIFICATION_ID = "pipeline-saved-logs"
STATE_FOLDER = ".mirror"  # beside the buckets' folders; bucket names never start with "."
PROGRESS_SECONDS = 5.0
INTERNAL_CALL_HEADER = "x-localstack-data"
MANIFEST_NAME = "_compaction.json"  # query/bucket_reader.py: an hour's compaction manifest


# --- keys and files: pure functions ----------------------------------------------------

_PLAIN_SEGMENT = re.compile(r"[^%\x00]+")


def key_to_relative(key: str) -> str:
    """The file name of `key` inside the bucket's folder: the key itself, `/` as folders.

    A segment a file system cannot hold as written (empty, `.`, `..`, a NUL) is stored
    percent-encoded behind a `%`; plain segments never contain `%`, so this is reversible.
    """
    segments = []
    for segment in key.split("/"):
        if _PLAIN_SEGMENT.fullmatch(segment) and segment not in (".", ".."):
            segments.append(segment)
        else:
            segments.append("%" + quote(segment, safe=""))
    return "/".join(segments)


def relative_to_key(relative: str) -> str:
    return "/".join(unquote(s[1:]) if s.startswith("%") else s for s in relative.split("/"))


def content_headers(key: str) -> dict[str, str]:
    """The headers the pipeline writes with each kind of object (the handler, compaction).

    Only bytes are saved; these come back from the key's name, as the writers set them.
    """
    if key.endswith("/" + MANIFEST_NAME):
        return {"ContentType": "application/json"}
    if key.endswith(".json.gz"):
        return {"ContentType": "application/x-ndjson", "ContentEncoding": "gzip"}
    if key.endswith(".json"):
        return {"ContentType": "application/x-ndjson"}
    return {}


def notification_keys(body: str) -> Iterator[tuple[str, str]]:
    """(event name, key) of each record of an S3 event notification's SQS message body."""
    try:
        message = json.loads(body)
    except ValueError:
        return
    if not isinstance(message, dict):
        return
    for record in message.get("Records") or ():
        try:
            yield record["eventName"], unquote_plus(record["s3"]["object"]["key"])
        except (KeyError, TypeError):
            continue


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


# --- the copy on disk ------------------------------------------------------------------


@dataclass(frozen=True)
class Copy:
    """One bucket's saved files, and the mirror's own state beside them."""

    root: Path
    bucket: str

    @property
    def folder(self) -> Path:
        return self.root / self.bucket

    @property
    def state(self) -> Path:
        return self.root / STATE_FOLDER / self.bucket

    def path(self, key: str) -> Path:
        return self.folder / key_to_relative(key)

    def files(self) -> Iterator[tuple[str, Path]]:
        """(key, path) of every saved object; half-written temporary files are skipped."""
        if not self.folder.is_dir():
            return
        for directory, _, names in os.walk(self.folder):
            for name in names:
                if name.startswith(".saving-"):
                    continue
                path = Path(directory, name)
                yield relative_to_key(path.relative_to(self.folder).as_posix()), path

    def save(self, key: str, body: bytes | BinaryIO) -> None:
        """Write atomically: a reader (or a restore after a crash) sees old or new, never
        half. A stream is copied in chunks: a merged hour may be hundreds of MB."""
        path = self.path(key)
        for attempt in range(3):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                handle, temporary = tempfile.mkstemp(prefix=".saving-", dir=path.parent)
                break
            except FileNotFoundError:  # a concurrent forget() removed the folder, empty then
                if attempt == 2:
                    raise
        try:
            os.fchmod(handle, 0o644)  # readable by `./start.sh export`, which runs as the user
            with os.fdopen(handle, "wb") as file:
                if isinstance(body, bytes):
                    file.write(body)
                else:
                    shutil.copyfileobj(body, file, 1024 * 1024)
            Path(temporary).replace(path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def forget(self, key: str) -> None:
        path = self.path(key)
        path.unlink(missing_ok=True)
        for parent in path.parents:  # drop folders left empty, up to the bucket's
            if parent == self.folder or not parent.is_relative_to(self.folder):
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except OSError:
            return None


# --- S3 and SQS ------------------------------------------------------------------------


def clients(args: argparse.Namespace) -> tuple[Any, Any]:
    # Plain bodies (no aws-chunked checksum trailer), many connections for parallel puts.
    s3, sqs = pipeline_target.clients(
        args.region,
        args.endpoint_url,
        ("s3", "sqs"),
        max_pool_connections=64,
        request_checksum_calculation="when_required",
    )
    for client in (s3, sqs):
        client.meta.events.register("before-sign", _as_internal_call)
    return s3, sqs


def _as_internal_call(request: Any, **_: Any) -> None:
    """Mark the request as one of LocalStack's own (its `x-localstack-data` header).

    Once LocalStack begins to stop it answers 503 to every other request, also while its
    shutdown.d hook runs (localstack/aws/handlers/internal.py, 4.14.0): without the mark the
    watcher could not save the last objects then. Side effect: LocalStack logs these calls
    at debug level only, so the watcher's polling does not fill its log.
    """
    request.headers[INTERNAL_CALL_HEADER] = "{}"


def bucket_objects(s3: Any, bucket: str) -> dict[str, int] | None:
    """key -> size of every object; None when there is no such bucket."""
    found: dict[str, int] = {}
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", ()):
                found[item["Key"]] = item["Size"]
    except s3.exceptions.NoSuchBucket:
        return None
    return found


def queue_name(bucket: str) -> str:
    return f"{bucket}-saved-logs"[:80]


class Progress:
    """A line to stderr at most every PROGRESS_SECONDS while a long step runs."""

    def __init__(self, what: str, total: int) -> None:
        self.what, self.total, self.done, self.bytes = what, total, 0, 0
        self.started = self.shown = time.monotonic()
        self.lock = threading.Lock()

    def add(self, size: int) -> None:
        with self.lock:
            self.done += 1
            self.bytes += size
            now = time.monotonic()
            if now - self.shown >= PROGRESS_SECONDS:
                self.shown = now
                print(
                    f"{self.what}: {self.done:,} of {self.total:,} objects ({human_size(self.bytes)}), "
                    f"{now - self.started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def restore(s3: Any, copy: Copy, region: str, workers: int = 16) -> str:
    """Put every saved file back under its key, skipping objects the bucket already holds
    with the same size (a second run, e.g. `./start.sh provision`, uploads nothing)."""
    saved = list(copy.files())
    if not saved:
        return f"nothing saved for s3://{copy.bucket} yet"
    present = bucket_objects(s3, copy.bucket)
    if present is None:
        kwargs: dict[str, Any] = {"Bucket": copy.bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**kwargs)
        present = {}
    missing = [(key, path) for key, path in saved if present.get(key) != path.stat().st_size]
    progress = Progress(f"restoring s3://{copy.bucket}", len(missing))

    def put(item: tuple[str, Path]) -> None:
        key, path = item
        with path.open("rb") as body:  # streamed: a merged hour may be hundreds of MB
            size = os.fstat(body.fileno()).st_size
            s3.put_object(Bucket=copy.bucket, Key=key, Body=body, ContentLength=size, **content_headers(key))
        progress.add(size)

    # Compaction manifests last, once every object they name is back: a reader (or the
    # compactor) that sees a manifest finds its objects, and one that sees compacted objects
    # without their manifest skips them and reads the raw objects instead.
    first = [item for item in missing if not item[0].endswith("/" + MANIFEST_NAME)]
    manifests = [item for item in missing if item[0].endswith("/" + MANIFEST_NAME)]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for batch in (first, manifests):
            for _ in pool.map(put, batch):
                pass
    kept = len(saved) - len(missing)
    note = f" ({kept:,} were there already)" if kept else ""
    return (
        f"restored {len(missing):,} objects ({human_size(progress.bytes)}) to s3://{copy.bucket} "
        f"in {progress.elapsed():.1f} s{note}"
    )


def subscribe(s3: Any, sqs: Any, bucket: str) -> str:
    """Have the bucket's created/removed events sent to our queue; other configurations stay."""
    url = sqs.create_queue(QueueName=queue_name(bucket))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    current = s3.get_bucket_notification_configuration(Bucket=bucket)
    current.pop("ResponseMetadata", None)
    queues = [c for c in current.get("QueueConfigurations", ()) if c.get("Id") != NOTIFICATION_ID]
    queues.append({"Id": NOTIFICATION_ID, "QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]})
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={**current, "QueueConfigurations": queues}
    )
    return url


def save_object(s3: Any, copy: Copy, key: str) -> int:
    """Make the copy of `key` what the bucket holds now: saved, or gone. Reading the
    current object (not trusting the event) keeps order right whatever order events come in.
    """
    try:
        answer = s3.get_object(Bucket=copy.bucket, Key=key)
    except s3.exceptions.NoSuchKey:
        copy.forget(key)
        return 0
    if key.endswith("/" + MANIFEST_NAME):
        # A compaction manifest read now may name objects whose events are still queued:
        # save them first, so a crash never leaves a saved manifest without its objects.
        body = answer["Body"].read()
        for named in manifest_objects(body):
            if copy.size(named) is None:
                save_object(s3, copy, named)
        copy.save(key, body)
        return len(body)
    with answer["Body"] as body:
        copy.save(key, body)
    return answer["ContentLength"]


def manifest_objects(body: bytes) -> list[str]:
    """The compacted objects a manifest names (query/bucket_reader.py's format); [] if unreadable."""
    try:
        manifest = json.loads(body)
        named = manifest["objects"] if "objects" in manifest else [manifest["object"]]
    except (ValueError, TypeError, KeyError):
        return []
    return [key for key in named if isinstance(key, str)] if isinstance(named, list) else []


def catch_up(s3: Any, copy: Copy, workers: int = 16) -> int:
    """Save every object the bucket holds and the copy lacks (a start, a missed event).

    Never deletes: a file the bucket lacks is left alone (only a removal event removes).
    """
    present = bucket_objects(s3, copy.bucket) or {}
    missing = [k for k, size in present.items() if not k.startswith(CONTROL_PREFIX) and copy.size(k) != size]
    with ThreadPoolExecutor(workers) as pool:
        for step in save_order(("ObjectCreated:Put", key) for key in missing):
            for _ in pool.map(lambda key: save_object(s3, copy, key), step):
                pass
    return len(missing)


def save_order(events: Iterable[tuple[str, str]]) -> tuple[list[str], list[str], list[str]]:
    """The keys a batch of (event name, key) names, each once, in the steps that keep the
    copy whole at every moment: objects written, then compaction manifests, then objects
    removed (a merge writes its parts, then its manifest, then deletes what it replaced).

    Each step's keys may be saved in parallel: saving reads the bucket as it is now, so
    one save per key, by its last event's kind, leaves the copy as the bucket is.
    """
    removed: dict[str, bool] = {}
    for event, key in events:
        removed.pop(key, None)  # the order of last events
        removed[key] = event.startswith("ObjectRemoved")
    written = [key for key, gone in removed.items() if not gone and not key.endswith("/" + MANIFEST_NAME)]
    manifests = [key for key, gone in removed.items() if not gone and key.endswith("/" + MANIFEST_NAME)]
    return written, manifests, [key for key, gone in removed.items() if gone]


def absent(s3: Any, bucket: str, keys: Iterable[str], pages: int = 2, page: int = 1000) -> set[str]:
    """Those of `keys` the bucket lacks now, from one listing per folder of the range they
    span (at most `pages` pages): a merge's or a rolling pass's deletes are keys next to
    each other, and one listing costs LocalStack far less than a GET for each. A key
    past what was listed is not in the answer: the caller reads it (save_object)."""
    folders: dict[str, list[str]] = {}
    for key in keys:
        folders.setdefault(key.rpartition("/")[0], []).append(key)
    found: set[str] = set()
    for names in folders.values():
        names.sort()
        first, last = names[0], names[-1]
        same = next((i for i, (a, b) in enumerate(zip(first, last)) if a != b), min(len(first), len(last)))
        listed: set[str] = set()
        reached = ""  # every key up to here was listed
        pagination = {"PageSize": page, "MaxItems": page * pages}
        listing = s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=first[:same], StartAfter=first[:-1], PaginationConfig=pagination
        )
        for answer in listing:
            listed.update(item["Key"] for item in answer.get("Contents", ()))
            reached = last if not answer.get("IsTruncated") else max(listed, default="")
            if reached >= last:
                break
        found.update(name for name in names if name <= reached and name not in listed)
    return found


class Watcher:
    """The daemon: each queued event names a key; the copy is made to match the bucket."""

    # Messages taken from the queue before saving what they name, and saves at once: one
    # event at a time lagged ~2 minutes behind a merged hour (docs/persistence.md).
    BATCH = 100
    WORKERS = 16

    def __init__(self, s3: Any, sqs: Any, copy: Copy, queue_url: str) -> None:
        self.s3, self.sqs, self.copy, self.queue_url = s3, sqs, copy, queue_url
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(self.WORKERS)

    def barrier_seen(self, barrier: str) -> None:
        seen = self.copy.state / "barriers"
        seen.mkdir(parents=True, exist_ok=True)
        (seen / barrier).touch()

    def save(self, key: str) -> None:
        try:
            save_object(self.s3, self.copy, key)
        except OSError as exc:  # e.g. keys `a` and `a/b`: a file cannot be both
            log(f"cannot save {key!r}: {exc}")

    def handle(self, messages: list[dict[str, Any]]) -> None:
        events = [event for m in messages for event in notification_keys(m.get("Body", ""))]
        written, manifests, removed = save_order(
            (event, key) for event, key in events if not key.startswith(CONTROL_PREFIX)
        )
        # a key under another key of the batch (`a`, `a/b`: a file cannot be a folder too)
        # is saved after it, as one at a time did: which one is kept does not depend on timing
        keys = set(written)
        under = [k for k in written if any(k[:i] in keys for i, c in enumerate(k) if c == "/")]
        for step in ([k for k in written if k not in under], under, manifests):
            for _ in self.pool.map(self.save, step):
                pass
        gone = absent(self.s3, self.copy.bucket, removed) if removed else set()
        for key in gone:
            try:
                self.copy.forget(key)
            except OSError as exc:  # a folder where the key's file would be (keys `a`, `a/b`)
                log(f"cannot remove {key!r}: {exc}")
        for _ in self.pool.map(self.save, [key for key in removed if key not in gone]):
            pass
        # a barrier counts as seen once the events taken with it are saved (sync's promise)
        for event, key in events:
            if key.startswith(BARRIER_PREFIX) and event.startswith("ObjectCreated"):
                self.barrier_seen(key.removeprefix(BARRIER_PREFIX))
        for start in range(0, len(messages), 10):  # SQS deletes at most 10 in one call
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages[start : start + 10])
            ]
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)

    def receive(self) -> list[dict[str, Any]]:
        """Up to BATCH messages: the first wait up to a second, the rest only what is there."""
        messages: list[dict[str, Any]] = []
        while len(messages) < self.BATCH:
            wait = 0 if messages else 1
            answer = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
            got = answer.get("Messages", [])
            messages += got
            if len(got) < 10:
                break
        return messages

    def run(self, give_up_after: float = 60.0) -> None:
        catch_up(self.s3, self.copy)
        failing_since: float | None = None
        while not self.stopping.is_set():
            try:
                self.handle(self.receive())
                failing_since = None
            except Exception as exc:  # LocalStack stopping or restarting: retry, then give up
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > give_up_after:
                    reason = describe(exc)
                    raise Failure(f"gave up after {give_up_after:.0f} s of errors: {reason}") from exc
                log(f"retrying: {describe(exc)}")
                self.stopping.wait(1.0)


def queue_depth(sqs: Any, url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes.get(name, 0)) for name in names)


def watcher_pid(state_dir: Path) -> int | None:
    """The running watcher's pid, from the pid file the ready.d hook writes. After `docker
    compose restart` the file may name another process (the container keeps /tmp), or an
    exited one not yet reaped: its command line must be the watcher's too."""
    try:
        pid = int((state_dir / "mirror.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return pid  # no /proc (macOS): the pid alone
    watching = any(part.endswith(b"bucket_mirror.py") for part in command) and b"watch" in command
    return pid if watching else None


def stop_watcher(state_dir: Path, timeout: float) -> str | None:
    """SIGTERM to the running watcher, SIGKILL after `timeout` s (it may be saving a large
    object); what was done, or None when no watcher runs."""
    pid = watcher_pid(state_dir)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while watcher_pid(state_dir) == pid:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return f"stopped the watcher (pid {pid}) with SIGKILL after {timeout:g} s"
        time.sleep(0.1)
    return f"stopped the watcher (pid {pid})"


def sync(s3: Any, sqs: Any, copy: Copy, state_dir: Path, timeout: float, clock: Callable[[], float]) -> str:
    """Wait until everything the bucket holds now is saved.

    With the daemon running: put a barrier object and wait until the daemon has seen its
    event and the queue is empty twice in a row. LocalStack hands events to its sender
    threads in the order the objects were written, so events of earlier objects are out
    by then. Without the daemon: compare the bucket with the copy and save what differs.
    """
    deadline = clock() + timeout
    if watcher_pid(state_dir) is None:
        if bucket_objects(s3, copy.bucket) is None:
            return f"no bucket {copy.bucket}: nothing to save"
        saved = catch_up(s3, copy)
        return f"saved: {saved:,} objects were missing from the copy (the watcher was not running)"
    url = sqs.get_queue_url(QueueName=queue_name(copy.bucket))["QueueUrl"]
    barrier = uuid.uuid4().hex
    marker = copy.state / "barriers" / barrier
    s3.put_object(Bucket=copy.bucket, Key=BARRIER_PREFIX + barrier, Body=b"")
    try:
        empty_in_a_row = 0
        while empty_in_a_row < 2:
            if clock() > deadline:
                left = queue_depth(sqs, url)
                raise Failure(
                    f"not saved within {timeout:g} s: {left} events still queued"
                    + ("" if marker.exists() else ", the watcher has not reached the ones written before")
                )
            empty_in_a_row = empty_in_a_row + 1 if marker.exists() and queue_depth(sqs, url) == 0 else 0
            time.sleep(0.2)
    finally:
        s3.delete_object(Bucket=copy.bucket, Key=BARRIER_PREFIX + barrier)
        marker.unlink(missing_ok=True)
    count, size = folder_size(copy)
    return f"saved: {count:,} objects ({human_size(size)}) of s3://{copy.bucket} in {copy.folder}"


def folder_size(copy: Copy) -> tuple[int, int]:
    count = size = 0
    for _, path in copy.files():
        count += 1
        size += path.stat().st_size
    return count, size


def export(copy: Copy, target: Path) -> str:
    """Copy the saved files to `target`, the bucket's tree as folders (no S3 needed)."""
    saved = [path for _, path in copy.files()]
    if not saved:
        raise Failure(f"nothing saved for s3://{copy.bucket} in {copy.folder}")
    size = 0
    for path in saved:
        destination = target / path.relative_to(copy.folder)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
        size += path.stat().st_size
    return f"exported {len(saved):,} objects ({human_size(size)}) of s3://{copy.bucket} to {target}"


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} bucket_mirror: {message}", file=sys.stderr, flush=True)


# --- command line ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="bucket_mirror.py", description="Keep the bucket's objects across restarts.")
    pipeline_target.add_target_arguments(parser, aws=False)  # on AWS the bucket keeps its objects itself
    pipeline_target.add_name_argument(parser, "bucket")
    data_dir = env("PIPELINE_DATA_DIR") or "/var/lib/pipeline"
    parser.add_argument("--data-dir", type=Path, default=Path(data_dir), help="$PIPELINE_DATA_DIR")
    state_dir = env("PIPELINE_STATE_DIR") or pipeline_target.DEFAULT_STATE_DIR
    parser.add_argument("--state-dir", type=Path, default=Path(state_dir), help="$PIPELINE_STATE_DIR")
    commands = parser.add_subparsers(dest="command", required=True)
    restore_command = commands.add_parser("restore", help="put every saved file back under its key")
    restore_command.add_argument("--workers", type=positive(int), default=16, help="parallel uploads (default 16)")
    commands.add_parser("subscribe", help="send the bucket's events to the watcher's queue")
    commands.add_parser("watch", help="save every object as it is written (a daemon)")
    sync_command = commands.add_parser("sync", help="wait until every object in the bucket is saved")
    sync_command.add_argument("--timeout", type=positive_seconds, default=30, help="seconds (default 30)")
    commands.add_parser("status", help="how much is saved, and where")
    stop_command = commands.add_parser("stop-watcher", help="stop the running watcher (the hooks)")
    stop_command.add_argument("--timeout", type=positive_seconds, default=10, help="seconds, then SIGKILL (default 10)")
    export_command = commands.add_parser("export", help="copy the saved files to a folder")
    export_command.add_argument("--to", type=Path, required=True, help="the folder (created if missing)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    copy = Copy(args.data_dir, args.bucket)
    try:
        if args.command == "export":
            print(export(copy, args.to))
            return 0
        if args.command == "stop-watcher":
            stopped = stop_watcher(args.state_dir, args.timeout)
            if stopped:
                print(stopped)
            return 0
        if args.command == "status":
            if not args.data_dir.is_dir():
                raise Failure(
                    f"no saved logs here: {args.data_dir} does not exist. They are kept in the LocalStack "
                    "container (./start.sh status shows them); on this machine, pass --data-dir FOLDER "
                    "(your SAVED_LOGS folder)"
                )
            count, size = folder_size(copy)
            watching = "as of the last stop" if watcher_pid(args.state_dir) is None else "kept up to date"
            print(f"saved: {count:,} objects ({human_size(size)}) of s3://{args.bucket} in {copy.folder} ({watching})")
            return 0
        s3, sqs = clients(args)
        if args.command == "restore":
            print(restore(s3, copy, args.region, args.workers))
        elif args.command == "subscribe":
            subscribe(s3, sqs, args.bucket)
            print(f"watching s3://{args.bucket}: every object is saved in {copy.folder}")
        elif args.command == "sync":
            print(sync(s3, sqs, copy, args.state_dir, args.timeout, time.monotonic))
        else:
            url = subscribe(s3, sqs, args.bucket)
            watcher = Watcher(s3, sqs, copy, url)
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: watcher.stopping.set())
            log(f"watching s3://{args.bucket} into {copy.folder}")
            watcher.run()
            log("stopped")
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"bucket_mirror.py: error: {describe(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
