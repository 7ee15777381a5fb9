"""Stand-in for fluentd (in_tail + fluent-plugin-kinesis `kinesis_streams`), for tests only.

Replaces: fluentd as configured by fluentd/conf/fluent.conf, which needs Docker here
(no RubyGems). Reproduces what the pipeline relies on:
- in_tail: follows the file from its head, ships complete lines only, keeps a position
  file (inode and offset) so a restart resumes where it stopped, and on rotation reads
  the old inode to its end before the new file (`follow_inodes true`).
- kinesis_streams: PutRecords batches of at most 500 records and 5 MB, a random
  partition key per record, record data `{"message":"<line>"}\\n` (the json formatter's
  bytes, checked against captured fluentd records in tests/init/test_envelopes.py),
  failed records retried with exponential backoff, nothing dropped
  (`drop_failed_records_after_batch_request_retries false`, `retry_forever true`).
- the buffer: lines are flushed every `flush_interval` (fluent.conf: 1 s).

Does not cover: fluentd's file buffer surviving a crash between read and put (here the
position advances only after a successful put, which gives the same at-least-once
result), multi-worker setups, compression, fluentd's own metrics.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.events import fluentd_message

MAX_RECORDS = 500
MAX_BYTES = 5 * 1024 * 1024


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
        flush_interval: float = 1.0,
        max_backoff: float = 8.0,
    ) -> None:
        self.kinesis = kinesis
        self.stream = stream
        self.path = path
        self.pos_file = pos_file
        self.flush_interval = flush_interval
        self.max_backoff = max_backoff
        self.shipped = 0
        self.put_calls = 0
        self.failed_attempts = 0
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
    def _read_from(path: Path, position: Position) -> tuple[list[str], Position]:
        """Complete lines after `position` in `path` (at most 5 MB), and the new position."""
        with path.open("rb") as handle:
            handle.seek(position.offset)
            data = handle.read(MAX_BYTES)
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
                lines, after = self._read_from(rotated, position)
                if lines:
                    return lines, after
            position = None
        if position is None or stat.st_size < position.offset:  # new or truncated: from the head
            position = Position(stat.st_ino, 0)
        return self._read_from(self.path, position)

    # --- shipping -------------------------------------------------------------------

    def _put(self, lines: list[str]) -> None:
        """PutRecords in API-sized batches; retry failed records until they land."""
        pending = [fluentd_message(line) for line in lines]
        while pending:
            batch, size = [], 0
            while pending and len(batch) < MAX_RECORDS and size + len(pending[0]) <= MAX_BYTES:
                size += len(pending[0])
                batch.append(pending.pop(0))
            self._put_batch(batch)

    def _put_batch(self, batch: list[bytes]) -> None:
        backoff = 0.1
        while batch:
            self.put_calls += 1
            try:
                response = self.kinesis.put_records(
                    StreamName=self.stream,
                    Records=[{"Data": data, "PartitionKey": uuid.uuid4().hex} for data in batch],
                )
            except Exception:  # the whole call failed: fluentd returns the chunk to its buffer
                self.failed_attempts += 1
                failed = batch
            else:
                results = response["Records"]
                failed = [data for data, result in zip(batch, results, strict=True) if "ErrorCode" in result]
                self.shipped += len(batch) - len(failed)
                if failed:
                    self.failed_attempts += 1
            if not failed:
                return
            if self._stop.wait(backoff):
                raise _Stopped
            backoff = min(backoff * 2, self.max_backoff)
            batch = failed

    def ship_once(self) -> int:
        """Ship every complete line written so far; return how many."""
        total = 0
        while True:
            lines, position = self._read_complete_lines()
            if position is None or not lines:
                if position is not None:
                    self._save_position(position)
                return total
            self._put(lines)
            self._save_position(position)  # only after the records landed
            total += len(lines)

    # --- background -----------------------------------------------------------------

    def start(self) -> Shipper:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="shipper", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.ship_once()
            except _Stopped:
                return

    def stop(self) -> None:
        """Stop like fluentd's shutdown without flush_at_shutdown: unsent lines stay in the file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


class _Stopped(Exception):
    pass
