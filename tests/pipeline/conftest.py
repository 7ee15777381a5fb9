"""The pipeline without Docker, on the real LocalStack 4.14.0: real nginx -> the fluentd
stand-in (tests/support/shipper.py) -> LocalStack's Kinesis (kinesis-mock) -> LocalStack's
event source mapping -> the deployed handler in LocalStack's Lambda (host executor,
tests/support/lambda_host_executor) -> LocalStack's S3."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import time
from dataclasses import dataclass, field

import boto3
import init_resource
import pytest
from support.localstack_host import LocalStack, PipelineNames
from support.net import wait_until
from support.s3 import bucket_objects
from support.shipper import Shipper


@dataclass
class Pipeline:
    localstack: LocalStack
    names: PipelineNames
    nginx: object
    shipper: Shipper
    s3: object
    kinesis: object
    lambda_: object
    shippers: list[Shipper] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return self.localstack.endpoint

    def records(self) -> list[tuple[str, dict]]:
        """(key, record) for every line in every record object."""
        return [
            (key, json.loads(line))
            for key, body in bucket_objects(self.s3, self.names.bucket).items()
            if not key.startswith("errors/")
            for line in body.splitlines()
        ]

    def errors(self) -> list[dict]:
        return [
            json.loads(line)
            for body in bucket_objects(self.s3, self.names.bucket, "errors/").values()
            for line in body.splitlines()
        ]

    def error_lines(self) -> list[bytes]:
        return [base64.b64decode(e["rawData"]) for e in self.errors()]

    def invocations(self) -> list[dict]:
        """Every invocation of this pipeline's function, as the function process saw it."""
        return self.localstack.invocations(self.names.function)

    def wait_for(self, count: int, timeout: float = 60) -> list[tuple[str, dict]]:
        """Until at least `count` records are in S3, then until nothing moves (to catch extras)."""
        assert wait_until(lambda: len(self.records()) >= count, timeout, interval=0.25), (
            f"{len(self.records())} of {count} records in S3 after {timeout} s"
        )
        self.settle()
        return self.records()

    def settle(self, quiet: float = 2.5) -> None:
        """Until the shipper and LocalStack's mapping (1 s polls) have nothing in flight."""

        def settled() -> bool:
            before = (self.shipper.shipped, len(self.invocations()))
            time.sleep(quiet)
            return before == (self.shipper.shipped, len(self.invocations()))

        assert wait_until(settled, 60, interval=0)

    def mapping(self) -> dict:
        (mapping,) = self.lambda_.list_event_source_mappings(FunctionName=self.names.function)["EventSourceMappings"]
        return mapping

    def new_shipper(self, flush_interval: float = 0.2, **options) -> Shipper:
        """A shipper (fluentd) on the same log and position file as the current one;
        `options` as Shipper takes them (e.g. output="kinesis_streams")."""
        shipper = Shipper(
            self.kinesis, self.names.stream, self.nginx.access_log, self.shipper.pos_file, flush_interval, **options
        )
        self.shippers.append(shipper)
        self.shipper = shipper
        return shipper.start()


def provision(endpoint: str, *args: str) -> str:
    """Run the real provisioning; its output (it must succeed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = init_resource.main(["--endpoint-url", endpoint, "--wait-timeout", "60", *args])
    assert code == 0, out.getvalue()
    return out.getvalue()


@pytest.fixture
def start_pipeline(localstack, pipeline_names, nginx, tmp_path):
    """Provision this test's own pipeline in the shared LocalStack and start the shipper;
    afterwards stop the shipper and tear the pipeline down (init_resource --teardown)."""
    started: list[Pipeline] = []

    def _start(*provision_args: str, flush_interval: float = 0.2, **shipper_options) -> Pipeline:
        provision(localstack.endpoint, *pipeline_names.args(), *provision_args)
        clients = {"endpoint_url": localstack.endpoint, "region_name": "us-east-1"}
        kinesis, s3, lam = (boto3.client(n, **clients) for n in ("kinesis", "s3", "lambda"))
        position = tmp_path / "nginx-access.pos"
        shipper = Shipper(kinesis, pipeline_names.stream, nginx.access_log, position, flush_interval, **shipper_options)
        pipeline = Pipeline(localstack, pipeline_names, nginx, shipper.start(), s3, kinesis, lam, [shipper])
        started.append(pipeline)
        return pipeline

    yield _start
    for pipeline in started:
        for shipper in pipeline.shippers:
            shipper.stop()
        with contextlib.redirect_stdout(io.StringIO()):
            init_resource.main(["--endpoint-url", localstack.endpoint, *pipeline_names.args(), "--teardown", "--force"])
