"""Cache poisoning: nothing a client sends may reach the origin and change a stored response unless
it is part of the cache key (or named by ``Vary``).  The origin here does what most web frameworks
do: it builds absolute links from ``X-Forwarded-Host``/``Forwarded``/``X-Host``..., honours URL and
method overrides, and reflects all of it into a cacheable page."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import EdgeFactory

HOSTILE = "evil.example"

# Header -> a hostile value a framework would act on.
ATTACKS = {
    "Host": HOSTILE,
    "X-Forwarded-Host": HOSTILE,
    "X-Host": HOSTILE,
    "X-Forwarded-Server": HOSTILE,
    "X-Original-Host": HOSTILE,
    "Forwarded": f"host={HOSTILE};proto=https",
    "X-Original-URL": f"/{HOSTILE}/admin",
    "X-Rewrite-URL": f"/{HOSTILE}/admin",
    "X-HTTP-Method-Override": "DELETE",
    "X-HTTP-Method": "DELETE",
    "X-Method-Override": "DELETE",
    "X-Forwarded-Prefix": f"/{HOSTILE}",
    "X-Forwarded-Port": "31337",
    "X-Forwarded-Scheme": "javascript",
    "X-Forwarded-Ssl": "on",
    "X-Real-IP": "6.6.6.6",
}
REFLECTED = [name.lower() for name in ATTACKS]


async def reflecting_page(request: web.Request) -> web.Response:
    """A framework-like page: every override it honours ends up in the (cacheable) body."""
    # As CGI, WSGI, PHP and Rack do: "X_Forwarded_Host" and "X-Forwarded-Host" are one variable.
    fields = {name.lower().replace("_", "-"): value for name, value in request.headers.items()}
    seen = {name: fields[name] for name in REFLECTED if name in fields}
    link_host = fields.get("x-forwarded-host") or fields.get("host")
    body = json.dumps({"link": f"https://{link_host}/next", "seen": seen})
    return web.Response(text=body, headers={"Cache-Control": "max-age=300"}, content_type="application/json")


@pytest.fixture
async def reflecting_origin() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", reflecting_page)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def get_json(url: str, headers: dict[str, str]) -> tuple[dict[str, object], str]:
    async with aiohttp.ClientSession() as client, client.get(url, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return json.loads(await resp.read()), resp.headers.get("X-Cache", "")


@pytest.mark.parametrize("header", list(ATTACKS))
async def test_hostile_header_never_poisons_the_stored_page(
    reflecting_origin: TestServer, start_edge: EdgeFactory, header: str
) -> None:
    origin_url = str(reflecting_origin.make_url("")).rstrip("/")
    edge = await start_edge(origin_url)
    url = str(edge.make_url(f"/page?attack={header}"))
    poisoned, status = await get_json(url, {header: ATTACKS[header]})  # the attacker fills the cache
    assert status == "MISS"
    assert HOSTILE not in json.dumps(poisoned), f"{header} reached the origin: {poisoned}"
    for _ in range(3):
        clean, _status = await get_json(url, {})
        assert HOSTILE not in json.dumps(clean)
        assert "DELETE" not in json.dumps(clean)
        seen = clean["seen"]
        assert isinstance(seen, dict)
        assert set(seen) == {"host"}  # only the origin's own Host reached it


@pytest.mark.parametrize("header", [name for name in ATTACKS if "-" in name])
async def test_an_underscore_spelling_is_stripped_as_well(
    reflecting_origin: TestServer, start_edge: EdgeFactory, header: str
) -> None:
    origin_url = str(reflecting_origin.make_url("")).rstrip("/")
    edge = await start_edge(origin_url)
    url = str(edge.make_url(f"/page/underscore?attack={header}"))
    poisoned, _ = await get_json(url, {header.replace("-", "_"): ATTACKS[header]})
    assert HOSTILE not in json.dumps(poisoned), f"{header.replace('-', '_')} reached the origin: {poisoned}"
    seen = poisoned["seen"]
    assert isinstance(seen, dict)
    assert set(seen) == {"host"}  # only the origin's own Host


async def test_all_hostile_headers_at_once_then_clean_clients(
    reflecting_origin: TestServer, start_edge: EdgeFactory
) -> None:
    origin_url = str(reflecting_origin.make_url("")).rstrip("/")
    edge = await start_edge(origin_url)
    url = str(edge.make_url("/page/all"))
    await get_json(url, dict(ATTACKS))
    for _ in range(5):
        clean, status = await get_json(url, {})
        assert status == "HIT"
        assert HOSTILE not in json.dumps(clean)
        assert clean["link"] == f"https://{reflecting_origin.host}:{reflecting_origin.port}/next"


async def test_public_host_is_the_only_forwarded_host(reflecting_origin: TestServer, start_edge: EdgeFactory) -> None:
    origin_url = str(reflecting_origin.make_url("")).rstrip("/")
    edge = await start_edge(origin_url, public_host="cdn.example.com")
    page, _ = await get_json(str(edge.make_url("/page/public")), {"Host": HOSTILE, "X-Forwarded-Host": HOSTILE})
    assert page["link"] == "https://cdn.example.com/next"


async def test_preserve_host_keys_on_host_so_each_host_gets_its_own_page(
    reflecting_origin: TestServer, start_edge: EdgeFactory
) -> None:
    origin_url = str(reflecting_origin.make_url("")).rstrip("/")
    edge = await start_edge(origin_url, upstream={"preserve_host": True})
    url = str(edge.make_url("/page/vhost"))
    evil, _ = await get_json(url, {"Host": HOSTILE})
    assert evil["link"] == f"https://{HOSTILE}/next"  # keyed under evil.example: only its own clients see it
    good, status = await get_json(url, {"Host": "shop.example"})
    assert status == "MISS"
    assert good["link"] == "https://shop.example/next"
    again, status = await get_json(url, {"Host": "shop.example"})
    assert (again, status) == (good, "HIT")


async def test_strip_list_is_configurable(reflecting_origin: TestServer, start_edge: EdgeFactory) -> None:
    origin_url = str(reflecting_origin.make_url("")).rstrip("/")
    edge = await start_edge(origin_url, upstream={"strip_request_headers": []})
    page, _ = await get_json(str(edge.make_url("/page/api")), {"X-HTTP-Method-Override": "PATCH"})
    assert page["seen"].get("x-http-method-override") == "PATCH"  # type: ignore[union-attr]
