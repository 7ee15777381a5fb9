"""The bucket as the query tools read it: hour prefixes of a time range, objects listed
and fetched in parallel through boto3, compacted hours through their manifest, and the
flags and errors the tools share. query/logs_query.py (SQL over the records) and
query/compact_hours.py (merging an hour's objects) are built on it; standard library and
boto3 only.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO

UTC = timezone.utc  # datetime.UTC is Python 3.11+; the tools run on 3.9+
DEFAULT_ENDPOINT = "http://localhost:4566"
ERROR_PREFIX = "errors/"
# Written by query/compact_hours.py inside an hour prefix: names the compacted object and
# the objects it replaces. The leading underscore hides it from Athena and Hive.
MANIFEST_NAME = "_compaction.json"
COMPACTED_MARK = "_compacted_"


class Failure(Exception):
    """An error to report as one line, without a traceback."""


# --- time ranges and hour prefixes: pure --------------------------------------------

_DURATION = re.compile(r"([0-9]+)\s*([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `1h`, `2d`, `1h30m` -> a positive timedelta."""
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not parts or _DURATION.sub("", compact).strip():
        raise ValueError(f"not a duration: {text!r} (examples: 15m, 1h, 2d, 1h30m)")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"not a duration above zero: {text!r}")
    return timedelta(seconds=seconds)


def parse_instant(text: str) -> datetime:
    """ISO 8601 (`2026-11-26T17:00`, `2026-11-26 17:00:00Z`, `2026-11-26`, with an offset
    or without: then UTC) -> an aware datetime in UTC."""
    cleaned = text.strip()
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(f"not a date and time: {text!r} (example: 2026-11-26T17:00Z)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def time_range(
    since: str | None, start: str | None, end: str | None, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """[start, end) in UTC: `--from/--to`, or `--since` back from now; default the last hour."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    end_at = parse_instant(end) if end else now
    start_at = parse_instant(start) if start else end_at - parse_duration(since or "1h")
    if start_at >= end_at:
        raise ValueError(
            f"empty range: --from {start_at:%Y-%m-%dT%H:%M:%SZ} is not before --to {end_at:%Y-%m-%dT%H:%M:%SZ}"
        )
    return start_at, end_at


MAX_HOURS = 24 * 366


def hour_prefixes(start: datetime, end: datetime) -> list[str]:
    """The `YYYY/MM/DD/HH` prefixes of every UTC hour that overlaps [start, end)."""
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    prefixes = []
    while hour < end:
        prefixes.append(hour.strftime("%Y/%m/%d/%H"))
        hour += timedelta(hours=1)
    if len(prefixes) > MAX_HOURS:
        raise ValueError(f"the range spans {len(prefixes)} hours; at most {MAX_HOURS} (a year)")
    return prefixes


# --- reading the bucket --------------------------------------------------------------


class Missing(Exception):
    """An object vanished between listing and reading it (a compaction ran meanwhile)."""


class Bucket:
    """The bucket through boto3: list a prefix, get an object's bytes."""

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name

    def listed(self, prefix: str, start_after: str = "") -> Iterator[dict[str, Any]]:
        """The listing's entries (Key, ETag, Size, LastModified) under `prefix`, in key
        order, after `start_after` if given."""
        extra = {"StartAfter": start_after} if start_after else {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix, **extra):
            yield from page.get("Contents", [])

    def list(self, prefix: str) -> list[str]:
        return list(self.etags(prefix))

    def etags(self, prefix: str) -> dict[str, str]:
        """Each key under `prefix` with its ETag, in key order."""
        return {item["Key"]: item.get("ETag", "") for item in self.listed(prefix)}

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise Missing(key) from None

    def get_changed(self, key: str, etag: str | None) -> tuple[bytes | None, str]:
        """(bytes, ETag) of `key`, or (None, `etag`) when it still has that ETag (a 304)."""
        from botocore.exceptions import ClientError

        try:
            answer = self.client.get_object(Bucket=self.name, Key=key, **({"IfNoneMatch": etag} if etag else {}))
        except self.client.exceptions.NoSuchKey:
            raise Missing(key) from None
        except ClientError as exc:
            if etag and exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 304:
                return None, etag
            raise
        return answer["Body"].read(), answer.get("ETag", "")


# --- bytes already on this machine ---------------------------------------------------

_MD5 = re.compile(r'^"?([0-9a-f]{32})"?$')
_PLAIN_KEY_SEGMENT = re.compile(r"[^%\x00]+")
CACHE_LIMIT = 2 * 1024**3  # bytes an object cache keeps; the least recently used go first


def md5_of(etag: str) -> str | None:
    """The MD5 an ETag states (a single PUT's, unencrypted or SSE-S3), else None: a
    multipart or SSE-KMS ETag says nothing a local file can be checked against."""
    match = _MD5.match(etag.lower())
    return match.group(1) if match else None


class LocalCopies:
    """Where an object's bytes may already be on this machine, so that a query fetches
    only what is new: the saved-logs folder the stack keeps (init/bucket_mirror.py's copy,
    `<dir>/<bucket>/<key>`) and a cache of fetched objects named by their MD5, where a
    merged part may also have a columnar copy (`<MD5><suffix>`, keep_columnar).

    The listing stays the truth: a key is looked up with the ETag the listing gave, and a
    file serves it only when its bytes have that MD5 (a columnar copy: when its name has
    it). A deleted object is not listed, a replaced one has another ETag: neither is ever
    served from here.
    """

    def __init__(self, bucket: str, saved: Path | None = None, cache: Path | None = None) -> None:
        self.saved = saved / bucket if saved else None
        self.cache = cache
        self.kept = 0
        # Beside the stack the saved logs get every object within seconds: a fetched object
        # is cached only without them. The stack's cache holds the merged parts
        # compact_hours.py wrote, read before the saved logs have them (query/README.md).
        self.keeps_fetched = saved is None

    def find(self, key: str, etag: str, columnar: str | None = None) -> bytes | None:
        """The object's bytes from this machine, or None; with `columnar` (a suffix), its
        columnar copy first, when the cache has one (keep_columnar)."""
        digest = md5_of(etag)
        if digest is None:
            return None
        if columnar and self.cache is not None:
            body = _whole_parquet(self.cache / (digest + columnar))
            if body is not None:
                return body
        for path in (self._saved_path(key), self.cache / digest if self.cache else None):
            if path is None:
                continue
            try:
                body = path.read_bytes()
            except OSError:
                continue
            if hashlib.md5(body).hexdigest() == digest:  # noqa: S324 - S3's ETag is an MD5
                if path.parent == self.cache:
                    _touch(path)
                return body
        return None

    def keep(self, etag: str, body: bytes) -> None:
        """Cache a fetched object under its MD5, if it is the ETag (atomically: a reader
        sees the whole file or none)."""
        digest = md5_of(etag)
        if self.cache is None or digest is None or hashlib.md5(body).hexdigest() != digest:  # noqa: S324
            return
        self.cache.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".caching-", dir=self.cache)
        with os.fdopen(handle, "wb") as file:
            file.write(body)
        Path(temporary).replace(self.cache / digest)
        self.kept += len(body)

    def keep_columnar(self, etag: str, suffix: str, write: Callable[[Path, Path], None]) -> bool:
        """Beside a kept object, a columnar copy `write(object file, target)` makes, named by
        the object's MD5 and `suffix` (atomically). Whether there is one now."""
        digest = md5_of(etag)
        if self.cache is None or digest is None or not (self.cache / digest).is_file():
            return False
        handle, temporary = tempfile.mkstemp(prefix=".caching-", suffix=".parquet", dir=self.cache)
        os.close(handle)
        try:
            write(self.cache / digest, Path(temporary))
            self.kept += Path(temporary).stat().st_size
            Path(temporary).replace(self.cache / (digest + suffix))
        finally:
            Path(temporary).unlink(missing_ok=True)
        return True

    def trim(self, limit: int = CACHE_LIMIT) -> None:
        """Remove the least recently used cached objects past `limit` bytes, once this
        reader or writer kept some (one that kept none may have the cache read-only)."""
        if self.cache is None or not self.kept or not self.cache.is_dir():
            return
        entries = []
        for path in self.cache.iterdir():
            try:
                info = path.stat()
            except OSError:
                continue
            entries.append((info.st_mtime, info.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= limit:
                break
            path.unlink(missing_ok=True)
            total -= size

    def _saved_path(self, key: str) -> Path | None:
        # the mirror keeps a key as folders when every segment is plain (it encodes others)
        segments = key.split("/")
        if self.saved is None or not all(_PLAIN_KEY_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments):
            return None
        return self.saved.joinpath(*segments)


PARQUET_MAGIC = b"PAR1"  # a Parquet file's first and last four bytes


def _whole_parquet(path: Path) -> bytes | None:
    """A cached columnar copy's bytes, when they are a whole Parquet file. It cannot be
    checked against the ETag: it is trusted as keep_columnar wrote it, from the object's
    verified copy, under that copy's MD5."""
    try:
        body = path.read_bytes()
    except OSError:
        return None
    if len(body) < 12 or not (body.startswith(PARQUET_MAGIC) and body.endswith(PARQUET_MAGIC)):
        return None
    _touch(path)
    return body


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):  # a concurrent trim removed it: still served
        os.utime(path)


def read_object(
    bucket: Bucket, key: str, etag: str | None, local: LocalCopies | None, columnar: str | None = None
) -> tuple[bytes, bool]:
    """An object's bytes, from this machine when a verified copy is there (or with
    `columnar`, a columnar copy: Parquet bytes); (bytes, local?)."""
    if local is not None and etag:
        body = local.find(key, etag, columnar)
        if body is not None:
            return body, True
    body = bucket.get(key)
    if local is not None and etag and local.keeps_fetched:
        local.keep(etag, body)
    return body, False


def plain(body: bytes) -> bytes:
    """An object's JSON Lines, gunzipped when it is gzip (by its bytes, not its name)."""
    if body[:2] == GZIP_MAGIC:
        body = gzip.decompress(body)
    if body and not body.endswith(b"\n"):
        body += b"\n"
    return body


GZIP_MAGIC = b"\x1f\x8b"
# A gzip member holding one newline: after each gzip object, so the last line of one
# object never runs into the first of the next (concatenated members are one stream).
GZIP_NEWLINE = gzip.compress(b"\n", mtime=0)


@dataclass
class Sink:
    """Where fetched lines go: plain objects to one file, gzip objects (still compressed,
    DuckDB inflates them faster than Python) to another."""

    plain: BinaryIO
    gzip: BinaryIO

    def write(self, body: bytes) -> int:
        if body[:2] == GZIP_MAGIC:
            self.gzip.write(body)
            self.gzip.write(GZIP_NEWLINE)
        else:
            self.plain.write(body)
            if body and not body.endswith(b"\n"):
                self.plain.write(b"\n")
        return len(body)


class Sinks:
    """Objects spread over several sinks in turn (one file per core: DuckDB inflates a
    gzip file on one thread); with a `folder`, Parquet bytes each to a file of their own
    there (`files`)."""

    def __init__(self, sinks: Sequence[Sink], folder: Path | None = None) -> None:
        self.sinks = list(sinks)
        self.written = 0
        self.folder = folder
        self.files: list[Path] = []

    def write(self, body: bytes) -> int:
        if self.folder is not None and body[:4] == PARQUET_MAGIC:
            path = self.folder / f"columnar-{len(self.files)}.parquet"
            path.write_bytes(body)
            self.files.append(path)
            return len(body)
        sink = self.sinks[self.written % len(self.sinks)]
        self.written += 1
        return sink.write(body)


def manifest_objects(manifest: dict[str, Any] | None) -> list[str]:
    """The compacted objects a manifest names, in order: `objects` (rolling compaction
    writes one per pass), or the single `object` of manifests written before it."""
    if manifest is None:
        return []
    if "objects" in manifest:
        return list(manifest["objects"])
    return [manifest["object"]]


def objects_to_read(
    keys: Iterable[str], manifest: dict[str, Any] | None, window: tuple[datetime, datetime] | None = None
) -> list[str]:
    """Which listed keys of one hour hold its lines, given its compaction manifest (if any).

    The manifest's objects replace its sources; other compacted objects are leftovers of an
    earlier or unfinished run and are skipped; everything else arrived after the compaction.
    The manifest's objects are read even when the listing predates them (a compaction
    wrote them between the listing and the manifest's read). With a `window` [start, end),
    a manifest object whose time range (compact_hours.time_range) lies outside it is left
    out: none of its lines could be in the answer.
    """
    replaced = set(manifest["sources"]) if manifest else set()
    wanted = [key for key in manifest_objects(manifest) if window is None or _may_overlap(manifest, key, window)]
    wanted += [key for key in sorted(keys) if function_object(key) and key not in replaced]
    return wanted


def function_object(key: str) -> bool:
    """Whether the function wrote this object: not a compaction's manifest or merged part,
    nor another file whose name starts with `_` or `.`."""
    name = key.rsplit("/", 1)[-1]
    return not name.startswith(("_", ".")) and COMPACTED_MARK not in name


def _may_overlap(manifest: dict[str, Any], key: str, window: tuple[datetime, datetime]) -> bool:
    span = (manifest.get("ranges") or {}).get(key)
    try:
        earliest, latest = parse_instant(span[0]), parse_instant(span[1])
    except (TypeError, IndexError, KeyError, ValueError):
        return True  # no range (a manifest from before ranges): read it
    # a second's slack each side: the tools' clocks and DuckDB's rounding never matter
    return latest >= window[0] - SLACK and earliest < window[1] + SLACK


SLACK = timedelta(seconds=1)


def _is_manifest(value: Any) -> bool:
    if not isinstance(value, dict) or not isinstance(value.get("sources"), list):
        return False
    objects = value["objects"] if "objects" in value else [value.get("object")]
    return (
        isinstance(objects, list)
        and all(isinstance(k, str) for k in objects)
        and all(isinstance(k, str) for k in value["sources"])
    )


def read_manifest(
    bucket: Bucket, prefix: str, keys: Iterable[str], known: dict[str, tuple[str, Any]] | None = None
) -> dict[str, Any] | None:
    """The hour's compaction manifest, if listed. With `known` (key -> (ETag, manifest)),
    one that has not changed since is not read again: a rolling compactor's manifest names
    every source of the hour (about 1.6 MB at 200 req/s), and a long-lived reader asks often."""
    key = prefix + MANIFEST_NAME
    if key not in keys:
        return None
    cached = known.get(key) if known is not None else None
    try:
        if known is None:
            body, etag = bucket.get(key), ""
        else:
            body, etag = bucket.get_changed(key, cached[0] if cached else None)
    except Missing:
        return None
    if body is None and cached:
        return cached[1]
    try:
        manifest = json.loads(body or b"")
    except ValueError:
        manifest = None
    if not _is_manifest(manifest):
        raise Failure(f"s3://{bucket.name}/{key} is not a compaction manifest")
    if known is not None:
        known[key] = (etag, manifest)
    return manifest


@dataclass
class Fetched:
    """What a fetch read: counts for the user, and where the lines went."""

    objects: int = 0
    bytes: int = 0
    local: int = 0  # objects read from this machine (saved logs, cache), not from S3
    prefixes: int = 0
    seconds: float = 0.0
    retried_hours: list[str] = field(default_factory=list)


def fetch_prefixes(
    bucket: Bucket,
    prefixes: Sequence[str],
    sink: Sink | Sinks,
    workers: int = 16,
    attempts: int = 5,
    local: LocalCopies | None = None,
    window: tuple[datetime, datetime] | None = None,
    columnar: str | None = None,
) -> Fetched:
    """Write the JSON Lines of every object under `prefixes` (each `.../HH/`) to `sink`.

    Lists the hours in parallel, then gets their objects in parallel. An hour is written
    only once all of its objects were read; if one vanished meanwhile (a compaction
    deleted it after writing its replacement), that hour is listed and read again.
    Objects with a verified copy in `local` are read from there (with `columnar`, a
    cached columnar copy first: give a `sink` that takes Parquet bytes); with a `window`,
    compacted objects whose lines all lie outside it are not read.
    """
    started = time.perf_counter()
    fetched = Fetched(prefixes=len(prefixes))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = list(prefixes)
        for attempt in range(attempts):
            listings = list(pool.map(bucket.etags, pending))
            manifests = list(pool.map(lambda p, k: read_manifest(bucket, p, k), pending, listings))
            plans = {p: (objects_to_read(k, m, window), k) for p, k, m in zip(pending, listings, manifests)}
            futures = {
                p: [pool.submit(read_object, bucket, key, etags.get(key), local, columnar) for key in keys]
                for p, (keys, etags) in plans.items()
            }
            again = []
            for prefix, hour in futures.items():
                try:
                    bodies = [future.result() for future in hour]
                except Missing:
                    again.append(prefix)
                    continue
                for body, here in bodies:
                    fetched.bytes += sink.write(body)
                    fetched.local += here
                fetched.objects += len(bodies)
            fetched.retried_hours.extend(again)
            pending = again
            if not pending:
                break
            time.sleep(0.05 * (attempt + 1))
        if pending:
            raise Failure(f"objects kept vanishing while reading hours {', '.join(pending)}; try again")
    fetched.seconds = time.perf_counter() - started
    return fetched


# --- target: flags, client, errors ----------------------------------------------------


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the bucket is: the flags logs_query.py and compact_hours.py share."""
    env = os.environ.get
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--endpoint-url",
        default=env("AWS_ENDPOINT_URL") or DEFAULT_ENDPOINT,
        help="emulator endpoint (default: $AWS_ENDPOINT_URL, else %(default)s)",
    )
    target.add_argument("--aws", action="store_true", help="real AWS: no endpoint, your credential chain")
    parser.add_argument(
        "--region",
        default=env("AWS_REGION") or env("AWS_DEFAULT_REGION") or "us-east-1",
        help="default: $AWS_REGION, else $AWS_DEFAULT_REGION, else us-east-1",
    )
    parser.add_argument("--bucket", default=env("BUCKET_NAME") or "nginx-accesslog", help="$BUCKET_NAME")
    parser.add_argument("--workers", type=_workers, default=16, help="parallel S3 requests (default %(default)s)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def add_local_arguments(parser: argparse.ArgumentParser) -> None:
    """Where verified copies of objects may already be (LocalCopies)."""
    env = os.environ.get
    parser.add_argument(
        "--saved-logs",
        type=Path,
        default=env("PIPELINE_DATA_DIR") or None,
        help="the stack's saved-logs folder: objects whose copy there matches their ETag are read from it "
        "(default: $PIPELINE_DATA_DIR)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=env("QUERY_CACHE_DIR") or None,
        help="keep fetched objects here, by ETag, so a repeated query fetches only new ones "
        "(default: $QUERY_CACHE_DIR; none)",
    )


def local_copies(args: argparse.Namespace) -> LocalCopies | None:
    if not args.saved_logs and not args.cache_dir:
        return None
    return LocalCopies(args.bucket, args.saved_logs, args.cache_dir)


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 128:
        raise argparse.ArgumentTypeError("must be 1 to 128")
    return value


def s3_client(endpoint: str | None, region: str, workers: int) -> Any:
    """An S3 client for the emulator (dummy credentials if none are set) or for AWS."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(region_name=region)
    credentials = {}
    if endpoint and session.get_credentials() is None:
        credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=workers,
    )
    return session.client("s3", endpoint_url=endpoint, config=config, **credentials)


def describe(exc: BaseException, bucket: str) -> str:
    """One line for any failure, with what to do where we know it."""
    if isinstance(exc, Failure):
        return str(exc)
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return "no AWS credentials found: configure them (aws configure, AWS_PROFILE) or use an emulator"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"):
        return f"cannot reach S3: {exc} (is the stack running? ./start.sh)"
    if name == "ModuleNotFoundError":
        return f"{exc}: install the pinned packages (pip install -r query/requirements.txt)"
    error = getattr(exc, "response", {}).get("Error", {})
    if error.get("Code") in ("NoSuchBucket", "404", "NotFound"):
        return f"no bucket {bucket}: provision first (./start.sh, or init/init_resource.py), or pass --bucket"
    if error.get("Code"):
        return f"{error['Code']}: {error.get('Message') or exc}"
    return f"{name}: {str(exc).splitlines()[0] if str(exc) else ''}"
