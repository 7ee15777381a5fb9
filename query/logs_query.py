#!/usr/bin/env python3
"""Ask the access logs questions in SQL: DuckDB over the bucket's objects of a time range.

    python3 query/logs_query.py                          # summary of the last hour
    python3 query/logs_query.py --since 6h "SELECT status, count(*) FROM logs GROUP BY 1"
    python3 query/logs_query.py --from 2026-11-26T17:00 --to 2026-11-26T18:00 --format csv "..."
    python3 query/logs_query.py --aws --bucket my-bucket  # real S3, your credential chain

Tables: `logs` (one row per request, the record schema, typed) and `errors` (the error
objects). The range picks hour prefixes (`YYYY/MM/DD/HH/`, `errors/YYYY/MM/DD/HH/`), so
only those objects are listed and read; rows outside the range are then filtered out.

Objects are fetched with boto3 in parallel (DuckDB's httpfs extension would be downloaded
at first use, which fails offline), gzip or not, into local JSON Lines files, which
DuckDB's built-in JSON reader loads; a merged part kept as Parquet on this machine
(compact_hours.py --cache-dir) goes to its built-in Parquet reader instead. DuckDB never
installs or loads extensions at run time, and once the tables are loaded the SQL can
reach no file or network.

Compacted hours (query/compact_hours.py) are read through their manifest, so a query
never sees a line missing or twice, whatever the compaction's progress. Lines that fluentd
sent twice (same `request_id`) are one row (docs/request-timing.md).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from bucket_reader import (  # beside this file: python3 puts the script's folder on sys.path
    ERROR_PREFIX,
    GZIP_MAGIC,
    Bucket,
    Failure,
    Fetched,
    LocalCopies,
    Sink,
    Sinks,
    add_local_arguments,
    add_target_arguments,
    describe,
    fetch_prefixes,
    hour_prefixes,
    local_copies,
    s3_client,
    time_range,
)

LOG_COLUMNS: dict[str, str] = {
    "remote_addr": "VARCHAR",
    "remote_user": "VARCHAR",
    "time_local": "VARCHAR",
    "timestamp": "TIMESTAMP",  # UTC
    "request": "VARCHAR",
    "request_method": "VARCHAR",
    "request_uri": "VARCHAR",
    "server_protocol": "VARCHAR",
    "status": "INTEGER",
    "body_bytes_sent": "BIGINT",
    "http_referer": "VARCHAR",
    "http_user_agent": "VARCHAR",
    "http_x_forwarded_for": "VARCHAR",
    "request_time": "DOUBLE",  # seconds
    "upstream_response_time": "DOUBLE",  # seconds
    "request_length": "BIGINT",
    "request_id": "VARCHAR",
    "host": "VARCHAR",
}
# The error objects' lines; the arrival time becomes a UTC TIMESTAMP.
ERROR_COLUMNS: dict[str, str] = {
    "errorCode": "VARCHAR",
    "errorMessage": "VARCHAR",
    "rawData": "VARCHAR",
    "shardId": "VARCHAR",
    "sequenceNumber": "VARCHAR",
    "partitionKey": "VARCHAR",
    "approximateArrivalTimestamp": "TIMESTAMP",
}


# --- DuckDB --------------------------------------------------------------------------


def connect() -> Any:
    """An in-memory DuckDB that never downloads, installs or auto-loads an extension."""
    import duckdb

    con = duckdb.connect(
        ":memory:",
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
        },
    )
    con.execute("SET TimeZone = 'UTC'")
    return con


def _columns_sql(columns: dict[str, str]) -> str:
    return ", ".join(f'"{name}" {kind}' for name, kind in columns.items())


def _struct_sql(columns: dict[str, str], overrides: dict[str, str]) -> str:
    items = ", ".join(f"'{name}': '{overrides.get(name, kind)}'" for name, kind in columns.items())
    return "{" + items + "}"


def _read_records() -> str:
    """The records as load_tables types them, from JSON Lines files (parameters: the
    files, their compression: 'auto' by their names, or 'gzip' / 'none')."""
    return f"""read_json(?, format = 'newline_delimited', compression = ?,
        columns = {_struct_sql(LOG_COLUMNS, {})}, timestampformat = '%Y-%m-%dT%H:%M:%SZ')"""


def columnar_suffix() -> str:
    """A closed hour's merged parts are also kept as Parquet (compact_hours.py, in the
    query tools' cache), `<MD5><suffix>`: DuckDB loads those in about a third of the time
    (docs/performance.md). The suffix names the columns: after a change to them no older
    copy is read."""
    return "." + hashlib.sha256(_read_records().encode()).hexdigest()[:12] + ".parquet"


def write_columnar(source: Path, target: Path) -> None:
    """An object's JSON Lines file (gzip or not) as Parquet at `target`: its records
    typed and named as load_tables loads them."""
    with source.open("rb") as file:
        compression = "gzip" if file.read(2) == GZIP_MAGIC else "none"
    con = connect()
    try:
        con.execute(
            f"COPY (SELECT * FROM {_read_records()}) TO ? (FORMAT parquet)",  # noqa: S608 - constants only
            [str(source), compression, str(target)],
        )
    finally:
        con.close()


def load_tables(
    con: Any, logs_files: list[str], errors_files: list[str], start: datetime, end: datetime, dedupe: bool = True
) -> None:
    """Create the typed tables `logs` and `errors` from the fetched lines of [start, end),
    then shut DuckDB off from files and settings: the user's SQL sees only the tables.
    `dedupe=False` keeps re-sent copies (bench/query_bench.py measures what dropping costs)."""
    begin, finish = start.replace(tzinfo=None), end.replace(tzinfo=None)
    # rows in any order: the load then runs on every core (a closed hour loads in about a
    # third less time, docs/performance.md); no answer depends on the files' line order
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"CREATE TABLE logs ({_columns_sql(LOG_COLUMNS)})")
    con.execute(f"CREATE TABLE errors ({_columns_sql(ERROR_COLUMNS)})")
    # the SQL is built from this file's constants only; values are parameters
    lines = [f for f in logs_files if not f.endswith(".parquet")]
    if lines:
        con.execute(
            f"""INSERT INTO logs SELECT * FROM {_read_records()}
                WHERE "timestamp" >= ? AND "timestamp" < ?""",  # noqa: S608
            [lines, "auto", begin, finish],
        )
    columnar = [f for f in logs_files if f.endswith(".parquet")]
    if columnar:  # cached Parquet copies of merged parts (columnar_suffix), read by name
        names = ", ".join(f'"{name}"' for name in LOG_COLUMNS)
        con.execute(
            f"""INSERT INTO logs SELECT {names} FROM read_parquet(?)
                WHERE "timestamp" >= ? AND "timestamp" < ?""",  # noqa: S608
            [columnar, begin, finish],
        )
    if logs_files and dedupe:
        con.execute(_DROP_RESENT)
    if errors_files:
        names = ", ".join(f'"{n}"' for n in ERROR_COLUMNS if n != "approximateArrivalTimestamp")
        con.execute(
            f"""INSERT INTO errors SELECT {names},
                    to_timestamp("approximateArrivalTimestamp")::TIMESTAMP AS "approximateArrivalTimestamp"
                FROM read_json(?, format = 'newline_delimited',
                    columns = {_struct_sql(ERROR_COLUMNS, {"approximateArrivalTimestamp": "DOUBLE"})})
                WHERE to_timestamp("approximateArrivalTimestamp")::TIMESTAMP >= ?
                  AND to_timestamp("approximateArrivalTimestamp")::TIMESTAMP < ?""",  # noqa: S608
            [errors_files, begin, finish],
        )
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


_ONE_PER_REQUEST = "\n                QUALIFY request_id IS NULL OR row_number() OVER (PARTITION BY request_id) = 1"
# One row per request_id: fluentd re-sends land as second copies (docs/request-timing.md);
# rows without an id are all kept. Finding the few repeated ids first costs a tenth of
# numbering every row (_ONE_PER_REQUEST, which the dashboard's windows use).
_DROP_RESENT = """DELETE FROM logs WHERE rowid IN (
    SELECT rowid FROM logs WHERE request_id IN (
        SELECT request_id FROM logs WHERE request_id IS NOT NULL GROUP BY request_id HAVING count(*) > 1)
    QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY rowid) > 1)"""


def duckdb_statements(sql: str) -> list[str]:
    """The type of each statement in `sql` (SELECT, CREATE, ...), as DuckDB parses it."""
    import duckdb

    try:
        return [statement.type.name for statement in duckdb.extract_statements(sql)]
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Failure(f"SQL: {first}") from None


def run_sql(con: Any, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of the last statement in `sql`."""
    import duckdb

    try:
        cursor = con.execute(sql)
        if cursor is None:  # only comments or whitespace
            raise Failure("SQL: no statement to run")
        columns = [d[0] for d in cursor.description] if cursor.description else []
        rows = cursor.fetchall() if columns else []
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Failure(f"SQL: {first}") from None
    return columns, rows


# --- output --------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, float):
        return str(round(value, 4))
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)


def table_text(columns: Sequence[str], rows: Sequence[Sequence[Any]], width: int = 60) -> str:
    """A plain terminal table: numbers right-aligned, long cells cut to `width`."""
    cells = [[_text(v) for v in row] for row in rows]
    cells = [[c if len(c) <= width else c[: width - 1] + "…" for c in row] for row in cells]
    numeric = [
        bool(rows) and all(isinstance(row[i], (int, float, Decimal)) or row[i] is None for row in rows)
        for i in range(len(columns))
    ]
    widths = [max([len(name)] + [len(row[i]) for row in cells]) for i, name in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return " | ".join(parts).rstrip()

    out = [line(list(columns)), "-+-".join("-" * w for w in widths)]
    out.extend(line(row) for row in cells)
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


def write_result(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str, out: TextIO) -> None:
    if not columns:  # a statement without a result, such as CREATE TABLE
        return
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
    elif fmt == "json":
        for row in rows:
            out.write(json.dumps(dict(zip(columns, row)), default=_json_value, ensure_ascii=False) + "\n")
    else:
        out.write(table_text(columns, rows))


# --- the summary ---------------------------------------------------------------------

# A request's path: its URI without the query string. The summary's path statements take
# it as {path}; the dashboard passes the column it stores it in (computed once per row).
PATH = "coalesce(split_part(request_uri, '?', 1), '(no request line)')"
SUMMARY: list[tuple[str, str]] = [
    (
        "Requests per minute",
        # grouped by the minute as a timestamp, formatted once per minute, not once per row
        """SELECT strftime(minute, '%Y-%m-%d %H:%M') AS minute, requests, "5xx",
                  repeat('#', CAST(ceil(40.0 * requests / max(requests) OVER ()) AS INTEGER)) AS bar
           FROM (SELECT date_trunc('minute', "timestamp") AS minute, count(*) AS requests,
                        count(*) FILTER (WHERE status >= 500) AS "5xx"
                 FROM logs GROUP BY 1)
           ORDER BY 1""",
    ),
    (
        "Status classes",
        # grouped by the class as a number, named once per class, not once per row
        """SELECT class::VARCHAR || 'xx' AS class, requests,
                  round(100.0 * requests / sum(requests) OVER (), 1) AS percent
           FROM (SELECT status // 100 AS class, count(*) AS requests FROM logs GROUP BY 1)
           ORDER BY 1""",
    ),
    (
        "Top paths",
        """SELECT path, requests, errors FROM _paths ORDER BY 2 DESC, 1 LIMIT 10""",
    ),
    (
        "Top user agents",
        """SELECT coalesce(http_user_agent, '-') AS user_agent, count(*) AS requests
           FROM logs GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5""",
    ),
    (
        "Latency (request_time, seconds)",
        # the three quantiles from one sort of the times, not three
        """SELECT timed, round(q[1], 3) AS p50, round(q[2], 3) AS p95, round(q[3], 3) AS p99, round(slowest, 3) AS max
           FROM (SELECT count(request_time) AS timed, quantile_cont(request_time, [0.5, 0.95, 0.99]) AS q,
                        max(request_time) AS slowest
                 FROM logs HAVING count(request_time) > 0)""",
    ),
    (
        "Slowest paths (p95 of request_time, seconds)",
        # A path's p95 lies between its fastest and slowest request: one whose slowest
        # (rounded) is below the fifth-largest fastest cannot be among the five, so only
        # the rest are candidates (every path is in SLOWEST_PATHS_PLAIN: the same rows).
        # A candidate with one timed request is answered from _paths (its p95 is that
        # request's time); only the others' rows are read again, none when there are none
        # (every path unique: 0.01 s instead of up to 0.39 s, docs/performance.md).
        """WITH cut AS (SELECT min(lo) AS lo FROM (SELECT lo FROM _paths WHERE lo IS NOT NULL ORDER BY lo DESC LIMIT 5)
                        HAVING count(*) = 5),
                candidates AS (SELECT path, timed, hi, upstream FROM _paths
                               WHERE hi >= coalesce((SELECT lo FROM cut), hi))
           SELECT {path} AS path,
                  count(request_time) AS timed, round(quantile_cont(request_time, 0.95), 3) AS p95,
                  round(quantile_cont(upstream_response_time, 0.95), 3) AS upstream_p95
           FROM logs WHERE request_time IS NOT NULL
             AND {path} IN (SELECT path FROM candidates WHERE timed > 1)
           GROUP BY 1
           UNION ALL
           SELECT path, timed, hi, round(upstream, 3) FROM candidates WHERE timed = 1
           ORDER BY 3 DESC, 2 DESC, 1 LIMIT 5""",
    ),
    (
        "Unparsed lines (errors table)",
        """SELECT "errorCode" AS error, count(*) AS lines FROM errors GROUP BY 1 ORDER BY 2 DESC, 1""",
    ),
]


# Each path once, for the two statements about paths (one pass over the rows, not two):
# its requests and errors, its fastest and slowest request_time (rounded as shown), its
# timed requests and, for a path with one, that request's upstream time.
SUMMARY_PATHS = """CREATE TEMP TABLE _paths AS
    SELECT {path} AS path, count(*) AS requests,
           count(*) FILTER (WHERE status >= 400) AS errors,
           round(min(request_time), 3) AS lo, round(max(request_time), 3) AS hi,
           count(request_time) AS timed,
           max(upstream_response_time) FILTER (WHERE request_time IS NOT NULL) AS upstream
    FROM logs GROUP BY 1"""
# What the path, status and latency statements answer, as a user would write them (the
# tests compare)
TOP_PATHS_PLAIN = """SELECT coalesce(split_part(request_uri, '?', 1), '(no request line)') AS path,
           count(*) AS requests, count(*) FILTER (WHERE status >= 400) AS errors
    FROM logs GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10"""
SLOWEST_PATHS_PLAIN = """SELECT coalesce(split_part(request_uri, '?', 1), '(no request line)') AS path,
           count(request_time) AS timed, round(quantile_cont(request_time, 0.95), 3) AS p95,
           round(quantile_cont(upstream_response_time, 0.95), 3) AS upstream_p95
    FROM logs WHERE request_time IS NOT NULL GROUP BY 1 ORDER BY 3 DESC, 2 DESC, 1 LIMIT 5"""


STATUS_CLASSES_PLAIN = """SELECT (status // 100)::VARCHAR || 'xx' AS class, count(*) AS requests,
           round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS percent
    FROM logs GROUP BY 1 ORDER BY 1"""
LATENCY_PLAIN = """SELECT count(request_time) AS timed, round(quantile_cont(request_time, 0.5), 3) AS p50,
           round(quantile_cont(request_time, 0.95), 3) AS p95, round(quantile_cont(request_time, 0.99), 3) AS p99,
           round(max(request_time), 3) AS max
    FROM logs HAVING count(request_time) > 0"""


def summary_statements(path: str = PATH) -> tuple[str, list[tuple[str, str]]]:
    """The summary's `_paths` aggregate and its (title, SQL) statements, with `path` as a
    row's path: PATH, or a column of `logs` that holds it."""
    return SUMMARY_PATHS.replace("{path}", path), [(title, sql.replace("{path}", path)) for title, sql in SUMMARY]


def summary(con: Any, out: TextIO, start: datetime, end: datetime, path: str = PATH) -> None:
    """What a user wants to see first: volume over time, outcomes, what was asked, by whom."""
    (requests,), (errors,) = (
        con.execute("SELECT count(*) FROM logs").fetchall()[0],
        con.execute("SELECT count(*) FROM errors").fetchall()[0],
    )
    out.write(
        f"{requests} requests, {errors} unparsed line(s), {start:%Y-%m-%d %H:%M:%S} to {end:%Y-%m-%d %H:%M:%S} UTC\n"
    )
    if not requests and not errors:
        out.write("Nothing in this range. Send some traffic (./start.sh traffic), or widen it (--since 24h).\n")
        return
    paths, statements = summary_statements(path)
    con.execute(paths)
    for title, sql in statements:
        columns, rows = run_sql(con, sql)
        if not rows:
            continue
        out.write(f"\n{title}\n")
        out.write(table_text(columns, rows))


# --- command line --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logs_query.py",
        description="SQL over the access-log records of a time range (tables: logs, errors). "
        "Without SQL: a summary of the range.",
    )
    parser.add_argument("sql", nargs="?", help="a query over the tables logs and errors (default: a summary)")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--since", help="the range ends now and lasts this long: 15m, 1h (default), 2d")
    when.add_argument("--from", dest="start", help="range start, ISO 8601, UTC unless an offset is given")
    parser.add_argument("--to", dest="end", help="range end (exclusive), ISO 8601 (default: now)")
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output (default table)")
    add_target_arguments(parser)
    add_local_arguments(parser)
    parser.add_argument(
        "--socket",
        default=os.environ.get("QUERY_SOCKET") or None,
        help="ask the dashboard on this Unix socket first: it keeps the last hours loaded "
        "(default: $QUERY_SOCKET, set in its container; none)",
    )
    parser.add_argument("--quiet", action="store_true", help="no note on stderr about what was read")
    return parser


# --- the dashboard's tables ----------------------------------------------------------

# A running dashboard (query/dashboard.py --query-socket) keeps the window's rows loaded:
# it answers a SELECT over a recent range (or hours it holds) with the same tables and output,
# for a refresh instead of reading the range (docs/performance.md). What it declines, or
# when it cannot be reached, is answered here from the bucket, as without it.
SOCKET_TIMEOUT = 300.0
# where a dashboard's refresh went, as its answer's header gives it (dashboard.Store.sync)
REFRESH_PARTS = ("listing", "manifests", "reading", "loading", "waited")


def ask_dashboard(path: str, request: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The dashboard's (header, output) for `request`; OSError or ValueError if it has none."""
    import socket

    if not hasattr(socket, "AF_UNIX"):
        raise OSError("this system has no Unix sockets")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(SOCKET_TIMEOUT)
        sock.connect(path)
        sock.sendall(json.dumps(request).encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        with sock.makefile("rb") as answer:
            header = json.loads(answer.readline())
            body = answer.read().decode()
    if not isinstance(header, dict):
        raise ValueError("not an answer")
    return header, body


def answered_by_dashboard(args: argparse.Namespace, start: datetime, end: datetime, out: TextIO) -> bool:
    """Whether the dashboard answered (then its output is written); a SQL error is a Failure."""
    if not args.socket:
        return False
    began = time.perf_counter()
    try:
        header, body = ask_dashboard(args.socket, dashboard_request(args, start, end))
    except (OSError, ValueError) as exc:
        reason = f"no answer on {args.socket} ({exc.strerror or exc})" if isinstance(exc, OSError) else str(exc)
        header, body = {"declined": reason}, ""
    if "error" in header:
        raise Failure(str(header["error"]))
    if "declined" in header:
        if not args.quiet:
            note = f"logs_query: the dashboard did not answer: {header['declined']}; reading the bucket"
            print(note, file=sys.stderr)
        return False
    out.write(body)
    if not args.quiet:
        print(answered_note(header, time.perf_counter() - began), file=sys.stderr)
    return True


def dashboard_request(args: argparse.Namespace, start: datetime, end: datetime) -> dict[str, Any]:
    """What the dashboard is asked for these arguments (dashboard.QueryService.answer)."""
    return {
        "version": 1,
        "sql": args.sql,
        "format": args.format,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "bucket": args.bucket,
        "endpoint": None if args.aws else args.endpoint_url,
        "region": args.region,
    }


def read_note(objects: int, local: int | None, size: int, bucket: str | None) -> str:
    """What a read of the bucket read, as the notes say it (`local`: None without local copies)."""
    here = f" ({local} already on this machine)" if local is not None else ""
    return f"read {objects} object(s){here}, {size / 1e6:.1f} MB, from s3://{bucket}"


def answered_note(header: dict[str, Any], seconds: float) -> str:
    """The note on stderr for an answer of the dashboard, with its header's timings."""
    older = header.get("older")
    if isinstance(older, dict):  # an older range it read as this tool reads one
        what = read_note(older.get("objects", 0), older.get("local"), older.get("bytes", 0), older.get("bucket"))
        return f"logs_query: answered by the dashboard in {seconds:.2f} s: it {what} in {older.get('seconds', 0):.2f} s"
    # the refresh's parts (docs/performance.md); an hour read again in full: an object
    # rewritten, or a compaction it could not adopt
    spent = [f"{part} {header[part]:.2f} s" for part in REFRESH_PARTS if header.get(part)]
    spent += [f"{header['reread']} hour(s) read again"] if header.get("reread") else []
    # the bucket as listed that long before the question came (the dashboard's FRESH)
    listed = f"; as listed {header['listed_before']:.2f} s before" if header.get("listed_before") else ""
    return (
        f"logs_query: answered by the dashboard's loaded tables in {seconds:.2f} s "
        f"({header.get('read', 0)} new object(s) read; refresh {header.get('refresh', 0):.2f} s "
        f"({', '.join(spent) or 'nothing to do'}), SQL {header.get('sql', 0):.2f} s{listed})"
    )


def _fetch_to_files(
    bucket: Bucket,
    prefixes: list[str],
    stem: Path,
    workers: int,
    local: LocalCopies | None,
    window: tuple[datetime, datetime] | None = None,
    columnar: str | None = None,
) -> tuple[list[str], Fetched]:
    """Fetch into `stem`-N.jsonl and `stem`-N.jsonl.gz (and with `columnar`, cached
    columnar copies into their own .parquet files): the non-empty files, and the counts.
    Objects go to FILES files in turn: DuckDB reads one gzip file on one thread."""
    names = [stem.with_name(f"{stem.name}-{n}") for n in range(FILES)]
    paths = [(n.with_suffix(".jsonl"), n.with_suffix(".jsonl.gz")) for n in names]
    with contextlib.ExitStack() as files:
        sinks = [Sink(files.enter_context(p.open("wb")), files.enter_context(g.open("wb"))) for p, g in paths]
        sink = Sinks(sinks, stem.parent / f"{stem.name}-columnar" if columnar else None)
        if sink.folder is not None:
            sink.folder.mkdir()
        fetched = fetch_prefixes(bucket, prefixes, sink, workers, local=local, window=window, columnar=columnar)
    lines = [str(f) for pair in paths for f in pair if f.stat().st_size]
    return lines + [str(f) for f in sink.files], fetched


FILES = max(2, min(4, os.cpu_count() or 2))


def query(
    bucket: Bucket,
    start: datetime,
    end: datetime,
    sql: str | None,
    fmt: str,
    out: TextIO,
    workers: int = 16,
    local: LocalCopies | None = None,
) -> Fetched:
    """Fetch the range's objects (verified local copies first), load them, answer `sql`
    (or print the summary)."""
    bucket.client.head_bucket(Bucket=bucket.name)  # one clear error before many requests
    hours = hour_prefixes(start, end)
    with tempfile.TemporaryDirectory(prefix="logs_query_") as tmp:
        # records and errors: two listings at once; DuckDB's import meanwhile
        with ThreadPoolExecutor(3) as both:
            connected = both.submit(connect)
            window = (start, end)  # compacted objects wholly outside it are not read
            record_hours = [h + "/" for h in hours]
            records = both.submit(
                _fetch_to_files, bucket, record_hours, Path(tmp) / "logs", workers, local, window, columnar_suffix()
            )
            error_hours = [ERROR_PREFIX + h + "/" for h in hours]
            errors_files, errors = _fetch_to_files(bucket, error_hours, Path(tmp) / "errors", workers, local, window)
            logs_files, fetched = records.result()
            con = connected.result()
        try:
            load_tables(con, logs_files, errors_files, start, end)
        except Exception as exc:
            if type(exc).__module__.startswith(("duckdb", "_duckdb")):
                first = str(exc).strip().splitlines()[0]
                raise Failure(f"the objects in s3://{bucket.name} could not be read as records: {first}") from None
            raise
    fetched.objects += errors.objects
    fetched.bytes += errors.bytes
    fetched.local += errors.local
    fetched.prefixes += errors.prefixes
    fetched.seconds += errors.seconds
    if sql is None:
        summary(con, out, start, end)
    else:
        columns, rows = run_sql(con, sql)
        write_result(columns, rows, fmt, out)
    return fetched


def parse_args(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> tuple[argparse.Namespace, datetime, datetime]:
    """The arguments and the range they name; `parser.error` on any mistake in them."""
    args = parser.parse_args(argv)
    if args.end and args.since:
        parser.error("--to goes with --from, not with --since")
    try:
        start, end = time_range(args.since, args.start, args.end)
        hour_prefixes(start, end)
    except ValueError as exc:
        parser.error(str(exc))
    if args.sql is not None and not args.sql.strip():
        parser.error("the SQL is empty")
    return args, start, end


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    args, start, end = parse_args(build_parser(), argv)
    out = out or sys.stdout
    try:
        if answered_by_dashboard(args, start, end, out):
            return 0
        bucket = Bucket(s3_client(None if args.aws else args.endpoint_url, args.region, args.workers), args.bucket)
        began = time.perf_counter()
        local = local_copies(args)
        fetched = query(bucket, start, end, args.sql, args.format, out, args.workers, local)
        if local is not None:
            local.trim()
        if not args.quiet:
            what = read_note(fetched.objects, fetched.local if local is not None else None, fetched.bytes, args.bucket)
            print(f"logs_query: {what} in {time.perf_counter() - began:.2f} s", file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        print("logs_query: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if args.debug:
            raise
        print(f"logs_query: error: {describe(exc, args.bucket)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
