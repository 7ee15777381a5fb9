"""Fixtures for the query tools: query/ on the import path, records written by the real handler."""

from __future__ import annotations

import sys

import pytest
from support.query_data import QUERY, Writer

sys.path.insert(0, str(QUERY))


@pytest.fixture
def writer(handler_module, monkeypatch: pytest.MonkeyPatch) -> Writer:
    monkeypatch.setattr(handler_module, "log", lambda *args, **kwargs: None)  # keep stdout for the tool
    return Writer(handler_module)
