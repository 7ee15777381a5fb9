"""The dashboard's query socket (dashboard.py --query-socket) against moto server: the
query tool asked there gives the output it gives alone, sees what landed just before it
asked, and answers from the bucket whatever the dashboard declines."""

from __future__ import annotations

import re
import stat
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dashboard
import logs_query
import pytest
from bucket_reader import LocalCopies
from support.dashboard_data import NOW, write_traffic
from support.query_data import Writer, timed_line

SINCE_3H = ["--from", (NOW - timedelta(hours=3)).isoformat(), "--to", NOW.isoformat()]
SINCE_50M = ["--from", (NOW - timedelta(minutes=50)).isoformat(), "--to", NOW.isoformat()]


class Socket:
    """A dashboard Store over the moto bucket, answering on a Unix socket in `folder`."""

    def __init__(self, s3_client, bucket: str, endpoint: str, folder: Path, clock=lambda: NOW, local=None) -> None:
        self.store = dashboard.Store(logs_query.Bucket(s3_client, bucket), workers=4, clock=clock, local=local)
        target = {"bucket": bucket, "endpoint": endpoint, "region": "us-east-1"}
        self.path = folder / "query" / "query.sock"
        self.server = dashboard.make_query_server(dashboard.QueryService(self.store, target), self.path)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.store.close()


@pytest.fixture
def socket_(s3_client, bucket, aws, tmp_path) -> Iterator[Socket]:
    served = Socket(s3_client, bucket, aws, tmp_path)
    yield served
    served.close()


@pytest.fixture
def writer(handler_module, monkeypatch) -> Writer:
    monkeypatch.setattr(handler_module, "log", lambda *args, **kwargs: None)
    return Writer(handler_module)


def ask(aws: str, capsys, socket_path: Path | str, *args: str) -> tuple[int, str, str]:
    code = logs_query.main(["--endpoint-url", aws, "--socket", str(socket_path), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def both(aws: str, capsys, socket_: Socket, *args: str) -> tuple[tuple[int, str], tuple[int, str], str]:
    """(code, output) through the socket, then from the bucket alone; the socket run's stderr."""
    code, out, err = ask(aws, capsys, socket_.path, *args)
    alone, out_alone, _ = ask(aws, capsys, "", *args)
    return (code, out), (alone, out_alone), err


@pytest.mark.parametrize(
    "args",
    [
        [],  # the summary
        ["--format", "json", "SELECT status, count(*) AS n, max(timestamp) AS newest FROM logs GROUP BY 1 ORDER BY 1"],
        ["--format", "csv", "SELECT * FROM logs ORDER BY timestamp, request_uri, request_id"],
        ["SELECT count(*) AS n, count(DISTINCT request_id) AS ids FROM logs"],
        ["--format", "csv", 'SELECT "errorCode", "rawData", "approximateArrivalTimestamp" FROM errors'],
        ["WITH p AS (SELECT request_uri FROM logs) SELECT count(*) FROM p; SELECT 2 AS last"],
    ],
    ids=["summary", "group-by", "all-rows", "dedupe", "errors", "two-selects"],
)
def test_the_socket_answers_as_the_tool_does_alone(aws, capsys, writer, socket_, args):
    write_traffic(writer)
    # the last 50 minutes from a dashboard that holds nothing yet; then 3 hours, once a
    # window it shows reaches back that far
    for since in (SINCE_50M, SINCE_3H):
        if since is SINCE_3H:
            socket_.store.sync(NOW - timedelta(hours=3))
        through, alone, err = both(aws, capsys, socket_, *since, *args)
        assert through == alone and through[0] == 0
        assert "answered by the dashboard's loaded tables" in err, err
        # where the time went: listings, manifests, reads and the load are parts of the
        # refresh (each rounded to 0.01 s in the note)
        refresh, inside = re.search(r"refresh ([\d.]+) s \(([^)]*)\)", err).groups()
        spent = {name: float(seconds) for name, seconds in re.findall(r"(\w+) ([\d.]+) s", inside)}
        assert spent["listing"] > 0, err
        assert sum(spent.values()) <= float(refresh) + 0.03, err
        assert alone[1].strip()


def test_a_refresh_says_where_its_time_went_and_how_long_it_waited(writer, socket_):
    write_traffic(writer)
    store = socket_.store
    held = threading.Event()

    def hold_the_store() -> None:  # another sync (the page's, another answer's) in progress
        with store.lock:
            held.set()
            threading.Event().wait(0.3)

    other = threading.Thread(target=hold_the_store)
    other.start()
    held.wait()
    spent = store.sync(NOW - timedelta(hours=3))
    other.join()
    assert set(spent) == {"listing", "manifests", "reading", "loading", "waited"}
    assert spent["waited"] >= 0.25 and spent["listing"] > 0 and spent["reading"] > 0, spent
    assert store.reads > 0
    # a sync with nothing to do (its window synced within max_age) spends only the wait
    again = store.sync(NOW - timedelta(hours=3))
    assert again["listing"] == again["reading"] == again["loading"] == 0.0, again


def test_duckdb_checkpoints_only_when_the_dashboard_tidies_after_an_answer(aws, capsys, writer, socket_, monkeypatch):
    store = socket_.store
    # DuckDB's own checkpoints, inside whichever load crosses 16 MiB, are off
    threshold = store.con.execute("SELECT current_setting('checkpoint_threshold')").fetchone()[0]
    assert threshold.endswith("GiB") and float(threshold.split()[0]) >= 64, threshold
    write_traffic(writer)
    monkeypatch.setattr(dashboard, "TIDY_BYTES", 1000)  # this little traffic is due
    assert store.tidy() is None  # nothing loaded yet
    store.sync(NOW - timedelta(hours=3))  # a window of the page's: the range below is held
    tidying, release = threading.Event(), threading.Event()
    tidy = store.tidy

    def held_tidy():  # the checkpoint, held until the answer is in the tool's hands
        tidying.set()
        release.wait(10)
        return tidy()

    monkeypatch.setattr(store, "tidy", held_tidy)
    code, out, err = ask(aws, capsys, socket_.path, *SINCE_3H, "SELECT count(*) AS n FROM logs")
    assert code == 0 and "answered by the dashboard" in err and "302" in out.split(), (out, err)
    assert tidying.wait(10) and store.untidy >= 1000  # the answer went out before the checkpoint
    release.set()
    for _ in range(200):  # the handler's checkpoint, once released
        if store.untidy == 0:
            break
        threading.Event().wait(0.05)
    assert store.untidy == 0
    assert tidy() is None  # not due again until more lines are loaded or rows deleted


def test_a_line_that_landed_just_before_the_query_is_in_its_answer(aws, capsys, writer, socket_, monkeypatch):
    monkeypatch.setattr(dashboard, "FRESH", 0.0)  # a listing begun before the question is too old
    write_traffic(writer)
    count = ["--format", "csv", *SINCE_3H, "SELECT count(*) AS n FROM logs"]
    assert ask(aws, capsys, socket_.path, *count)[1].splitlines() == ["n", "302"]
    # an object that lands now though named after an arrival 10 minutes ago (a late batch):
    # a dashboard refresh lists only the last minutes, the query's lists the hours in full
    socket_.store.sync(NOW - timedelta(hours=3))
    late = NOW - timedelta(minutes=10)
    writer.batch([timed_line(late, "/late", "f" * 32)], arrival=late)
    code, out, err = ask(aws, capsys, socket_.path, *count)
    assert code == 0 and out.splitlines() == ["n", "303"] and "1 new object(s) read" in err


def late_line(writer: Writer, n: int) -> None:
    """An object that lands now though named after an arrival 10 minutes ago."""
    late = NOW - timedelta(minutes=10)
    writer.batch([timed_line(late, f"/late/{n}", f"{n:x}".rjust(32, "f"))], arrival=late)  # an id of its own


def test_an_answer_holds_the_bucket_as_listed_in_full_within_fresh(aws, capsys, writer, socket_, monkeypatch):
    monkeypatch.setattr(dashboard, "FRESH", 60.0)
    write_traffic(writer)
    count = ["--format", "csv", *SINCE_3H, "SELECT count(*) AS n FROM logs"]
    socket_.store.sync(NOW - timedelta(hours=3))  # the page's: hours listed, but not all in full
    code, out, err = ask(aws, capsys, socket_.path, *count)
    assert out.splitlines() == ["n", "302"] and "listing" in err, err  # so the question listed them
    late_line(writer, 1)
    code, out, err = ask(aws, capsys, socket_.path, *count)
    # the full listing above began within FRESH: used as it is, and the note says how old
    assert code == 0 and out.splitlines() == ["n", "302"], (out, err)
    assert "refresh 0.00 s (nothing to do)" in err and re.search(r"as listed \d+\.\d\d s before\)", err), err
    monkeypatch.setattr(dashboard, "FRESH", 0.0)
    code, out, err = ask(aws, capsys, socket_.path, *count)
    assert out.splitlines() == ["n", "303"] and "1 new object(s) read" in err, err


def test_an_answer_does_not_wait_for_a_refresh_it_does_not_need(aws, capsys, writer, socket_, monkeypatch):
    monkeypatch.setattr(dashboard, "FRESH", 60.0)
    write_traffic(writer)
    count = ["--format", "csv", *SINCE_50M, "SELECT count(*) AS n FROM logs"]
    code, before, err = ask(aws, capsys, socket_.path, *count)
    assert code == 0 and "answered by the dashboard" in err, err
    held, release = threading.Event(), threading.Event()

    def refreshing() -> None:  # a read-ahead's or the page's sync, running long
        with socket_.store.lock:
            held.set()
            release.wait(30)

    other = threading.Thread(target=refreshing)
    other.start()
    try:
        held.wait(10)
        began = time.monotonic()
        code, out, err = ask(aws, capsys, socket_.path, *count)
        assert code == 0 and time.monotonic() - began < 10, err
        assert out == before and "answered by the dashboard" in err and "waited" not in err, err
    finally:
        release.set()
        other.join()


def test_while_questions_come_the_dashboard_reads_ahead(aws, capsys, writer, socket_):
    write_traffic(writer)
    service, store, stop = socket_.server.RequestHandlerClass.service, socket_.store, threading.Event()
    ahead = threading.Thread(target=service.read_ahead, args=(stop, 0.05))
    ahead.start()
    try:
        threading.Event().wait(0.3)  # six rounds with no question: it lists nothing
        assert store.synced is None and store.reads == 0
        count = ["--format", "csv", *SINCE_50M, "SELECT count(*) AS n FROM logs"]
        code, out, err = ask(aws, capsys, socket_.path, *count)
        assert code == 0 and "answered by the dashboard" in err, err
        before, reads = out.splitlines(), store.reads
        late_line(writer, 2)  # lands after the question: the read-ahead's next full listing finds it
        for _ in range(200):
            if store.reads > reads:
                break
            threading.Event().wait(0.05)
        assert store.reads == reads + 1
        code, out, err = ask(aws, capsys, socket_.path, *count)
        assert int(out.splitlines()[1]) == int(before[1]) + 1 and "refresh 0.00 s (nothing to do)" in err, err
        # as far back as the questions reached (at most RECENT), in full
        assert store.synced_in_full is not None and store.synced_in_full[1] == NOW - timedelta(minutes=50)
        service.asked -= dashboard.READ_AHEAD_FOR + 1  # no question for that long: it stops
        threading.Event().wait(0.2)  # (a sync under way when it stopped ends)
        listed = store.synced_in_full
        threading.Event().wait(0.3)
        assert store.synced_in_full == listed
    finally:
        stop.set()
        ahead.join()


def test_a_failing_read_ahead_says_so_once(socket_, monkeypatch, capsys):
    service, stop = socket_.server.RequestHandlerClass.service, threading.Event()
    calls = []

    def failing(start, max_age=1.0, fresh_after=None):
        calls.append(fresh_after)
        if len(calls) >= 5:
            stop.set()
        raise ConnectionError("LocalStack restarting")

    monkeypatch.setattr(socket_.store, "sync", failing)
    service.asked = dashboard.time.monotonic()
    service.read_ahead(stop, 0.01)
    assert len(calls) == 5 and all(after is not None for after in calls)  # each one lists in full
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dashboard: reading ahead: "), lines


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ([*SINCE_3H, "CREATE TABLE t AS SELECT count(*) AS n FROM logs; SELECT n FROM t"], "SELECT over logs"),
        ([*SINCE_3H, "SHOW TABLES"], "SELECT over logs and errors only"),
        ([*SINCE_3H, "SELECT table_name FROM information_schema.tables ORDER BY 1"], "SELECT over logs"),
        (
            ["--from", (NOW - timedelta(hours=30)).isoformat(), "--to", NOW.isoformat(), "SELECT count(*) FROM logs"],
            "older than the last hour and longer than 2 hours is read from the bucket",
        ),
        ([*SINCE_3H[:2], "--to", (NOW + timedelta(minutes=6)).isoformat(), "SELECT 1"], "ends in the future"),
        (["--bucket", "other-bucket", *SINCE_3H, "SELECT 1"], "it reads another bucket"),
    ],
    ids=["create", "show-tables", "catalog", "older-range", "future", "other-bucket"],
)
def test_what_the_dashboard_declines_the_tool_answers_from_the_bucket(aws, capsys, writer, socket_, args, why):
    write_traffic(writer)
    socket_.store.sync(NOW - timedelta(hours=3))
    rows = socket_.store.con.execute("SELECT count(*) FROM logs_all").fetchall()
    through, alone, err = both(aws, capsys, socket_, *args)
    assert through == alone
    assert "the dashboard did not answer: " in err and why in err and "reading the bucket" in err
    # and nothing the tool ran there changed the dashboard's tables
    assert socket_.store.con.execute("SELECT count(*) FROM logs_all").fetchall() == rows
    tables = [row[0] for row in socket_.store.con.execute("SHOW TABLES").fetchall()]
    assert tables == ["errors_all", "logs_all", "resent_ids"]


def test_a_range_older_than_the_last_hour_is_answered_once_the_dashboard_holds_it(aws, capsys, writer, socket_):
    write_traffic(writer)
    count = ["--format", "csv", *SINCE_3H, "SELECT count(*) AS n FROM logs"]
    code, out, err = ask(aws, capsys, socket_.path, *count)
    assert code == 0 and out.splitlines() == ["n", "302"] and "longer than 2 hours is read from the bucket" in err
    assert not socket_.store.hours  # and asking did not make it load those hours
    socket_.store.sync(NOW - timedelta(hours=6))  # the page's 6h window
    code, out, err = ask(aws, capsys, socket_.path, *count)
    assert code == 0 and out.splitlines() == ["n", "302"] and "answered by the dashboard" in err


CLOSED_HOUR = ["--from", "2026-11-26T15:00Z", "--to", "2026-11-26T16:00Z"]  # NOW is 17:40:30


@pytest.mark.parametrize(
    "args",
    [
        [],  # the summary
        ["--format", "csv", "SELECT * FROM logs ORDER BY timestamp, request_uri, request_id"],
        ["--format", "json", 'SELECT count(*) AS n, count("rawData") AS raw FROM errors'],
    ],
    ids=["summary", "all-rows", "errors"],
)
def test_a_closed_hour_is_read_by_the_dashboard_as_the_tool_reads_it_and_not_kept(aws, capsys, writer, socket_, args):
    write_traffic(writer)
    socket_.store.sync(NOW - timedelta(minutes=50))  # its window, loaded as the page keeps it
    rows = socket_.store.con.execute("SELECT count(*) FROM logs_all").fetchall()
    (code, out), alone, err = both(aws, capsys, socket_, *CLOSED_HOUR, *args)
    # the same output as the tool alone, with the tool's note of what was read
    assert (code, out) == alone and code == 0 and out.strip()
    assert re.fullmatch(
        r"logs_query: answered by the dashboard in [0-9.]+ s: it read \d+ object\(s\), [0-9.]+ MB, "
        r"from s3://\S+ in [0-9.]+ s\n",
        err,
    ), err
    # and the hour was read into a connection of its own: its tables, its window, its
    # read-ahead are as they were
    assert socket_.store.con.execute("SELECT count(*) FROM logs_all").fetchall() == rows
    assert not [h for h in socket_.store.hours if h.startswith(("2026/11/26/15/", "errors/2026/11/26/15/"))]
    assert socket_.server.RequestHandlerClass.service.asked == float("-inf")


def test_a_closed_hour_is_read_from_the_saved_logs_there(aws, capsys, writer, s3_client, bucket, tmp_path):
    import bucket_mirror

    write_traffic(writer)
    saved = tmp_path / "saved"
    copy = bucket_mirror.Copy(saved, bucket)
    hour = logs_query.Bucket(s3_client, bucket).list("2026/11/26/15/")
    assert len(hour) > 1
    for key in hour:
        copy.save(key, s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
    served = Socket(s3_client, bucket, aws, tmp_path, local=LocalCopies(bucket, saved))
    try:
        (code, out), alone, err = both(aws, capsys, served, *CLOSED_HOUR, "SELECT count(*) AS n FROM logs")
    finally:
        served.close()
    assert (code, out) == alone and code == 0
    assert f"it read {len(hour)} object(s) ({len(hour)} already on this machine)" in err, err


@pytest.mark.parametrize(
    "sql",
    ["SELEC 1", "SELECT nothing FROM logs", "SELECT * FROM read_text('/etc/hostname')", "-- a comment only"],
)
@pytest.mark.parametrize("when", [SINCE_50M, CLOSED_HOUR], ids=["recent", "closed-hour"])
def test_sql_errors_there_are_the_tools_own_one_line(aws, capsys, bucket, socket_, sql, when):
    code, out, err = ask(aws, capsys, socket_.path, *when, sql)
    code_alone, out_alone, err_alone = ask(aws, capsys, "", *when, sql)
    assert (code, out) == (code_alone, out_alone) == (1, "")
    assert err == err_alone and err.startswith("logs_query: error: SQL: ") and err.count("\n") == 1


def test_without_a_dashboard_on_the_path_the_tool_reads_the_bucket(aws, capsys, writer, tmp_path):
    write_traffic(writer)
    stale = tmp_path / "stale.sock"
    import socket

    with socket.socket(socket.AF_UNIX) as listener:  # a socket file nobody listens on any more
        listener.bind(str(stale))
    args = ["--format", "csv", *SINCE_3H, "SELECT count(*) AS n FROM logs"]
    for path in (tmp_path / "absent.sock", stale):
        code, out, err = ask(aws, capsys, path, *args)
        assert code == 0 and out.splitlines() == ["n", "302"]
        assert f"no answer on {path}" in err and "reading the bucket" in err
    code, out, err = ask(aws, capsys, tmp_path / "absent.sock", "--quiet", *args)
    assert out.splitlines() == ["n", "302"] and err == ""


def test_the_socket_is_its_users_alone(socket_):
    assert stat.S_IMODE(socket_.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(socket_.path.parent.stat().st_mode) == 0o700
    # the dashboard's DuckDB reads no file beyond its own folder, and its settings are fixed
    import duckdb

    for connection in (socket_.store.con, socket_.store.answer_cursor()):  # an answer's too
        with pytest.raises(duckdb.Error, match="disabled by configuration"):
            connection.execute("SELECT * FROM read_text('/etc/hostname')")
    with pytest.raises(duckdb.Error, match="locked"):
        socket_.store.con.execute("SET enable_external_access = true")
