"""Stand-in for fluentd (in_tail + fluent-plugin-kinesis 3.6.1), for tests and the benchmark.

Replaces: fluentd as configured by fluentd/conf/fluent.conf, which needs Docker here
(no RubyGems). Its output type and flush timers are read from fluent.conf (OUTPUT,
FLUSH_INTERVAL, FLUSH_THREAD_INTERVAL), so it ships the way the stack does. Reproduces
what the pipeline relies on:
- in_tail: follows the file from its head, ships complete lines only, keeps a position
  file (inode and offset) so a restart resumes where it stopped, and on rotation reads
  the old inode to its end before the new file (`follow_inodes true`).
- kinesis_streams: PutRecords batches of at most 500 records and 5 MB, a random
  partition key per record, record data `{"message":"<line>"}\\n` (the json formatter's
  bytes, checked against captured fluentd records in tests/init/test_envelopes.py),
  failed records retried with exponential backoff up to `retries_on_batch_request`
  times; then, with `drop_failed_records_after_batch_request_retries false`, the plugin
  raises and fluentd retries the WHOLE chunk (`retry_forever true`), so the records of it
  that had landed are stored again (api.rb `give_up_retries`). A put that raises (a
  timeout, possibly after Kinesis stored the records) fails the chunk the same way. Both
  are how a line reaches the bucket twice.
- kinesis_streams_aggregated (the stack's output): the chunk is split into batches of at
  most 100,000 records whose sizes (each record + 10 bytes) sum to at most 1 MiB less
  25 + 2 x the key length; each batch is ONE Kinesis record, put with PutRecords alone:
  KPL bytes (magic, protobuf with partition key table ["a", key] and every record at
  index 1, MD5), a new random 32-hex-digit key per call. A failed put sends that whole
  aggregated record again (the plugin's `retry_records` for :streams_aggregated), with a
  new key, up to `retries_on_batch_request` times, then the chunk as above; the bytes are
  checked against a captured record in tests/pipeline/test_stand_ins.py.
  (aws-fluent-plugin-kinesis: out_kinesis_streams_aggregated.rb, kinesis_helper/api.rb,
  kinesis_helper/aggregator.rb.)
- the buffer: a chunk opens with its first line and is flushed once it is
  `flush_interval` old, checked every `flush_thread_interval` (fluentd's flush thread);
  a chunk reaching `chunk_limit_size` is flushed at the next check. A failed chunk is
  sent again after `retry_wait`, doubling up to `retry_max_interval`. Retries inside one
  batch wait 0.1 s doubling (the plugin: 0.3 s doubling), to keep tests short.

Does not cover: fluentd's file buffer surviving a crash between read and put (here the
position advances only after a successful put, which gives the same at-least-once
result), multi-worker setups, compression, fluentd's own metrics.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.events import fluentd_message, kpl_aggregate
from support.fluentd_conf import fluent_conf, parse_size

MAX_RECORDS = 500  # kinesis_streams: PutRecords' limits
MAX_BYTES = 5 * 1024 * 1024
AGGREGATED_MAX_RECORDS = 100_000  # kinesis_streams_aggregated: BatchRequestLimitCount
AGGREGATED_MAX_BYTES = 1024 * 1024  # BatchRequestLimitSize, less AGGREGATE_OFFSET + 2 x key length
AGGREGATE_OFFSET = 25  # Aggregator::Mixin::AggregateOffset
RECORD_OFFSET = 10  # Aggregator::Mixin::RecordOffset, counted per line
OUTPUTS = ("kinesis_streams", "kinesis_streams_aggregated")


def _stack_settings() -> tuple[str, float, float, int]:
    """fluent.conf's output type, flush_interval, flush_thread_interval, chunk_limit_size."""
    (match,) = fluent_conf().find("match")
    buffer = match.one("buffer").params
    return (
        match.params["@type"],
        float(buffer["flush_interval"]),
        float(buffer.get("flush_thread_interval", "1.0")),
        parse_size(buffer["chunk_limit_size"]),
    )


def _seconds(text: str) -> float:
    """fluentd's `1s`, `30s`, `2m` or a bare number of seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


def _retry_settings() -> tuple[int, float, float]:
    """fluent.conf's retries_on_batch_request, and the buffer's retry_wait and retry_max_interval;
    the stand-in reproduces only the no-drop setting, so it insists on it."""
    (match,) = fluent_conf().find("match")
    if match.params.get("drop_failed_records_after_batch_request_retries") != "false":
        raise ValueError("the stand-in reproduces drop_failed_records_after_batch_request_retries false only")
    buffer = match.one("buffer").params
    return (
        int(match.params.get("retries_on_batch_request", "8")),
        _seconds(buffer.get("retry_wait", "1s")),
        _seconds(buffer.get("retry_max_interval", "30s")),
    )


OUTPUT, FLUSH_INTERVAL, FLUSH_THREAD_INTERVAL, CHUNK_LIMIT_SIZE = _stack_settings()
RETRIES_ON_BATCH_REQUEST, RETRY_WAIT, RETRY_MAX_INTERVAL = _retry_settings()


def random_partition_key() -> str:
    """The plugin's default key for an aggregated record: SecureRandom.hex(16)."""
    return secrets.token_hex(16)


def aggregated_batches(records: list[bytes], key_length: int = 32) -> list[list[bytes]]:
    """How kinesis_streams_aggregated splits a chunk (split_to_batches with its limits)."""
    limit = AGGREGATED_MAX_BYTES - (AGGREGATE_OFFSET + 2 * key_length)
    batches: list[list[bytes]] = []
    batch: list[bytes] = []
    size = 0
    for data in records:
        record_size = len(data) + RECORD_OFFSET
        if batch and (len(batch) + 1 > AGGREGATED_MAX_RECORDS or size + record_size > limit):
            batches.append(batch)
            batch, size = [], 0
        batch.append(data)
        size += record_size
    if batch:
        batches.append(batch)
    return batches


@dataclass
class Position:
    inode: int
    offset: int


class Shipper:
    """Tail `path`, put its lines into `stream`. Use start()/stop(), or ship_once()."""

    def __init__(
        self,
        kinesis: Any,
        stream: str,
        path: Path,
        pos_file: Path,
        flush_interval: float = FLUSH_INTERVAL,
        max_backoff: float = 8.0,
        *,
        output: str = OUTPUT,
        flush_thread_interval: float = FLUSH_THREAD_INTERVAL,
        chunk_limit_size: int = CHUNK_LIMIT_SIZE,
        partition_key: Callable[[], str] = random_partition_key,
        retries_on_batch_request: int = RETRIES_ON_BATCH_REQUEST,
        retry_wait: float = RETRY_WAIT,
    ) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}")
        self.kinesis = kinesis
        self.stream = stream
        self.path = path
        self.pos_file = pos_file
        self.flush_interval = flush_interval
        self.flush_thread_interval = min(flush_thread_interval, flush_interval)
        self.chunk_limit_size = chunk_limit_size
        self.output = output
        self.partition_key = partition_key
        self._key_length = len(partition_key())  # the plugin sizes its limit from one key (configure)
        self.max_backoff = max_backoff
        self.retries_on_batch_request = retries_on_batch_request
        self.retry_wait = retry_wait
        self.chunk_retries = 0  # chunks sent again whole (the plugin gave up on a batch, or a put raised)
        self.shipped = 0  # lines stored in Kinesis
        self.put_calls = 0  # PutRecords calls
        self.stored_records = 0  # Kinesis records stored (one per line, or one per aggregated batch)
        self.failed_attempts = 0
        self.put_timings: list[tuple[float, float]] = []  # (wall-clock end, seconds) of each PutRecords
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rotated: list[tuple[int, int]] = []  # (inode, fd) of rotated files not yet read to the end

    # --- position file, like in_tail's pos_file ---------------------------------------

    def _load_position(self) -> Position | None:
        try:
            inode, offset = self.pos_file.read_text().split()
        except (FileNotFoundError, ValueError):
            return None
        return Position(int(inode), int(offset))

    def _save_position(self, position: Position) -> None:
        temporary = self.pos_file.with_suffix(".tmp")
        temporary.write_text(f"{position.inode} {position.offset}\n")
        temporary.replace(self.pos_file)

    # --- reading --------------------------------------------------------------------

    @staticmethod
    def _read_from(path: Path, position: Position, limit: int = MAX_BYTES) -> tuple[list[str], Position]:
        """Complete lines after `position` in `path` (at most `limit` bytes), and the new position."""
        with path.open("rb") as handle:
            handle.seek(position.offset)
            data = handle.read(limit)
        end = data.rfind(b"\n")
        if end < 0:
            return [], position
        chunk = data[: end + 1]
        lines = [raw.removesuffix(b"\r").decode("utf-8", "replace") for raw in chunk.split(b"\n")[:-1]]
        return lines, Position(position.inode, position.offset + len(chunk))

    def _rotated_file(self, inode: int) -> Path | None:
        """The file that now holds `inode` under another name (access.log.1 after rotation)."""
        for candidate in self.path.parent.iterdir():
            try:
                if candidate != self.path and candidate.stat().st_ino == inode:
                    return candidate
            except FileNotFoundError:
                continue
        return None

    def _read_complete_lines(self) -> tuple[list[str], Position | None]:
        """New complete lines since the saved position, and the position after them."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return [], None
        position = self._load_position()
        if position is not None and position.inode != stat.st_ino:
            # rotated: finish the old inode first (follow_inodes), then the new file
            rotated = self._rotated_file(position.inode)
            if rotated is not None:
                lines, after = self._read_from(rotated, position, self._chunk_bytes())
                if lines:
                    return lines, after
            position = None
        if position is None or stat.st_size < position.offset:  # new or truncated: from the head
            position = Position(stat.st_ino, 0)
        return self._read_from(self.path, position, self._chunk_bytes())

    def _chunk_bytes(self) -> int:
        """How much of the log one chunk takes: the aggregated output's chunk_limit_size."""
        return self.chunk_limit_size if self.output == "kinesis_streams_aggregated" else MAX_BYTES

    def _pending(self) -> bool:
        """True when the log holds a complete line not shipped yet (in_tail has read it)."""
        lines, _ = self._read_complete_lines()
        return bool(lines)

    # --- shipping -------------------------------------------------------------------

    def _timed_put(self, records: list[dict]) -> dict:
        self.put_calls += 1
        started = time.monotonic()
        try:
            return self.kinesis.put_records(StreamName=self.stream, Records=records)
        finally:
            self.put_timings.append((time.time(), time.monotonic() - started))

    def _put(self, lines: list[str]) -> None:
        """PutRecords in API-sized batches; retry failed records until they land."""
        pending = [fluentd_message(line) for line in lines]
        if self.output == "kinesis_streams_aggregated":
            for batch in aggregated_batches(pending, self._key_length):
                self._put_aggregated(batch)
            return
        while pending:
            batch, size = [], 0
            while pending and len(batch) < MAX_RECORDS and size + len(pending[0]) <= MAX_BYTES:
                size += len(pending[0])
                batch.append(pending.pop(0))
            self._put_batch(batch)

    def _put_batch(self, batch: list[bytes]) -> None:
        """PutRecords, then its failed records again, `retries_on_batch_request` times at most."""
        backoff = 0.1
        for attempt in range(self.retries_on_batch_request + 1):
            try:
                response = self._timed_put([{"Data": data, "PartitionKey": uuid.uuid4().hex} for data in batch])
            except Exception as exc:  # the SDK's error leaves the plugin: the chunk fails
                self.failed_attempts += 1
                raise _ChunkFailed from exc
            results = response["Records"]
            failed = [data for data, result in zip(batch, results, strict=True) if "ErrorCode" in result]
            self.shipped += len(batch) - len(failed)
            self.stored_records += len(batch) - len(failed)
            if not failed:
                return
            self.failed_attempts += 1
            if attempt < self.retries_on_batch_request:
                if self._stop.wait(backoff):
                    raise _Stopped
                backoff = min(backoff * 2, self.max_backoff)
                batch = failed
        raise _ChunkFailed

    def _put_aggregated(self, batch: list[bytes]) -> None:
        """One aggregated record; on failure the same lines again, under a new key,
        `retries_on_batch_request` times at most."""
        backoff = 0.1
        for attempt in range(self.retries_on_batch_request + 1):
            key = self.partition_key()
            try:
                response = self._timed_put([{"Data": kpl_aggregate(batch, key), "PartitionKey": key}])
            except Exception as exc:  # the SDK's error leaves the plugin: the chunk fails
                self.failed_attempts += 1
                raise _ChunkFailed from exc
            if "ErrorCode" not in response["Records"][0]:
                self.shipped += len(batch)
                self.stored_records += 1
                return
            self.failed_attempts += 1
            if attempt < self.retries_on_batch_request:
                if self._stop.wait(backoff):
                    raise _Stopped
                backoff = min(backoff * 2, self.max_backoff)
        raise _ChunkFailed

    def _put_chunk(self, lines: list[str]) -> None:
        """Put the chunk; when it fails, fluentd keeps it in its buffer and sends it whole
        again after retry_wait (doubling, retry_forever), landed records included."""
        wait = self.retry_wait
        while True:
            try:
                self._put(lines)
                return
            except _ChunkFailed:
                self.chunk_retries += 1
                if self._stop.wait(wait):
                    raise _Stopped from None
                wait = min(wait * 2, RETRY_MAX_INTERVAL)

    def _ship_chunk(self) -> tuple[int, bool]:
        """Ship one chunk: the complete lines written so far, up to the chunk limit. Return
        how many lines, and whether the chunk was full (more may be waiting)."""
        lines, position = self._read_complete_lines()
        if position is not None and not lines:
            self._save_position(position)
        if position is None or not lines:
            return 0, False
        self._put_chunk(lines)
        self._save_position(position)  # only after the records landed
        size = sum(len(line.encode()) + 1 for line in lines)
        return len(lines), size >= self._chunk_bytes() - 64 * 1024

    def ship_once(self) -> int:
        """Ship every complete line written so far, chunk after chunk; return how many."""
        total = 0
        while True:
            shipped, _ = self._ship_chunk()
            if not shipped:
                return total
            total += shipped

    # --- background -----------------------------------------------------------------

    def start(self) -> Shipper:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="shipper", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        """fluentd's flush thread: every flush_thread_interval, flush the chunk once it is
        flush_interval old (it opened when its first line was read); full chunks at once.
        Lines written while a chunk is being sent open the next chunk."""
        opened: float | None = None
        while not self._stop.wait(self.flush_thread_interval):
            try:
                if opened is None:
                    if self._pending():
                        opened = time.monotonic()
                    continue
                if time.monotonic() - opened >= self.flush_interval:
                    full = True
                    while full and not self._stop.is_set():
                        _, full = self._ship_chunk()
                    opened = time.monotonic() if self._pending() else None
            except _Stopped:
                return

    def stop(self) -> None:
        """Stop like fluentd's shutdown without flush_at_shutdown: unsent lines stay in the file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


class _Stopped(Exception):
    pass


class _ChunkFailed(Exception):
    """The plugin raised out of its write: fluentd returns the chunk to its buffer."""
