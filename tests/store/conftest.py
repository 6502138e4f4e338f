from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bbot.controller.store import Store
from tests.store.databases import open_store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_store(request.param, tmp_path) as opened:
        yield opened
