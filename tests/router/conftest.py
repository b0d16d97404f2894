"""Fixtures for router tests (helpers live in routing_helpers.py)."""

from __future__ import annotations

import pytest




@pytest.fixture
async def started():
    """Starts FakeTiers and Routers for a test (`await started(item)`) and stops them after it."""
    items: list = []

    async def start(item):
        await item.start()
        items.append(item)
        return item

    yield start
    for item in reversed(items):
        await item.stop()
