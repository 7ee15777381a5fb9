"""A user's first session on the real engine: `./start.sh` from a fresh clone, a request,
its record in S3, and every after-start command the README and the landing page show,
each typed as written there (issue 17)."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from support import engine
from support.compose import ROOT, compose
from support.stack import BUCKET, started_stack

pytestmark = pytest.mark.docker

README = (ROOT / "README.md").read_text()
LANDING = (ROOT / "nginx" / "html" / "index.html").read_text()


@pytest.fixture(scope="module")
def started(engine_env, tmp_path_factory):
    """The stack as `./start.sh` leaves it, with what it printed and how long it took."""
    with started_stack(tmp_path_factory.mktemp("journey"), engine_env) as (stack, result, seconds):
        print(f"\n./start.sh on a fresh clone: healthy and provisioned in {seconds:.1f} s")
        yield stack, result.stdout


def closing_message(text: str) -> list[str]:
    """The lines from "The pipeline is up and provisioned." to the end of the text or of
    its code block."""
    lines = text.splitlines()
    first = lines.index("The pipeline is up and provisioned.")
    block = lines[first:]
    end = block.index("```") if "```" in block else len(block)
    return [line.rstrip() for line in block[:end]]


def test_start_says_what_the_readme_shows_and_every_service_is_healthy(started):
    stack, output = started
    # the closing message is the README's, with this stack's ports in the URLs
    shown = closing_message(README.split("<!-- /test-command -->", 1)[1])
    port = stack.env["WEB_PORT"]
    expected = [
        line.replace("http://localhost/", f"http://localhost:{port}/").replace(
            "http://localhost:8081/", f"http://localhost:{stack.env['DASHBOARD_PORT']}/"
        )
        for line in shown
    ]
    assert closing_message(output) == expected
    # every service `up` starts is running and healthy, publishing only on 127.0.0.1
    listed = [json.loads(line) for line in stack.compose("ps", "--format", "json").stdout.splitlines()]
    states = {entry["Service"]: (entry["State"], entry["Health"]) for entry in listed}
    started_by_up = {name for name, service in compose()["services"].items() if not service.get("profiles")}
    assert started_by_up >= {"localstack", "fluentd", "web"}
    assert states == {name: ("running", "healthy") for name in started_by_up}
    published = {
        (entry["Service"], publisher["URL"], publisher["PublishedPort"])
        for entry in listed
        for publisher in entry["Publishers"] or []
        if publisher["PublishedPort"]
    }
    assert published == {
        ("web", "127.0.0.1", int(port)),
        ("localstack", "127.0.0.1", int(stack.env["LOCALSTACK_PORT"])),
        ("dashboard", "127.0.0.1", int(stack.env["DASHBOARD_PORT"])),
    }


def test_each_request_is_an_object_in_s3_within_a_second_or_so(started):
    stack, _ = started
    s3 = stack.s3()
    delays = []
    for number in range(8):
        path = f"/journey-{uuid.uuid4().hex[:8]}-{number}"
        before = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
        assert stack.request(path) == 404
        answered = time.monotonic()
        found = None
        while found is None and time.monotonic() - answered < 30:
            # listing, then reading only the new objects: no waiter matches an object's contents
            for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
                key = item["Key"]
                # a new line is in a raw object for its first 90 s: the compactor's objects
                # (gzip) and manifests cannot hold it yet, and may vanish when it merges them
                if key in before or "_compacted_" in key or key.endswith("_compaction.json"):
                    continue
                if path.encode() in s3.get_object(Bucket=BUCKET, Key=key)["Body"].read():
                    found = time.monotonic() - answered
                    break
            time.sleep(0.05)
        assert found is not None, f"{path} did not reach S3 within 30 s"
        delays.append(found)
        time.sleep(0.3)  # separate flushes: each request measures the whole path
    print(f"\nrequest -> S3 object, {len(delays)} requests: " + ", ".join(f"{d:.2f}" for d in delays) + " s")
    # the README's promise: every request is in S3 within seconds. The first may wait for
    # the function's first execution environment (4.8 s once on a loaded machine).
    assert statistics.median(delays) <= 1.5 and max(delays) <= 10, delays


def test_every_after_start_command_runs_as_written(started, tmp_path):
    stack, _ = started
    path = f"/journey-commands-{uuid.uuid4().hex[:8]}"
    stack.request(path)
    assert stack.wait_for_paths({path}, 30) == {path: 1}

    status = stack.run("status")
    assert status.returncode == 0, status.stderr
    assert re.search(r"^stream +nginx-accesslog-stream: ACTIVE", status.stdout, re.MULTILINE), status.stdout
    assert re.search(r"^function +KinesisAccessLogToS3: Active", status.stdout, re.MULTILINE)
    assert re.search(r"^bucket +nginx-accesslog: \d+ record object", status.stdout, re.MULTILINE)

    listing = stack.run("ls")
    assert listing.returncode == 0, listing.stderr
    keys = [line.split()[-1] for line in listing.stdout.splitlines()]
    assert keys and all(re.fullmatch(r"\d{4}/\d{2}/\d{2}/\d{2}/nginx_access_log_.+\.json", key) for key in keys)
    shown = [stack.run("cat", key, "--pretty") for key in keys]
    assert all(result.returncode == 0 for result in shown)
    assert f'"request_uri": "{path}"' in "".join(result.stdout for result in shown)

    logs = stack.run("logs", "--since", "10m")
    assert logs.returncode == 0, logs.stderr
    assert '"message": "batch processed"' in logs.stdout

    provisioned = stack.run("provision")
    assert provisioned.returncode == 0, provisioned.stdout + provisioned.stderr
    assert "The pipeline is up and provisioned." in provisioned.stdout

    traffic = stack.run("traffic", "--rate", "20", "--duration", "5")
    assert traffic.returncode == 0, traffic.stdout + traffic.stderr
    sent = int(re.search(r"sent (\d+) requests", traffic.stdout).group(1))
    assert sent >= 90

    def requests_in_the_summary() -> int:
        summary = stack.run("query")
        assert summary.returncode == 0, summary.stdout + summary.stderr
        return int(re.match(r"(\d+) requests", summary.stdout).group(1))

    # traffic's requests (and this test's) all reach the bucket and the query's summary
    deadline = time.monotonic() + 30
    while (counted := requests_in_the_summary()) < sent + 1 and time.monotonic() < deadline:
        time.sleep(1)
    assert counted >= sent + 1
    # sent + 1 is a floor (traffic's malformed requests may or may not leave a line): wait
    # until the count holds for 3 s, so no straggler lands between it and the SQL below
    settled = time.monotonic() + 20
    while time.monotonic() < settled:
        time.sleep(3)
        if (again := requests_in_the_summary()) == counted:
            break
        counted = again

    if engine.mode() == "private":
        # `compose up --build` (./start.sh again, or provision) can tag another build of the
        # same sources: it did on this engine, and the query then ran in a container of its
        # own. One more build of the same sources, under another id, makes that certain here.
        image = compose()["services"]["dashboard"]["image"]
        rebuilt = f"FROM {image}\nLABEL org.centralized-logging-pipeline.journey=built-again\n"
        subprocess.run(["docker", "build", "--quiet", "--tag", image, "-"], input=rebuilt, text=True, check=True,
                       capture_output=True, env={**stack.env, "DOCKER_BUILDKIT": "0"})  # fmt: skip

    # the dashboard answers on its port (curl): start.sh calls no docker, which is not there
    nodocker = tmp_path / "nodocker"
    nodocker.mkdir()
    (nodocker / "docker").write_text('#!/bin/sh\necho "start.sh called docker $*" >&2\nexit 99\n')
    (nodocker / "docker").chmod(0o755)
    quick = {**stack.env, "PATH": f"{nodocker}:{stack.env.get('PATH', os.environ['PATH'])}"}
    sql = stack.run("query", "--since", "15m", "--format", "json", "SELECT count(*) AS n FROM logs", env=quick)
    assert sql.returncode == 0, sql.stderr
    assert json.loads(sql.stdout.splitlines()[0])["n"] == counted  # JSON Lines, one row
    # from its loaded tables
    assert "answered by the dashboard's loaded tables" in sql.stderr, sql.stderr
    # and reads ahead while questions come: asked again once FRESH has passed, the range
    # was listed in full since by the dashboard itself, not for this question
    import dashboard  # query/ is on the path once support.stack is imported

    time.sleep(dashboard.FRESH + 1)
    again = stack.run("query", "--since", "15m", "--format", "json", "SELECT count(*) AS n FROM logs", env=quick)
    assert again.returncode == 0 and json.loads(again.stdout.splitlines()[0])["n"] == counted, again.stderr
    assert re.search(r"; as listed \d+\.\d\d s before\)", again.stderr), again.stderr
    # everything the tool imports loads from bytecode written in the image: the user `query`
    # can write none, and the base image ships none for the standard library (query/Dockerfile)
    imported = "import sys; sys.path.insert(0, '/opt/query'); import logs_query"
    loaded = stack.docker("exec", stack.container("dashboard"), "python3", "-v", "-c", imported, check=False)
    code = re.findall(r"^# code object from '?([^'\n]+)", loaded.stderr, re.MULTILINE)
    assert "/opt/query/__pycache__/logs_query.cpython-313.pyc" in code, loaded.stderr[-2000:]
    assert [path for path in code if not path.endswith(".pyc")] == [], "compiled at run time"
    # what the dashboard declines the tool answers from the bucket: the same rows
    both = "CREATE TABLE t AS SELECT count(*) AS n FROM logs; SELECT n FROM t"
    declined = stack.run("query", "--since", "15m", "--format", "json", both)
    assert declined.returncode == 0, declined.stderr
    assert "did not answer: it answers SELECT" in declined.stderr and "reading the bucket" in declined.stderr
    assert json.loads(declined.stdout.splitlines()[0])["n"] == counted

    compacted = stack.run("compact")
    assert compacted.returncode == 0, compacted.stdout + compacted.stderr
    assert re.search(r"compact_hours: \d+ prefix\(es\) checked", compacted.stdout + compacted.stderr)
    # a closed hour two days back (two objects, as the saved logs put back), merged by
    # ./start.sh compact in the query container: its part is kept in the volume the
    # dashboard reads before the saved logs have the part (query/README.md)
    s3, past = stack.s3(), (datetime.now(UTC) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    for n in range(2):
        record = {"request_uri": f"/closed/{n}", "timestamp": f"{past + timedelta(minutes=n):%Y-%m-%dT%H:%M:%SZ}",
                  "status": 200, "request_id": uuid.uuid4().hex}  # fmt: skip
        key = f"{past:%Y/%m/%d/%H}/nginx_access_log_{n}.json"
        s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(record, separators=(",", ":")).encode() + b"\n")
    span = ["--from", f"{past:%Y-%m-%dT%H:%M}", "--to", f"{past + timedelta(hours=1):%Y-%m-%dT%H:%M}"]
    compacted = stack.run("compact", *span)
    assert compacted.returncode == 0, compacted.stdout + compacted.stderr
    # (merged there, or by the compactor service if an hour turned meanwhile: same volume)
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{past:%Y/%m/%d/%H}/")["Contents"]
    assert not [item for item in listed if "nginx_access_log_" in item["Key"] and "_compacted_" not in item["Key"]]
    parts = [item["ETag"].strip('"') for item in listed if "_compacted_" in item["Key"]]
    cache = compose()["services"]["dashboard"]["environment"]["QUERY_CACHE_DIR"]
    kept = stack.docker("exec", stack.container("dashboard"), "ls", cache).stdout.split()
    # each part and its records as Parquet, `<MD5>.<the columns' hash>.parquet` (logs_query.columnar_suffix)
    assert [name for name in kept if not name.endswith(".parquet")] == parts, kept
    assert [re.sub(r"\.[0-9a-f]{12}\.parquet$", "", name) for name in kept if name.endswith(".parquet")] == parts, kept
    closed = stack.run("query", *span, "--format", "json", "SELECT count(*) AS n FROM logs")
    assert closed.returncode == 0 and json.loads(closed.stdout.splitlines()[0])["n"] == 2, closed.stderr
    assert "read 1 object(s) (1 already on this machine)" in closed.stderr, closed.stderr

    exported = stack.run("export", str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert f"to {tmp_path / 'export'}" in exported.stdout
    files = list((tmp_path / "export").rglob("*.json"))
    assert any(path in file.read_text() for file in files)
    assert all(file.stat().st_mode & 0o044 == 0o044 for file in files)  # readable, as any export


def follow_tail(stack, *args: str) -> tuple[str, int]:
    """`./start.sh tail ARGS` as a user runs it: it follows until a request made after it
    started shows up, then Ctrl-C (SIGINT to its process group); what it printed, and its
    exit code."""
    process = subprocess.Popen([str(stack.folder / "start.sh"), "tail", *args], cwd=stack.folder, env=stack.env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    path = f"/tail-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + 90
    while not any(path in line for line in lines) and time.monotonic() < deadline and process.poll() is None:
        stack.request(path)  # again until it shows: tail may still be starting
        time.sleep(1)
    os.killpg(process.pid, signal.SIGINT)
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        code = process.wait()
    reader.join(timeout=10)
    assert any(path in line for line in lines), "".join(lines)[-2000:]
    return "".join(lines), code


def test_the_landing_page_names_commands_that_run(started):
    stack, _ = started
    commands = sorted(set(re.findall(r"\./start\.sh ([a-z]+)", LANDING)))
    assert commands, "the landing page names no command"
    key = stack.run("ls").stdout.split()[-1]
    for command in commands:
        if command == "tail":  # it follows until Ctrl-C
            _, code = follow_tail(stack)
            assert code in (0, 130), code
            continue
        # as the page writes them: `cat <key from the list> --pretty`, the others alone
        result = stack.run("cat", key, "--pretty") if command == "cat" else stack.run(command)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
