"""The bucket outlives LocalStack: the real LocalStack 4.14.0 with the project's hooks
(ready.d: restore, provision, watch; shutdown.d: save), stopped as `docker stop` stops
it (SIGTERM to LocalStack alone, tests/support/localstack_host.py `terminate`) or killed
(SIGKILL to everything, `kill`), then started again on the same saved-logs folder (the
compose volume). Traffic: tests/support/stop_scenario.py; bench/stop_bench.py repeats
the same stops and prints the figures docs/persistence.md quotes.

Each test has a LocalStack of its own: the hooks provision the stack's default names.
"""

from __future__ import annotations

import gzip

import boto3
import pytest
from support.localstack_host import LocalStack
from support.net import wait_until
from support.s3 import bucket_objects
from support.shipper import Shipper
from support.stop_scenario import BUCKET, STREAM, Writer, request_numbers, s3_client, stop_with_traffic

pytestmark = pytest.mark.localstack

# A stop may lose what the stream held and, for a crash, what the watcher had not saved:
# the lines accepted during the last few seconds. The tests print what they measured.
LOSS_BOUND_SECONDS = 5.0


@pytest.fixture
def stack(localstack_interpreters, tmp_path):
    """A LocalStack with the project's hooks, as the compose file runs it; stopped at the end."""
    instance = LocalStack(localstack_interpreters, tmp_path / "localstack")
    yield instance.start()
    instance.stop()


@pytest.fixture
def traffic(stack, tmp_path):
    """The writer and the fluentd stand-in shipping its log into the stack's stream."""
    kinesis = boto3.client("kinesis", endpoint_url=stack.endpoint, region_name="us-east-1")
    writer = Writer(tmp_path / "access.log")
    writer.log.touch()
    shipper = Shipper(kinesis, STREAM, writer.log, tmp_path / "nginx-access.pos", max_backoff=1.0).start()
    yield writer, shipper
    writer.stop()
    shipper.stop()


def test_a_stop_and_start_bring_back_every_object_byte_for_byte(stack, traffic):
    # given: lines the pipeline wrote, and objects of every other kind a user may have
    writer, _ = traffic
    s3 = s3_client(stack)
    writer.write(300)
    assert wait_until(lambda: sum(request_numbers(bucket_objects(s3, BUCKET)).values()) == 300, 60, interval=0.5)
    others = {
        "2026/11/27/09/nginx_access_log_20261127T090000000Z_shardId-000000000000_1.json.gz": gzip.compress(
            b'{"status":200}\n', mtime=0
        ),
        "2026/11/27/09/_compaction.json": b'{"object":"x","sources":[]}',
        "exports/with space+plus/ünïcode.json": b"{}\n",
        "odd//key/../.": b"a key no file system holds as written",
    }
    for key, body in others.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    s3.put_object(Bucket=BUCKET, Key="deleted.json", Body=b"{}\n")
    s3.delete_object(Bucket=BUCKET, Key="deleted.json")
    before = bucket_objects(s3, BUCKET)
    assert "deleted.json" not in before and len(before) > len(others)

    # when: LocalStack stops as `docker stop` stops it, and starts again
    stack.terminate()
    assert stack.survivors == set()  # as Docker ends the container: nothing of it runs on
    stack.start()

    # then: the same keys with the same bytes, the deletion kept, before the stream existed
    s3 = s3_client(stack)
    assert bucket_objects(s3, BUCKET) == before
    head = s3.head_object(Bucket=BUCKET, Key=next(k for k in others if k.endswith(".gz")))
    assert head["ContentEncoding"] == "gzip" and head["ContentType"] == "application/x-ndjson"
    provision_log = (stack.state_dir / "provision.log").read_text()
    assert f"restored {len(before)} objects" in provision_log
    assert provision_log.index("restored") < provision_log.index(f"stream    {STREAM}: created")
    assert f"bucket    {BUCKET}: unchanged" in provision_log
    # and the pipeline goes on: new lines land beside the old ones, none twice
    writer.write(50)
    assert wait_until(lambda: sum(request_numbers(bucket_objects(s3, BUCKET)).values()) == 350, 60, interval=0.5)
    assert set(request_numbers(bucket_objects(s3, BUCKET)).values()) == {1}


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_with_traffic_running_a_stop_keeps_every_saved_object_and_loses_only_the_last_seconds(stack, tmp_path, how):
    # given traffic running; when LocalStack gets SIGTERM alone (`docker stop`) or
    # everything SIGKILL (a crash), and starts again while the shipper retries
    outcome = stop_with_traffic(stack, tmp_path / "traffic", how)
    print(f"\n{outcome.summary()}")
    # then no line is written twice, no object changed its bytes, and lines were lost only
    # among those written in the last seconds before the stop
    assert outcome.duplicated == [] and outcome.objects_changed == []
    assert outcome.lost_written_after_stop == []
    assert max(outcome.lost_ages, default=0) <= LOSS_BOUND_SECONDS, outcome.lost_ages
    assert outcome.accepted_at_stop > len(outcome.lost)
    if how == "terminate":  # the shutdown hook saved every object the bucket held
        assert outcome.objects_lost == []
