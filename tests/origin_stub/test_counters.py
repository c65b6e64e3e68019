"""``/_stub/counters`` and ``/_stub/reset``: how many requests reached the origin."""

from __future__ import annotations

from typing import Any

import aiohttp

from origin_stub import OriginStubServer

from .rawhttp import build_request, exchange


async def counters(http: aiohttp.ClientSession, origin: OriginStubServer, query: str = "") -> Any:
    async with http.get(f"{origin.url}/_stub/counters{query}") as resp:
        assert resp.status == 200
        return await resp.json()


async def test_counts_paths_and_targets_but_not_control(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    assert await counters(http, origin) == {"total": 0, "paths": {}, "requests": {}}
    for _ in range(3):
        async with http.get(f"{origin.url}/obj/a?size=10") as resp:
            await resp.read()
    async with http.head(f"{origin.url}/obj/a?size=20") as resp:
        pass
    async with http.post(f"{origin.url}/echo", data=b"x") as resp:
        await resp.read()
    async with http.get(f"{origin.url}/no/such/thing") as resp:
        assert resp.status == 404
    # exactly as received on the request line, percent-encoding and all
    await exchange(origin.port, build_request("GET", "/obj/b%20c?x=%41"))
    async with http.put(f"{origin.url}/_stub/script/s", json=[{}]) as resp:
        assert resp.status == 200

    assert await counters(http, origin) == {
        "total": 7,
        "paths": {"/obj/a": 4, "/echo": 1, "/no/such/thing": 1, "/obj/b%20c": 1},
        "requests": {
            "/obj/a?size=10": 3,
            "/obj/a?size=20": 1,
            "/echo": 1,
            "/no/such/thing": 1,
            "/obj/b%20c?x=%41": 1,
        },
    }
    assert await counters(http, origin, "?path=/obj/a") == {"path": "/obj/a", "count": 4}
    assert await counters(http, origin, "?path=/never") == {"path": "/never", "count": 0}


async def test_reset_clears_counters_scripts_and_records(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    async with http.put(f"{origin.url}/_stub/script/s", json=[{"body": "x"}]) as resp:
        assert resp.status == 200
    async with http.get(f"{origin.url}/s/s") as resp:
        assert await resp.read() == b"x"
    async with http.post(f"{origin.url}/_stub/reset") as resp:
        assert resp.status == 200
    assert await counters(http, origin) == {"total": 0, "paths": {}, "requests": {}}
    async with http.get(f"{origin.url}/_stub/script/s/requests") as resp:
        assert await resp.json() == []
    async with http.get(f"{origin.url}/s/s") as resp:
        assert resp.status == 404


async def test_each_app_has_its_own_counters(http: aiohttp.ClientSession) -> None:
    async with OriginStubServer() as one, OriginStubServer() as two:
        async with http.get(f"{one.url}/obj/x") as resp:
            await resp.read()
        assert (await counters(http, one))["total"] == 1
        assert (await counters(http, two))["total"] == 0
        assert one.state.paths["/obj/x"] == 1
