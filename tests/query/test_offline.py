"""The query tool needs no network beyond the S3 endpoint: run it where only loopback exists."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from support.query_data import QUERY

TESTS = QUERY.parent / "tests"
INIT = QUERY.parent / "init"

SCRIPT = textwrap.dedent(
    """
    import socket, sys
    from datetime import UTC, datetime
    sys.path[:0] = [{query!r}, {tests!r}, {init!r}]
    try:
        socket.create_connection(("192.0.2.1", 443), timeout=2).close()
        sys.exit("the network is reachable: this test proves nothing here")
    except OSError:
        pass
    import boto3, logs_query
    from kinesis_event_to_s3 import line_to_json
    from support import moto
    now = datetime.now(UTC)
    line = f'127.0.0.1 - - [{{now:%d/%b/%Y:%H:%M:%S}} +0000] "GET /offline HTTP/1.1" 200 5 "-" "curl/8.5.0" "-"'
    prefix, record = line_to_json(line)
    with moto.moto_server() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="nginx-accesslog")
        s3.put_object(Bucket="nginx-accesslog", Key=prefix + "/nginx_access_log_x.json", Body=record + "\\n")
        sys.exit(logs_query.main(["--endpoint-url", endpoint, "--quiet", "--format", "csv",
                                  "SELECT request_uri, status FROM logs"]))
    """
)


def test_query_works_with_only_loopback(tmp_path):
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if not unshare or not ip or subprocess.run([unshare, "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs unshare -n (root) and ip to make a network namespace with only loopback")
    script = SCRIPT.format(query=str(QUERY), tests=str(TESTS), init=str(INIT))
    # a fresh HOME: no DuckDB extension cached from an earlier online run can help
    env = dict(os.environ, HOME=str(tmp_path))
    result = subprocess.run(
        [unshare, "-n", "sh", "-c", f'{ip} link set lo up && exec "$0" -c "$1"', sys.executable, script],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["request_uri,status", "/offline,200"]
