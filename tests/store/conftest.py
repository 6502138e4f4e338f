from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bbot.controller.store import Store
from tests.store.databases import database_url, open_store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_store(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind, for tests that open stores themselves."""
    with database_url(request.param, tmp_path) as empty:
        yield empty
