"""The dashboard's JSON API against moto: every panel's numbers equal answers computed in
plain Python from the requests written; bad parameters are 400s; loopback only."""

from __future__ import annotations

import collections
import json
import socket
import threading
import urllib.error
import urllib.request
from datetime import timedelta

import dashboard
import logs_query
import pytest
from support.dashboard_data import NOW, Request, sample
from support.s3 import bucket_objects

WINDOWS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "6h": timedelta(hours=6), "24h": timedelta(hours=24)}


def in_window(requests: list[Request], window: str) -> list[Request]:
    return [r for r in requests if NOW - WINDOWS[window] <= r.at < NOW]


def status_class(status: int) -> str:
    return f"{status // 100}xx"


@pytest.fixture
def written(traffic):
    traffic.write(sample())
    traffic.write_garbage(NOW - timedelta(minutes=5), ["not an access line", "\x16\x03 binary-ish"])
    traffic.write_garbage(NOW - timedelta(hours=2), ["older garbage"])
    return traffic


@pytest.mark.parametrize("window", list(WINDOWS))
def test_traffic_counts_per_class_and_per_bucket(serve, written, window):
    server = serve()
    status, body = server.get(f"/api/traffic?window={window}")
    assert status == 200
    expected = in_window(written.requests, window)
    classes = collections.Counter(status_class(r.status) for r in expected)
    assert body["requests"] == len(expected) > 0
    assert {c: n for c, n in body["totals"].items() if n} == dict(classes)
    # each bucket holds the requests whose time falls in it
    size = body["bucket_seconds"]
    per_bucket = collections.Counter((int(r.at.timestamp()) // size * size, status_class(r.status)) for r in expected)
    for cls, values in body["classes"].items():
        for t, n in zip(body["times"], values, strict=True):
            assert n == per_bucket[(t, cls)], (t, cls)
    assert len(body["times"]) <= 97  # 96 buckets, and the one the window starts in
    fives = classes["5xx"]
    assert body["rate_5xx_total"] == round(fives / len(expected), 4)


@pytest.mark.parametrize(("by", "field"), [("path", "path"), ("agent", "agent"), ("client", "client")])
def test_top_values_with_counts_and_errors(serve, written, by, field):
    server = serve()
    status, body = server.get(f"/api/top?window=6h&by={by}&limit=3")
    expected = in_window(written.requests, "6h")

    def value(r: Request) -> str:
        return r.path.split("?", 1)[0] if field == "path" else getattr(r, field)

    counts = collections.Counter(value(r) for r in expected)
    errors = collections.Counter(value(r) for r in expected if r.status >= 400)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:3]
    assert status == 200
    assert body["rows"] == [{"value": v, "requests": n, "errors": errors[v]} for v, n in ranked]


def test_top_path_is_the_query_tools_answer(serve, written, aws, capsys):
    # the same question through ./start.sh query's tool, over the same 6 h
    server = serve()
    _, body = server.get("/api/top?window=6h&by=path&limit=10")
    sql = logs_query.TOP_PATHS_PLAIN  # what the summary's "Top paths" answers
    start, end = NOW - timedelta(hours=6), NOW
    code = logs_query.main(
        [
            "--endpoint-url",
            aws,
            "--quiet",
            "--format",
            "json",
            "--from",
            start.isoformat(),
            "--to",
            end.isoformat(),
            sql,
        ]
    )
    tool = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert [(r["value"], r["requests"], r["errors"]) for r in body["rows"]] == [
        (r["path"], r["requests"], r["errors"]) for r in tool
    ]


def test_unparsed_lines_by_code_with_examples(serve, written):
    server = serve()
    _, one_hour = server.get("/api/errors?window=1h&examples=1")
    _, six_hours = server.get("/api/errors?window=6h&examples=5")
    assert one_hour["total"] == 2 and six_hours["total"] == 3
    (code,) = six_hours["codes"]
    assert code["code"] == "UnparsableLine" and code["lines"] == 3
    # newest first, decoded from the kept bytes
    assert code["examples"][:2] == ["not an access line", "\x16\x03 binary-ish"] or code["examples"][:2] == [
        "\x16\x03 binary-ish",
        "not an access line",
    ]
    assert code["examples"][2] == "older garbage"
    assert len(one_hour["codes"][0]["examples"]) == 1


@pytest.mark.parametrize("column", [False, True], ids=["no-column", "column-all-null"])
def test_latency_says_so_when_the_logs_carry_no_request_time(serve, written, monkeypatch, column):
    if column:  # the schema has request_time (issue 20), these records do not
        monkeypatch.setitem(logs_query.LOG_COLUMNS, "request_time", "DOUBLE")
    else:
        monkeypatch.delitem(logs_query.LOG_COLUMNS, "request_time", raising=False)
    server = serve()
    # (the sample's lines carry no request time: where the schema has the column, it is null)
    status, body = server.get("/api/latency?window=1h")
    assert status == 200 and body["available"] is False and body["message"] == "no request times in these logs"


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (DuckDB's quantile_cont)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def test_latency_percentiles_where_records_carry_request_time(serve, s3_client, bucket, monkeypatch):
    # given records with a request_time (the field issue 20 adds), one object per minute
    monkeypatch.setitem(logs_query.LOG_COLUMNS, "request_time", "DOUBLE")
    times: dict[int, list[float]] = collections.defaultdict(list)
    for minute in range(10):
        at = NOW - timedelta(minutes=minute + 1)
        lines = []
        for n in range(20):
            value = round(0.001 * ((n * 37 + minute * 11) % 500), 3)
            times[int(at.timestamp()) // 60 * 60].append(value)
            lines.append(
                json.dumps({"timestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "status": 200, "request_time": value})
            )
        key = f"{at:%Y/%m/%d/%H}/nginx_access_log_{at:%Y%m%dT%H%M%S}000Z_shardId-000000000000_{minute}.json"
        s3_client.put_object(Bucket=bucket, Key=key, Body="\n".join(lines).encode() + b"\n")
    server = serve()
    _, body = server.get("/api/latency?window=15m")
    assert body["available"] is True and body["samples"] == 200
    assert body["times"] == sorted(times)
    for index, t in enumerate(body["times"]):
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            assert body[name][index] == pytest.approx(_percentile(times[t], q))


def test_a_re_sent_line_is_counted_once_and_lines_without_an_id_each_time(serve, s3_client, bucket):
    # given one object, then a second holding a re-sent copy of two of its lines (same
    # request_id, as fluentd's re-send leaves them) and a line without an id logged twice
    at = NOW - timedelta(minutes=3)

    def record(request_id: str | None, status: int) -> str:
        fields = {"timestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "status": status, "request_uri": "/x"}
        return json.dumps({**fields, "request_id": request_id})

    first = [record(f"id{n}", 200 if n % 2 else 500) for n in range(6)] + [record(None, 404)]
    again = [first[0], first[1], record(None, 404)]
    for number, lines in enumerate((first, again)):
        key = f"{at:%Y/%m/%d/%H}/nginx_access_log_{at:%Y%m%dT%H%M%S}000Z_shardId-000000000000_{number}.json"
        s3_client.put_object(Bucket=bucket, Key=key, Body="\n".join(lines).encode() + b"\n")
    _, body = serve().get("/api/traffic?window=15m")
    # then six requests with ids once each, and both lines without an id
    assert body["requests"] == 8
    assert {c: n for c, n in body["totals"].items() if n} == {"2xx": 3, "5xx": 3, "4xx": 2}


def test_pipeline_freshness_and_objects_per_hour(serve, written, s3_client, bucket):
    server = serve()
    _, body = server.get("/api/pipeline?window=6h")
    newest = max(r.at for r in in_window(written.requests, "6h"))
    assert body["newest_record"] == newest.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert body["freshness_seconds"] == pytest.approx((NOW - newest.replace(microsecond=0)).total_seconds(), abs=0.1)
    listed: dict[str, list[int]] = collections.defaultdict(list)
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            if not item["Key"].startswith("errors/"):
                listed[item["Key"].rsplit("/", 1)[0]].append(item["Size"])
    hours = {h["hour"]: (h["objects"], h["bytes"]) for h in body["hours"]}
    first = (NOW - timedelta(hours=6)).strftime("%Y/%m/%d/%H")
    assert hours == {h: (len(s), sum(s)) for h, s in listed.items() if h >= first}
    assert body["function"] == {"available": False, "message": "not configured"}


def test_saved_logs_and_function_failures(serve, written, tmp_path, aws):
    import boto3

    # given a saved-logs folder like init/bucket_mirror.py's, and the function's log group
    folder = tmp_path / "saved" / "nginx-accesslog" / "2026" / "11" / "26" / "17"
    folder.mkdir(parents=True)
    (folder / "a.json").write_bytes(b"x" * 10)
    (folder / "b.json").write_bytes(b"y" * 5)
    (folder / ".saving-c.json").write_bytes(b"half")
    logs = boto3.client("logs", endpoint_url=aws, region_name="us-east-1")
    logs.create_log_group(logGroupName="/aws/lambda/KinesisAccessLogToS3")
    logs.create_log_stream(logGroupName="/aws/lambda/KinesisAccessLogToS3", logStreamName="s")
    at = int((NOW - timedelta(minutes=3)).timestamp() * 1000)
    lines = [
        {"level": "INFO", "message": "batch processed", "putFailures": [], "retryFrom": None},
        {"level": "INFO", "message": "batch processed", "putFailures": ["SlowDown"], "retryFrom": "4900001"},
        {"level": "INFO", "message": "batch processed", "putFailures": [], "retryFrom": None},
    ]
    logs.put_log_events(
        logGroupName="/aws/lambda/KinesisAccessLogToS3",
        logStreamName="s",
        logEvents=[{"timestamp": at + n, "message": json.dumps(line)} for n, line in enumerate(lines)],
    )
    server = serve(
        function=dashboard.FunctionLog(logs, "KinesisAccessLogToS3"), saved=dashboard.SavedLogs(tmp_path / "saved")
    )
    _, body = server.get("/api/pipeline?window=15m")
    assert body["saved"]["files"] == 2 and body["saved"]["bytes"] == 15
    function = body["function"]
    assert function["batches"] == 3 and function["failed"] == 1
    assert "SlowDown" in function["recent"][0]["text"]


def test_a_refresh_reads_only_new_objects_and_survives_a_compaction(serve, traffic, s3_client, bucket, monkeypatch):
    import compact_hours

    # given a first refresh over 3 hours of requests
    requests = sample(200, timedelta(hours=3))
    traffic.write(requests)
    server = serve()
    assert server.get("/api/traffic?window=6h")[1]["requests"] == 200
    gets: list[str] = []
    real_get = logs_query.Bucket.get
    monkeypatch.setattr(logs_query.Bucket, "get", lambda self, key: gets.append(key) or real_get(self, key))
    # when batches of the last minute land: the next refresh reads those objects only
    before = set(bucket_objects(s3_client, bucket))
    traffic.write(sample(50, timedelta(minutes=1)))
    new = set(bucket_objects(s3_client, bucket)) - before
    server.app.store.synced = None  # the next request refreshes at once
    assert server.get("/api/traffic?window=6h")[1]["requests"] == 250
    assert sorted(gets) == sorted(new)
    # when an object lands long after its records arrived (beyond the lag), the next full
    # listing of its hour finds it
    late = Request(NOW - timedelta(hours=2), "/late", 200, "curl/8.5.0", "127.0.0.1")
    traffic.write([late])
    server.app.store.synced = None
    assert server.get("/api/traffic?window=6h")[1]["requests"] == 250
    monkeypatch.setattr(dashboard, "FULL_LISTING", 0.0)
    server.app.store.synced = None
    assert server.get("/api/traffic?window=6h")[1]["requests"] == 251
    # when a closed hour is compacted, nothing is counted twice or lost: before the next
    # full listing and after it; the compacted object holds exactly the objects already
    # read, so it is taken as read, not fetched
    monkeypatch.setattr(dashboard, "FULL_LISTING", 3600.0)
    first_hour = requests[0].at.strftime("%Y/%m/%d/%H/")
    compact_hours.compact(logs_query.Bucket(s3_client, bucket), [first_hour], "gzip", 4)
    for full_listing in (3600.0, 0.0):
        monkeypatch.setattr(dashboard, "FULL_LISTING", full_listing)
        server.app.store.synced = None
        _, body = server.get("/api/traffic?window=6h")
        assert body["requests"] == 251 and sum(body["totals"].values()) == 251
    assert not any(key.startswith(first_hour) and "_compacted_" in key for key in gets)
    # and a compaction that took in an object this dashboard never read (it landed and was
    # merged between two refreshes) makes it read the hour again, from the compacted object
    merged_unseen = Request(requests[0].at + timedelta(seconds=1), "/merged-unseen", 200, "curl/8.5.0", "127.0.0.1")
    traffic.write([merged_unseen])
    compact_hours.compact(logs_query.Bucket(s3_client, bucket), [first_hour], "gzip", 4)
    server.app.store.synced = None
    _, body = server.get("/api/traffic?window=6h")
    assert body["requests"] == 252 and sum(body["totals"].values()) == 252
    assert any(key.startswith(first_hour) and "_compacted_" in key for key in gets)


def test_an_object_rewritten_with_fewer_lines_is_read_again(serve, traffic, s3_client, bucket):
    # given a refresh that read a batch of the last minute
    traffic.write(sample(10, timedelta(minutes=1)), batch=10)
    server = serve()
    assert server.get("/api/traffic?window=15m")[1]["requests"] == 10
    assert server.app.store.rereads == 0
    # when the function rewrites that object without its last 4 lines (after a failed put,
    # before its retry writes them under a new key)
    (key,) = bucket_objects(s3_client, bucket)
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"".join(body.splitlines(keepends=True)[:6]))
    server.app.store.synced = None
    # then the next refresh reads the hour again and counts what the object holds now
    assert server.get("/api/traffic?window=15m")[1]["requests"] == 6
    assert server.app.store.rereads == 1


BAD = [
    ("/api/traffic?window=2h", "unknown window '2h'; one of 15m, 1h, 6h, 24h"),
    ("/api/traffic?window=1h%27%20OR%201=1--", "unknown window"),
    ("/api/traffic?window=1h&window=6h", "parameter 'window' given 2 times"),
    ("/api/traffic?sql=SELECT%201", "unknown parameter 'sql'"),
    ("/api/top?by=path;DROP%20TABLE%20logs_all", "unknown by"),
    ("/api/top?by=status", "unknown by 'status'; one of path, agent, client"),
    ("/api/top?limit=0", "limit must be a whole number from 1 to 100"),
    ("/api/top?limit=1000000000000", "limit must be a whole number from 1 to 100"),
    ("/api/top?limit=10%20OR%201=1", "limit must be a whole number"),
    ("/api/top?limit=-1", "limit must be a whole number"),
    ("/api/top?limit=%EF%BC%95", "limit must be a whole number"),  # a full-width digit
    ("/api/errors?examples=11", "examples must be a whole number from 0 to 10"),
    ("/api/pipeline?limit=5", "unknown parameter 'limit'"),
]


@pytest.mark.parametrize(("path", "message"), BAD)
def test_bad_parameters_are_400_with_a_clear_message(serve, bucket, path, message):
    server = serve()
    status, body = server.get(path)
    assert status == 400 and message in body["error"]
    assert list(body) == ["error"]


def test_unknown_endpoint_method_and_a_failing_bucket(serve, s3_client, bucket):
    server = serve()
    assert server.get("/api/sql?q=1")[0] == 404
    request = urllib.request.Request(server.url + "/api/traffic", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as posted:
        urllib.request.urlopen(request, timeout=10)
    assert posted.value.code == 405
    # the bucket gone: 503 with one line saying why, never a 200 with zeros
    s3_client.delete_bucket(Bucket=bucket)
    status, body = server.get("/api/traffic?window=15m")
    assert status == 503 and body["error"].startswith("the logs could not be read: ")


def test_the_page_and_its_chart_library_are_served_from_the_stack(serve, bucket, uplot):
    server = serve()
    with urllib.request.urlopen(server.url + "/", timeout=10) as response:
        page = response.read().decode()
    assert (
        '<script src="/vendor/uPlot.iife.min.js">' in page
        and "http" not in page.split("<body>")[1].split("<footer>")[0]
    )
    with urllib.request.urlopen(server.url + "/vendor/uPlot.iife.min.js", timeout=10) as response:
        assert response.read() == (logs_query.Path(uplot) / "uPlot.iife.min.js").read_bytes()
    for path in ("/../dashboard.py", "/static/../dashboard.py", "/vendor/../../logs_query.py", "/app.js/"):
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url + path, timeout=10)
        assert missing.value.code == 404


@pytest.mark.parametrize(
    ("host", "status"),
    [("localhost:8081", 200), ("127.0.0.1", 200), ("[::1]:8081", 200), ("evil.example:8081", 403), ("", 403)],
)
def test_only_loopback_host_names_are_answered(serve, bucket, host, status):
    # a site whose name was rebound to 127.0.0.1 sends its own name as Host
    import http.client

    server = serve()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.putrequest("GET", "/api/traffic?window=15m", skip_host=True)
    if host:
        connection.putheader("Host", host)
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == status
    if status == 403:
        assert "only for localhost" in json.loads(response.read())["error"]
    connection.close()


def outside_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_the_server_listens_only_where_configured(serve, bucket):
    # the default is loopback; a server bound to 127.0.0.1 answers nowhere else: not on
    # 127.0.0.2 (loopback too, another address), not on the machine's outside address
    assert dashboard.build_parser().parse_args([]).host == "127.0.0.1"
    server = serve()
    assert server.get("/api/traffic?window=15m")[0] == 200
    for address in ["127.0.0.2", outside_address()]:
        if address is None:
            continue
        with socket.socket() as sock, pytest.raises(OSError):
            sock.settimeout(2)
            sock.connect((address, server.port))


def test_the_page_s_requests_checkpoint_once_enough_was_loaded(serve, written, monkeypatch):
    monkeypatch.setattr(dashboard, "TIDY_BYTES", 1000)
    server = serve()
    assert server.app.store.tidy() is None  # nothing loaded yet
    status, body = server.get("/api/traffic?window=1h")
    assert status == 200 and body["requests"] > 0
    for _ in range(200):  # the checkpoint follows the response
        if server.app.store.untidy == 0:
            break
        threading.Event().wait(0.05)
    assert server.app.store.untidy == 0
    # with this little traffic, another refresh loads nothing: no checkpoint is due
    assert server.get("/api/traffic?window=1h")[0] == 200 and server.app.store.tidy() is None
