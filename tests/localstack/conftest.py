"""A LocalStack of their own for tests of failure states (the shared one is in tests/conftest.py)."""

from __future__ import annotations

import pytest
from support.localstack_host import running


@pytest.fixture(scope="session")
def failing_localstack(localstack_interpreters, tmp_path_factory):
    """A LocalStack whose hook fails (KINESIS_SHARDS=0 makes init_resource.py exit 2) and
    that has no Lambda executor for the host (LocalStack's default needs Docker)."""
    with running(
        localstack_interpreters,
        tmp_path_factory.mktemp("localstack-failing"),
        executor=False,
        environment={"KINESIS_SHARDS": "0"},
    ) as instance:
        yield instance
