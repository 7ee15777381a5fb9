"""The test-only Lambda executor (tests/support/lambda_host_executor) behaves like the
python3.12 runtime where our handler relies on it, and says where it does not."""

from __future__ import annotations

import base64
import io
import json
import time
import zipfile

import boto3
import pytest

pytestmark = pytest.mark.localstack

SOURCE = """
import os, sys
import boto3

def handler(event, context):
    if event.get("fail"):
        raise ValueError("asked to fail")
    print("hello from the function")
    return {
        "python": "%d.%d" % sys.version_info[:2],
        "boto3": boto3.__version__,
        "endpoint": os.environ.get("AWS_ENDPOINT_URL"),
        "request_id": context.aws_request_id,
        "buckets": [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]],
        "event": event,
    }
"""


def package() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("probe.py", SOURCE)
    return buffer.getvalue()


def create(lam, name: str, runtime: str) -> dict:
    lam.create_function(
        FunctionName=name,
        Runtime=runtime,
        Role="arn:aws:iam::000000000000:role/probe",
        Handler="probe.handler",
        Code={"ZipFile": package()},
    )
    deadline = time.monotonic() + 60
    while (config := lam.get_function_configuration(FunctionName=name))["State"] == "Pending":
        assert time.monotonic() < deadline, config
        time.sleep(0.2)
    return config


@pytest.fixture
def lam(localstack):
    return boto3.client("lambda", endpoint_url=localstack.endpoint, region_name="us-east-1")


def test_function_runs_on_python_3_12_with_boto3_and_localstacks_endpoint(localstack, lam, pipeline_names):
    # given a python3.12 function
    name = pipeline_names.function
    assert create(lam, name, "python3.12")["State"] == "Active"
    boto3.client("s3", endpoint_url=localstack.endpoint, region_name="us-east-1").create_bucket(
        Bucket=pipeline_names.bucket
    )
    try:
        # when it is invoked through LocalStack's Lambda API
        response = lam.invoke(FunctionName=name, Payload=b'{"n": 1}', LogType="Tail")
        result = json.loads(response["Payload"].read())
        # then it ran on 3.12 with boto3, reaching LocalStack through AWS_ENDPOINT_URL
        assert "FunctionError" not in response
        assert result["python"] == "3.12" and result["boto3"]
        assert result["endpoint"] == localstack.endpoint
        assert pipeline_names.bucket in result["buckets"]
        assert result["event"] == {"n": 1} and result["request_id"] == response["ResponseMetadata"]["RequestId"]
        # and what it printed reached LocalStack as the invocation's log
        assert "hello from the function" in base64.b64decode(response["LogResult"]).decode()
        # and an exception is the function's error, as on AWS
        failed = lam.invoke(FunctionName=name, Payload=b'{"fail": true}')
        assert failed["FunctionError"] == "Unhandled"
        error = json.loads(failed["Payload"].read())
        assert error["errorType"] == "ValueError" and error["errorMessage"] == "asked to fail"
    finally:
        lam.delete_function(FunctionName=name)


def test_other_runtimes_end_failed_with_the_reason(lam, pipeline_names):
    # the executor does not reproduce other runtimes: such a function ends Failed, saying why
    config = create(lam, pipeline_names.function, "python3.11")
    assert config["State"] == "Failed"
    assert "python3.12 only" in config["StateReason"]
    # (not deleted: LocalStack 4.14.0 answers DeleteFunction on a Failed function with
    # InternalError "Unable to find version manager"; the name is this test's own)
