"""Fixtures for the HTTP door's tests: fake tiers and a router with its HTTP door, in this process."""

from __future__ import annotations

import pytest

from tests.router.conftest import started  # noqa: F401  (starts items, stops them after the test)
from tests.http.helpers import HttpMesh


@pytest.fixture
async def mesh(tmp_path, started):  # noqa: F811
    """Tiers a (accuracy 0.9) and b (0.5, cheaper), 10 ms a token, under a router with its HTTP door on a free port."""
    return await started(HttpMesh(tmp_path, {"a": 0.01, "b": 0.01}))
