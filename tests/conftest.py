"""Shared fixtures: an emulator on loopback and the handler pointed at it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import ModuleType

import boto3
import pytest
from support import moto
from support.skip_policy import (  # noqa: F401 - hooks: only the Docker test may skip quietly
    pytest_runtest_logreport,
    pytest_sessionfinish,
    pytest_terminal_summary,
)

# The handler builds its S3 client at import, as in Lambda: give it a region and dummy
# credentials first, so no test can reach a real account.
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_name, None)
os.environ.update(moto.DUMMY_ENV)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto.moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws(moto_endpoint: str) -> Iterator[str]:
    """An empty emulated account for this test; yields the endpoint URL."""
    moto.reset(moto_endpoint)
    yield moto_endpoint
    moto.reset(moto_endpoint)


@pytest.fixture
def s3_client(aws: str):
    return boto3.client("s3", endpoint_url=aws, region_name="us-east-1")


@pytest.fixture
def bucket(s3_client) -> str:
    s3_client.create_bucket(Bucket="nginx-accesslog")
    return "nginx-accesslog"


@pytest.fixture
def handler_module(s3_client, bucket: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The deployed handler module, its module-level S3 client talking to moto."""
    import kinesis_event_to_s3 as module

    monkeypatch.setattr(module, "s3", s3_client)
    monkeypatch.setattr(module, "BUCKET_NAME", bucket)
    monkeypatch.setattr(module, "COMPRESSION", "")
    return module


def pytest_report_header(config: pytest.Config) -> str:
    return f"CI={os.environ.get('CI', '')}"


@pytest.fixture(scope="module")
def monkeypatch_module():
    """The handler module for tests that set its S3 edge themselves (restored afterwards)."""
    import kinesis_event_to_s3 as module

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "s3", None)
        patch.setattr(module, "COMPRESSION", "")
        patch.setattr(module, "log", lambda *args, **kwargs: None)
        yield module


@pytest.fixture
def nginx(tmp_path):
    """A real nginx running the project's config on 127.0.0.1 (Debian's package)."""
    from support.nginx import Nginx
    from support.tools import require

    server = Nginx(require("nginx", "the real web server of the stack"), tmp_path / "nginx")
    yield server
    server.stop()


# --- the real LocalStack 4.14.0 (tests/support/localstack_host.py) ------------------------


@pytest.fixture(scope="session")
def localstack_interpreters():
    """LocalStack's venv (Python 3.13) and the functions' (3.12 + boto3), built once and cached."""
    from support.localstack_host import Missing, install
    from support.tools import unavailable

    try:
        return install()
    except Missing as exc:
        unavailable(f"real LocalStack 4.14.0 cannot run here: {exc}")


@pytest.fixture(scope="session")
def localstack(localstack_interpreters, tmp_path_factory):
    """One LocalStack for the session, without hooks: tests isolate themselves by
    provisioning their own names (`pipeline_names`). Stopped, with all it started, at the end."""
    from support.localstack_host import running

    with running(localstack_interpreters, tmp_path_factory.mktemp("localstack"), provision_hook=False) as instance:
        yield instance


@pytest.fixture
def pipeline_names(request):
    """Stream, bucket, role and function names of this test's own pipeline."""
    from support.localstack_host import PipelineNames

    return PipelineNames.for_test(request.node.name)


@pytest.fixture(scope="session")
def engine_env() -> Iterator[dict[str, str]]:
    """The environment in which `docker` and `docker compose` reach the test engine: a
    private dockerd with the stand-in images (tests/support/engine.py), or the user's
    own engine with CLP_TEST_ENGINE=user. Skips, saying why, where neither can run
    (the skip fails CI)."""
    from support.engine import engine_problem, mode, private_engine

    problem = engine_problem()
    if problem is not None:
        pytest.skip(problem)
    if mode() == "user":
        yield dict(os.environ)
        return
    with private_engine() as engine:
        yield engine.env


@pytest.fixture
def stack_factory(engine_env, tmp_path_factory):
    """Make stacks of the test's own (support/stack.py); each is removed at the end."""
    from support.stack import Stack

    made: list[Stack] = []

    def make(**settings: str) -> Stack:
        stack = Stack(tmp_path_factory.mktemp("stack"), engine_env, settings=settings)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.close()
