from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from origin_stub import OriginStubServer


@pytest.fixture
async def origin() -> AsyncIterator[OriginStubServer]:
    async with OriginStubServer() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session
