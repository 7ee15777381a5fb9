"""fluentd/tools/drain_status.sh says what fluentd has not yet handed to Kinesis.

`./start.sh down` stops fluentd only once the script says `unread=0 buffered=0`, so a
wrong answer either cuts fluentd off with lines still unread (they would wait for the next
start) or waits for nothing until DRAIN_TIMEOUT. The script runs here with bash on real
files laid out as fluentd 1.x writes them: the in_tail pos_file ("<path>\\t<pos %016x>\\t
<inode %016x>", unwatched entries with pos ffffffffffffffff; fluentd's
in_tail/position_file.rb) and the file buffer's chunks (buffer.b<id>.log / buffer.q<id>.log,
each with a .log.meta; buf_file.rb, where a `path` without `*` is a directory). fluentd itself
does not run here (no Ruby): the files are written by the test in that format.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from support.compose import ROOT, compose
from support.tools import require

SCRIPT = ROOT / "fluentd" / "tools" / "drain_status.sh"
UNWATCHED = 0xFFFFFFFFFFFFFFFF


class Fluentd:
    """The files drain_status.sh reads, in a temporary folder."""

    def __init__(self, root: Path) -> None:
        self.log = root / "log" / "access.log"
        self.state = root / "state"
        self.pos_file = self.state / "nginx-access.pos"
        self.buffer = self.state / "buffer" / "kinesis"
        self.log.parent.mkdir()
        self.state.mkdir()

    def write_log(self, text: str) -> int:
        """Append lines, as nginx does; returns the log's inode."""
        with self.log.open("a") as file:
            file.write(text)
        return self.log.stat().st_ino

    def record(self, pos: int, inode: int, path: Path | None = None) -> None:
        """One pos_file entry, in fluentd's fixed-width format."""
        with self.pos_file.open("a") as file:
            file.write(f"{path or self.log}\t{pos:016x}\t{inode:016x}\n")

    def chunk(self, name: str, size: int, folder: Path | None = None) -> None:
        folder = folder or self.buffer
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x" * size)
        (folder / f"{name}.meta").write_bytes(b"m" * 77)  # never counted

    def status(self) -> dict[str, int]:
        result = subprocess.run(
            ["bash", str(SCRIPT)],
            capture_output=True,
            text=True,
            timeout=10,
            env={"PATH": os.environ["PATH"], "ACCESS_LOG_PATH": str(self.log), "FLUENTD_STATE_DIR": str(self.state)},
        )
        assert result.returncode == 0, result.stderr
        assert re.fullmatch(r"unread=\d+ buffered=\d+\n", result.stdout), result.stdout
        return {k: int(v) for k, v in (field.split("=") for field in result.stdout.split())}


@pytest.fixture
def fluentd(tmp_path: Path) -> Fluentd:
    return Fluentd(tmp_path)


LINE = '127.0.0.1 - - [27/Nov/2026:08:00:01 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/8.5.0" "-"\n'


def test_nothing_yet_is_nothing_to_wait_for(fluentd):
    # given no access log (nginx never served a request) and no state
    assert fluentd.status() == {"unread": 0, "buffered": 0}


def test_a_log_fluentd_has_not_seen_is_unread_from_its_first_line(fluentd):
    # given a log and no pos_file: read_from_head makes fluentd read all of it
    fluentd.write_log(LINE * 3)
    assert fluentd.status() == {"unread": 3 * len(LINE), "buffered": 0}


def test_unread_is_what_follows_the_recorded_position(fluentd):
    inode = fluentd.write_log(LINE * 5)
    fluentd.record(2 * len(LINE), inode)
    assert fluentd.status()["unread"] == 3 * len(LINE)


def test_read_to_the_end_is_zero(fluentd):
    inode = fluentd.write_log(LINE * 5)
    fluentd.record(5 * len(LINE), inode)
    assert fluentd.status() == {"unread": 0, "buffered": 0}


def test_a_rotated_log_counts_the_new_file_only(fluentd):
    # given the old file read to its end and then renamed; nginx re-created the log (a new
    # inode) and wrote two lines that fluentd has not recorded yet
    old_inode = fluentd.write_log(LINE * 4)
    fluentd.record(4 * len(LINE), old_inode)
    fluentd.log.rename(fluentd.log.with_name("access.log.1"))
    new_inode = fluentd.write_log(LINE * 2)
    assert new_inode != old_inode
    # then the new file is unread from its start, whatever the old entry says
    assert fluentd.status()["unread"] == 2 * len(LINE)
    # and once fluentd adds the new inode's entry (same path, follow_inodes), it counts
    fluentd.record(len(LINE), new_inode)
    assert fluentd.status()["unread"] == len(LINE)


def test_an_unwatched_entry_is_not_a_position(fluentd):
    # given an entry fluentd stopped watching (pos ffffffffffffffff) whose inode the
    # current log now has (inode numbers are reused): fluentd starts that file afresh
    inode = fluentd.write_log(LINE * 2)
    fluentd.record(UNWATCHED, inode)
    assert fluentd.status()["unread"] == 2 * len(LINE)
    # and a watched entry for it after the unwatched one is the position
    fluentd.record(2 * len(LINE), inode)
    assert fluentd.status()["unread"] == 0


def test_positions_beyond_4_gib_are_parsed_as_64_bit_hex(fluentd):
    # given a 5 GiB log (sparse) read to 100 bytes before its end
    fluentd.write_log("")
    size = 5 * 2**30
    os.truncate(fluentd.log, size)
    inode = fluentd.log.stat().st_ino
    fluentd.record(size - 100, inode)
    assert fluentd.status()["unread"] == 100


def test_uppercase_hex_and_other_files_entries_are_read_right(fluentd):
    inode = fluentd.write_log(LINE * 3)
    fluentd.record(0, inode + 1, path=fluentd.log.with_name("other.log"))  # another inode
    with fluentd.pos_file.open("a") as file:
        file.write(f"{fluentd.log}\t{len(LINE):016X}\t{inode:016X}\n")
        file.write("a broken line\n")
    assert fluentd.status()["unread"] == 2 * len(LINE)


def test_a_truncated_log_is_read_again_from_its_start(fluentd):
    inode = fluentd.write_log(LINE * 2)
    fluentd.record(10 * len(LINE), inode)  # position past the end: the file was truncated
    assert fluentd.status()["unread"] == 2 * len(LINE)


def test_buffered_counts_every_chunk_but_not_their_metadata(fluentd):
    # given a staged and a queued chunk, one left by an older layout directly under
    # buffer/, and a file that is no chunk
    fluentd.chunk("buffer.b5f0c1a2b3c4d5e6f708192a3b4c5d6e7.log", 1000)
    fluentd.chunk("buffer.q5f0c1a2b3c4d5e6f708192a3b4c5d6e8.log", 234)
    fluentd.chunk("buffer.b5f0c1a2b3c4d5e6f708192a3b4c5d6e9.log", 5, folder=fluentd.state / "buffer")
    (fluentd.buffer / "notes.txt").write_text("not a chunk")
    assert fluentd.status() == {"unread": 0, "buffered": 1239}


def test_reads_where_the_compose_stack_puts_things():
    # the container's environment names the same files as fluent.conf, and start.sh runs
    # the script where compose mounts it
    fluentd = compose()["services"]["fluentd"]
    conf = (ROOT / "fluentd" / "conf" / "fluent.conf").read_text()
    assert fluentd["environment"]["ACCESS_LOG_PATH"] == "/var/log/nginx/pipeline/access.log"
    assert fluentd["environment"]["FLUENTD_STATE_DIR"] == "/fluentd/state"
    assert "/nginx-access.pos" in conf and "/buffer/kinesis" in conf
    assert "./fluentd/tools:/fluentd/tools:ro" in fluentd["volumes"]
    assert "bash /fluentd/tools/drain_status.sh" in (ROOT / "start.sh").read_text()


def test_shellcheck_clean_and_strict():
    shellcheck = require("shellcheck", "lints the shell scripts")
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert SCRIPT.read_text().startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in SCRIPT.read_text()
