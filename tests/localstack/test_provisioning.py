"""init/init_resource.py against the real LocalStack 4.14.0: converge, re-run, --status,
--teardown, and a function that ends `Failed` (tests/init covers the same on moto, faster)."""

from __future__ import annotations

import contextlib
import io

import boto3
import init_resource
import pytest
from support.report import outcomes

pytestmark = pytest.mark.localstack


def run(endpoint: str, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = init_resource.main(["--endpoint-url", endpoint, "--wait-timeout", "60", *args])
    return code, out.getvalue(), err.getvalue()


def test_converge_rerun_status_and_teardown(localstack, pipeline_names):
    names, endpoint = pipeline_names, localstack.endpoint
    clients = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    lam = boto3.client("lambda", **clients)
    # given nothing: --status says what is missing
    code, out, _ = run(endpoint, *names.args(), "--status")
    assert code == 1 and f"stream    {names.stream}: missing" in out
    # when provisioning runs, it creates every part
    code, out, err = run(endpoint, *names.args(), "--shards", "2")
    assert code == 0, out + err
    assert set(outcomes(out).values()) == {"created"}, out
    config = lam.get_function_configuration(FunctionName=names.function)
    assert config["State"] == "Active" and config["Runtime"] == "python3.12"
    (mapping,) = lam.list_event_source_mappings(FunctionName=names.function)["EventSourceMappings"]
    assert mapping["State"] == "Enabled" and mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # and a second run changes nothing and says so
    code, out, _ = run(endpoint, *names.args(), "--shards", "2")
    assert code == 0 and "Nothing to change" in out, out
    # --status reports each part
    code, out, _ = run(endpoint, *names.args(), "--status")
    assert code == 0, out
    assert f"stream    {names.stream}: ACTIVE, 2 shard(s)" in out
    assert f"function  {names.function}: Active" in out
    assert "Enabled" in out and f"bucket    {names.bucket}: 0 record object(s), 0 error object(s)" in out
    # LocalStack differs from AWS: its mapping's LastProcessingResult never changes
    assert "last processing result: No records processed" in out
    # another KINESIS_SHARDS (--shards) reshards the stream and says so
    code, out, err = run(endpoint, *names.args(), "--shards", "3")
    assert code == 0 and f"stream    {names.stream}: updated (2 -> 3 shard(s))" in out, out + err
    kinesis = boto3.client("kinesis", **clients)
    assert kinesis.describe_stream_summary(StreamName=names.stream)["StreamDescriptionSummary"]["OpenShardCount"] == 3
    # --teardown removes everything and is idempotent
    s3 = boto3.client("s3", **clients)
    s3.put_object(Bucket=names.bucket, Key="2026/11/26/10/x.json", Body=b"{}\n")
    code, out, err = run(endpoint, *names.args(), "--teardown")
    assert code == 1 and names.bucket in err  # refuses a bucket with objects
    code, out, err = run(endpoint, *names.args(), "--teardown", "--force")
    assert code == 0, out + err
    assert names.bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert names.function not in [f["FunctionName"] for f in lam.list_functions()["Functions"]]
    assert names.stream not in boto3.client("kinesis", **clients).list_streams()["StreamNames"]
    assert run(endpoint, *names.args(), "--teardown", "--force")[0] == 0


def test_function_that_ends_failed_is_reported_with_its_reason(failing_localstack, pipeline_names):
    # given LocalStack without a Lambda executor that works here (its default needs Docker),
    # so the function it creates ends State: Failed
    endpoint = failing_localstack.endpoint
    lam = boto3.client("lambda", endpoint_url=endpoint, region_name="us-east-1")
    # when provisioning runs
    code, out, err = run(endpoint, *pipeline_names.args(), "--shards", "1")
    config = lam.get_function_configuration(FunctionName=pipeline_names.function)
    assert config["State"] == "Failed"
    reason = config["StateReason"]
    # then it fails with one line naming the state and LocalStack's reason
    assert code == 1, out + err
    assert err.count("\n") == 1 and "Failed" in err and reason in err, err
    # and a second run does not call the Failed function unchanged
    code, out, err = run(endpoint, *pipeline_names.args(), "--shards", "1")
    assert code == 1 and "Failed" in err, out + err
    assert reason in err, out + err
    # LocalStack differs from AWS: it cannot delete a Failed function, so the second run
    # cannot create it anew and says both things
    assert "deleting it to create it anew failed" in err, err
    # and teardown removes everything else, then names what it had to leave
    code, out, err = run(endpoint, *pipeline_names.args(), "--teardown", "--force")
    assert code == 1 and f"teardown incomplete: function {pipeline_names.function}" in err, out + err
    assert outcomes(out)["stream"] == "deleted" and outcomes(out)["bucket"] == "deleted", out
