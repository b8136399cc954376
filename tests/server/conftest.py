"""Fixtures for the server tests (helpers live in ``tests/server/helpers.py``)."""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from cortex.server.serve import CortexServer
from tests.server.helpers import running_server, write_config


@pytest.fixture(scope="module")
def chain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CortexServer]:
    """A shared server: workflow `chain` (pools `draft`, `answer`) on null engines."""
    path = write_config(tmp_path_factory.mktemp("chain"))
    with running_server(path) as server:
        yield server


@pytest.fixture()
def http(chain_server: CortexServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=chain_server.url, timeout=10.0) as client:
        yield client
