"""The query tool against moto server: tables and types, ranges and pruning, gzip, errors, output."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import bucket_reader
import logs_query
import pytest
from support.query_data import QUERY, nginx_line, timed_line

T17 = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)
RANGE_17 = ["--from", "2026-11-26T17:00Z", "--to", "2026-11-26T18:00Z"]


def run(aws: str, capsys, *args: str) -> tuple[int, str, str]:
    code = logs_query.main(["--endpoint-url", aws, "--quiet", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def rows(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_logs_has_the_record_schema_typed(aws, writer, capsys):
    # given one request, written by the handler
    at = T17 + timedelta(minutes=5, seconds=7)
    writer.batch([nginx_line(at, "/search?q=1", 404, "Firefox/133.0")], arrival=at)
    # when its table is described and read
    code, out, _ = run(aws, capsys, *RANGE_17, "--format", "json", "DESCRIBE logs")
    types = {row["column_name"]: row["column_type"] for row in rows(out)}
    code2, out2, _ = run(aws, capsys, *RANGE_17, "--format", "json", "SELECT * FROM logs")
    # then every record column is there, typed, with the record's values
    assert code == code2 == 0
    assert list(types) == list(logs_query.LOG_COLUMNS)
    assert types["status"] == "INTEGER" and types["timestamp"] == "TIMESTAMP" and types["body_bytes_sent"] == "BIGINT"
    (record,) = rows(out2)
    assert record["timestamp"] == "2026-11-26T17:05:07"  # UTC, no offset
    assert record["status"] == 404 and record["request_uri"] == "/search?q=1" and record["remote_user"] is None
    assert record["http_user_agent"] == "Firefox/133.0"


def test_range_selects_rows_and_reads_only_its_hour_prefixes(aws, writer, s3_client, capsys, monkeypatch):
    # given requests in three hours, and an unreadable object in an hour outside the range
    for hour in (16, 17, 18):
        at = T17.replace(hour=hour, minute=30)
        writer.batch([nginx_line(at, f"/h{hour}")], arrival=at)
    writer.batch([nginx_line(T17.replace(minute=50), "/late-in-17")], arrival=T17.replace(minute=50))
    s3_client.put_object(Bucket="nginx-accesslog", Key="2026/11/26/19/garbage.json", Body=b"not json\n")
    gets: list[str] = []
    real_get = logs_query.Bucket.get
    monkeypatch.setattr(logs_query.Bucket, "get", lambda self, key: gets.append(key) or real_get(self, key))
    # when asking for 17:00 to 17:45
    code, out, _ = run(
        aws, capsys, "--from", "2026-11-26T17:00", "--to", "2026-11-26T17:45", "--format", "json",
        "SELECT request_uri FROM logs ORDER BY 1",
    )  # fmt: skip
    # then only 17's objects were read, and the row after 17:45 is filtered out
    assert code == 0
    assert rows(out) == [{"request_uri": "/h17"}]
    assert gets and all(key.startswith("2026/11/26/17/") for key in gets)


def test_since_is_relative_to_now(aws, writer, capsys):
    now = datetime.now(UTC)
    writer.batch([nginx_line(now - timedelta(minutes=3), "/recent")], arrival=now)
    writer.batch([nginx_line(now - timedelta(hours=3), "/old")], arrival=now - timedelta(hours=3))
    code, out, _ = run(aws, capsys, "--since", "10m", "--format", "csv", "SELECT request_uri FROM logs")
    assert code == 0
    assert out.splitlines() == ["request_uri", "/recent"]


def test_gzip_objects_read_the_same(aws, writer, s3_client, capsys):
    # given the same requests once as .json and once as .json.gz (two hours)
    lines = [nginx_line(T17 + timedelta(seconds=s), f"/p{s}", 200 + s) for s in range(3)]
    writer.batch(lines, arrival=T17)
    writer.batch([line.replace("17:00:", "18:00:") for line in lines], arrival=T17, compression="gzip")
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket="nginx-accesslog")["Contents"]]
    assert any(k.endswith(".json.gz") for k in keys) and any(k.endswith(".json") for k in keys)
    # when each hour is queried
    sql = "SELECT request_uri, status FROM logs ORDER BY 1"
    _, plain_out, _ = run(aws, capsys, *RANGE_17, "--format", "csv", sql)
    _, gzip_out, _ = run(
        aws, capsys, "--from", "2026-11-26T18:00Z", "--to", "2026-11-26T19:00Z", "--format", "csv", sql
    )
    # then they answer alike
    assert plain_out == gzip_out
    assert plain_out.splitlines()[1:] == ["/p0,200", "/p1,201", "/p2,202"]


def test_errors_table_holds_the_unparsed_lines(aws, writer, capsys):
    at = T17 + timedelta(minutes=1)
    writer.batch([nginx_line(at), "this is not an access log line"], arrival=at)
    code, out, _ = run(
        aws, capsys, *RANGE_17, "--format", "json",
        'SELECT "errorCode", from_base64("rawData")::VARCHAR AS raw, "approximateArrivalTimestamp" AS at FROM errors',
    )  # fmt: skip
    assert code == 0
    assert rows(out) == [
        {"errorCode": "UnparsableLine", "raw": "this is not an access log line", "at": "2026-11-26T17:01:00"}
    ]


def test_summary_shows_traffic_statuses_paths_agents_and_errors(aws, writer, capsys):
    at = T17 + timedelta(minutes=2)
    writer.batch(
        [nginx_line(at, "/a?x=1"), nginx_line(at, "/a?x=2"), nginx_line(at, "/b", 500, "Googlebot/2.1"), "junk"],
        arrival=at,
    )
    code, out, _ = run(aws, capsys, *RANGE_17)
    assert code == 0
    assert out.startswith("3 requests, 1 unparsed line(s), 2026-11-26 17:00:00 to 2026-11-26 18:00:00 UTC")
    for title in (
        "Requests per minute",
        "Status classes",
        "Top paths",
        "Top user agents",
        "Unparsed lines (errors table)",
    ):
        assert f"\n{title}\n" in out
    assert "2026-11-26 17:02 |        3 |   1 | ####" in out
    assert "2xx   |        2 |    66.7" in out and "/a   |        2 |" in out and "UnparsableLine |     1" in out


def test_re_sent_lines_count_once_lines_without_an_id_all_count(aws, writer, capsys):
    # given five timed requests and two identical combined lines (two requests, no id)
    at = T17.replace(minute=59, second=30)
    timed = [timed_line(at, f"/t{n}", f"{n:032x}") for n in range(5)]
    plain = [nginx_line(at, "/same"), nginx_line(at, "/same")]
    writer.batch(timed + plain, arrival=at)
    # and fluentd's re-send of three of them, arriving in the next hour (another object)
    writer.batch(timed[2:], arrival=at + timedelta(minutes=1))
    # when the hour is queried, and a range cutting it
    code, out, _ = run(aws, capsys, *RANGE_17, "--format", "json", "SELECT request_uri FROM logs ORDER BY 1")
    code2, out2, _ = run(
        aws, capsys, "--from", "2026-11-26T17:59:30", "--to", "2026-11-26T19:00", "--format", "csv",
        "SELECT count(*) AS n, count(DISTINCT request_id) AS ids FROM logs",
    )  # fmt: skip
    code3, out3, _ = run(aws, capsys, *RANGE_17)
    # then each request is one row; both lines without an id stay
    assert code == code2 == code3 == 0
    assert [row["request_uri"] for row in rows(out)] == ["/same", "/same", "/t0", "/t1", "/t2", "/t3", "/t4"]
    assert out2.splitlines() == ["n,ids", "7,5"]
    assert out3.startswith("7 requests, 0 unparsed line(s)")


def test_summary_shows_latency_percentiles(aws, writer, capsys):
    # given 101 requests taking 0.000 to 0.100 s, and one combined line without a time
    at = T17 + timedelta(minutes=5)
    lines = [timed_line(at, f"/p{n % 2}", f"{n:032x}", n / 1000) for n in range(101)]
    writer.batch([*lines, nginx_line(at, "/untimed")], arrival=at)
    # when the summary is printed
    code, out, _ = run(aws, capsys, *RANGE_17)
    # then it shows p50/p95/p99 over the timed requests, and the slowest paths
    assert code == 0
    latency = out.split("\nLatency (request_time, seconds)\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert latency[0].split() == ["timed", "|", "p50", "|", "p95", "|", "p99", "|", "max"]
    assert latency[2].split() == ["101", "|", "0.05", "|", "0.095", "|", "0.099", "|", "0.1"]
    assert "\nSlowest paths (p95 of request_time, seconds)\n" in out
    assert "/untimed" not in out.split("Slowest paths", 1)[1]


def test_summary_leaves_latency_out_without_times(aws, writer, capsys):
    writer.batch([nginx_line(T17, "/a")], arrival=T17)
    code, out, _ = run(aws, capsys, *RANGE_17)
    assert code == 0 and "Latency" not in out and "Slowest paths" not in out


def test_empty_bucket_answers_empty(aws, bucket, capsys):
    code, out, _ = run(aws, capsys, *RANGE_17)
    assert code == 0 and "0 requests, 0 unparsed line(s)" in out and "./start.sh traffic" in out
    code, out, _ = run(aws, capsys, *RANGE_17, "SELECT count(*) AS n FROM logs, errors")
    assert code == 0 and out.splitlines()[2].strip() == "0"


def test_output_formats(aws, writer, capsys):
    writer.batch([nginx_line(T17, "/q?a=\\x22b\\x22,c")], arrival=T17)  # nginx escapes quotes
    sql = "SELECT request_uri, status, NULL AS nothing FROM logs"
    _, table, _ = run(aws, capsys, *RANGE_17, sql)
    _, as_csv, _ = run(aws, capsys, *RANGE_17, "--format", "csv", sql)
    _, as_json, _ = run(aws, capsys, *RANGE_17, "--format", "json", sql)
    assert [c.strip() for c in table.splitlines()[0].split("|")] == ["request_uri", "status", "nothing"]
    assert table.splitlines()[-1] == "(1 row)"
    assert list(csv.reader(io.StringIO(as_csv))) == [
        ["request_uri", "status", "nothing"],
        ["/q?a=\\x22b\\x22,c", "200", ""],
    ]
    assert rows(as_json) == [{"request_uri": "/q?a=\\x22b\\x22,c", "status": 200, "nothing": None}]


def test_bad_sql_is_one_line_and_exit_1(aws, bucket):
    result = subprocess.run(
        [sys.executable, str(QUERY / "logs_query.py"), "--endpoint-url", aws, "SELEC status FROM logs"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("logs_query: error: SQL: Parser Error: syntax error at or near")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_sql_of_comments_only_or_several_statements(aws, bucket, capsys):
    code, _, err = run(aws, capsys, *RANGE_17, "-- nothing but a comment")
    assert code == 1 and err == "logs_query: error: SQL: no statement to run\n"
    code, out, _ = run(
        aws, capsys, *RANGE_17, "--format", "csv", "CREATE TABLE t AS SELECT 41 AS x; SELECT x + 1 AS y FROM t"
    )
    assert code == 0 and out == "y\n42\n"


@pytest.mark.parametrize(
    "args",
    [["--since", "soon"], ["--from", "yesterday"], ["--from", "2026-11-26T18:00", "--to", "2026-11-26T17:00"],
     ["--format", "xml"], ["--workers", "0"], ["--since", "1h", "--to", "2026-11-26T17:00"], [" "]],
)  # fmt: skip
def test_bad_flags_exit_2_without_traceback(args, capsys):
    with pytest.raises(SystemExit) as exited:
        logs_query.main(args)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "logs_query.py: error:" in err and "Traceback" not in err


def test_missing_bucket_and_unreachable_endpoint_are_one_line(aws, capsys):
    code, _, err = run(aws, capsys, "--bucket", "no-such-bucket", "SELECT 1")
    assert code == 1 and err.count("\n") == 1 and "no bucket no-such-bucket" in err
    code, _, err = run("http://127.0.0.1:9", capsys, "--workers", "1", "SELECT 1")
    assert code == 1 and err.count("\n") == 1 and "cannot reach S3" in err


def test_sql_cannot_reach_files_network_or_extensions():
    # DuckDB is set never to download or auto-load an extension, and the user's SQL is
    # shut off from files and the network once the tables are loaded
    con = logs_query.connect()
    settings = dict(
        con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN "
            "('autoinstall_known_extensions', 'autoload_known_extensions')"
        ).fetchall()
    )
    assert settings == {"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
    logs_query.load_tables(con, [], [], T17, T17 + timedelta(hours=1))
    for sql in ("INSTALL httpfs", "SELECT * FROM read_csv('/etc/hostname')", "SET enable_external_access = true",
                "SELECT * FROM read_json('https://example.com/x.json')", "LOAD httpfs"):  # fmt: skip
        with pytest.raises(logs_query.Failure, match=r"^SQL: ") as failed:
            logs_query.run_sql(con, sql)
        assert "\n" not in str(failed.value)
    assert logs_query.run_sql(con, "SELECT count(*) AS n FROM logs") == (["n"], [(0,)])


def test_hour_prefixes_cover_the_range_across_days():
    start, end = bucket_reader.time_range(None, "2026-12-31T23:30+01:00", "2027-01-01T01:00Z")
    assert start == datetime(2026, 12, 31, 22, 30, tzinfo=UTC)
    assert bucket_reader.hour_prefixes(start, end) == ["2026/12/31/22", "2026/12/31/23", "2027/01/01/00"]
    assert bucket_reader.parse_duration("1h30m") == timedelta(minutes=90)


def random_logs(rng) -> list[tuple]:
    """(request_uri, status, request_time, upstream_response_time) rows: few or many paths,
    ties, values at rounding edges, NULLs."""
    paths, scale = rng.choice([1, 4, 6, 30, 2000]), rng.choice([0.01, 1.0, 5.0])
    rows = []
    for _ in range(rng.choice([0, 3, 9, 80, 600])):
        uri = None if rng.random() < 0.03 else f"/p{rng.randrange(paths)}" + ("?q=1" if rng.random() < 0.2 else "")
        seconds = rng.choice([None, 0.0495, 0.0505, 0.0015, round(rng.random() * scale, rng.choice([3, 4, 6]))])
        rows.append((uri, rng.choice([101, 200, 304, 404, 500, 503]), seconds, rng.choice([None, rng.random()])))
    return rows


def test_the_summary_statements_keep_the_rows_of_plain_ones():
    """The summary's path statements share one pass (_paths), and "Slowest paths" skips
    paths that cannot be among the five; "Status classes" groups numbers and "Latency"
    sorts once: on random logs they answer as plain statements that group every row and
    take a quantile of every path."""
    import random

    con = logs_query.connect()
    compared = 0
    # with the path computed per row (the tool), and read from a column that holds it (the
    # dashboard's "_path")
    for path in (logs_query.PATH, '"_path"'):
        paths, statements = logs_query.summary_statements(path)
        top, slowest = dict(statements)["Top paths"], dict(statements)["Slowest paths (p95 of request_time, seconds)"]
        for seed in range(60):
            rows = random_logs(random.Random(seed))
            columns = "request_uri VARCHAR, status INTEGER, request_time DOUBLE, upstream_response_time DOUBLE"
            con.execute(f"CREATE OR REPLACE TABLE logs ({columns})")
            if rows:
                con.executemany("INSERT INTO logs VALUES (?, ?, ?, ?)", rows)
            con.execute('ALTER TABLE logs ADD COLUMN "_path" VARCHAR DEFAULT NULL')
            con.execute(f'UPDATE logs SET "_path" = {logs_query.PATH}')  # noqa: S608 - our constant
            con.execute("DROP TABLE IF EXISTS _paths")
            con.execute(paths)
            expected = con.execute(logs_query.SLOWEST_PATHS_PLAIN).fetchall()
            assert con.execute(slowest).fetchall() == expected, (path, seed)
            assert con.execute(top).fetchall() == con.execute(logs_query.TOP_PATHS_PLAIN).fetchall(), (path, seed)
            for title, plain in (("Status classes", logs_query.STATUS_CLASSES_PLAIN),
                                 ("Latency (request_time, seconds)", logs_query.LATENCY_PLAIN)):  # fmt: skip
                answer, oracle = (logs_query.run_sql(con, sql) for sql in (dict(statements)[title], plain))
                assert answer == oracle, (title, seed)
            compared += bool(expected)
    assert compared >= 80
