"""The pipeline without Docker: real nginx, moto as AWS, the real provisioning and handler,
stand-ins (tests/support) for fluentd's shipping and Lambda's event source mapping."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass

import boto3
import init_resource
import pytest
from support.event_source_mapping import EventSourceMapping, load_deployed_handler
from support.net import wait_until
from support.s3 import bucket_objects
from support.shipper import Shipper

STREAM, BUCKET, FUNCTION = "nginx-accesslog-stream", "nginx-accesslog", "KinesisAccessLogToS3"


@dataclass
class Pipeline:
    endpoint: str
    nginx: object
    shipper: Shipper
    mapping: EventSourceMapping
    handler_module: object
    s3: object
    kinesis: object

    def records(self) -> list[tuple[str, dict]]:
        """(key, record) for every line in every record object."""
        return [
            (key, json.loads(line))
            for key, body in bucket_objects(self.s3, BUCKET).items()
            if not key.startswith("errors/")
            for line in body.splitlines()
        ]

    def errors(self) -> list[dict]:
        return [
            json.loads(line)
            for body in bucket_objects(self.s3, BUCKET, "errors/").values()
            for line in body.splitlines()
        ]

    def wait_for(self, count: int, timeout: float = 60) -> list[tuple[str, dict]]:
        """Until at least `count` records are in S3 (then a moment more, to catch extras)."""
        wait_until(lambda: len(self.records()) >= count, timeout, interval=0.25)
        self.mapping_idle()
        return self.records()

    def mapping_idle(self, quiet: float = 1.5) -> None:
        """Until the shipper and the mapping have nothing left in flight."""

        def settled():
            before = (self.shipper.shipped, len(self.mapping.invocations))
            time.sleep(quiet)
            return before == (self.shipper.shipped, len(self.mapping.invocations))

        wait_until(settled, 30, interval=0)

    def error_lines(self) -> list[bytes]:
        return [base64.b64decode(e["rawData"]) for e in self.errors()]


def provision(endpoint: str, *extra: str) -> None:
    assert init_resource.main(["--endpoint-url", endpoint, "--wait-timeout", "10", *extra]) == 0


@pytest.fixture
def start_pipeline(aws, nginx, tmp_path):
    """Provision, then start the shipper and the mapping; returns a Pipeline."""
    started = []

    def _start(*provision_args: str, flush_interval: float = 0.2) -> Pipeline:
        provision(aws, *provision_args)
        clients = {"endpoint_url": aws, "region_name": "us-east-1"}
        kinesis, s3, lam = (boto3.client(n, **clients) for n in ("kinesis", "s3", "lambda"))
        config = lam.get_function_configuration(FunctionName=FUNCTION)
        environment = {**config["Environment"]["Variables"], "AWS_ENDPOINT_URL": aws, "AWS_DEFAULT_REGION": "us-east-1"}
        module = load_deployed_handler(init_resource.function_zip(), environment, tmp_path)
        module.log = lambda *args, **kwargs: None  # keep the test output readable
        (mapping,) = lam.list_event_source_mappings(FunctionName=FUNCTION)["EventSourceMappings"]
        shipper = Shipper(kinesis, STREAM, nginx.access_log, tmp_path / "nginx-access.pos", flush_interval)
        esm = EventSourceMapping(aws, mapping["UUID"], lambda event, context: module.handler(event, context))
        pipeline = Pipeline(aws, nginx, shipper.start(), esm.start(), module, s3, kinesis)
        started.append(pipeline)
        return pipeline

    yield _start
    for pipeline in started:
        pipeline.shipper.stop()
        pipeline.mapping.stop()
