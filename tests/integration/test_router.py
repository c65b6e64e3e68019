"""The router on real sockets: redirects per region, XFF trust, byte-exact targets, health, CLI.

Everything listens on 127.0.0.1 with kernel-chosen ports.  The geo database is generated from
``geodb/source.csv`` in a fixture (the demo's documentation ranges sit in the three demo regions);
edges are either stand-ins that answer ``/readyz`` as told, or real edges (``start_edge`` plus the
edge's own admin app) in front of the origin stub.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from edge.admin import create_admin_app
from edge.router.__main__ import main as router_main
from edge.router.accesslog import ACCESS_LOGGER
from edge.router.app import (
    Router,
    create_router,
    create_router_admin_app,
    open_router_parts,
    request_target,
)
from edge.router.config import RouterSettings
from edge.router.redirect import serve_redirects
from edge.server.protocol import Listener
from geodb.build import DEFAULT_SOURCE, build, parse_source, read_source
from origin_stub import OriginStubServer
from tests.conftest import PROJECT_ROOT, EdgeFactory, raw_exchange
from tests.support.wait import until
from tests.unit.test_inventory import THREE_REGION_TOML

EDGE_NAMES = ("us-east-1", "us-east-2", "eu-west-1", "eu-west-2", "ap-southeast-1")
REGION_OF = {"us-east-1": "us-east", "us-east-2": "us-east", "eu-west-1": "eu-west", "eu-west-2": "eu-west",
             "ap-southeast-1": "ap-southeast"}  # fmt: skip


# --- helpers -----------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string of ASCII is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(value)


def inventory_toml(edges: list[dict[str, Any]], **top: Any) -> str:
    lines = [f"{key} = {toml_value(value)}" for key, value in top.items()]
    for edge in edges:
        lines += ["", "[[edges]]", *(f"{key} = {toml_value(value)}" for key, value in edge.items())]
    return "\n".join(lines) + "\n"


def three_region(admin_urls: dict[str, str]) -> str:
    """The demo's three-region inventory with the admin URLs of our stand-in edges."""
    data = tomllib.loads(THREE_REGION_TOML)
    for edge in data["edges"]:
        edge["admin_url"] = admin_urls[edge["name"]]
    edges = data.pop("edges")
    return inventory_toml(edges, **data)


def edge_urls() -> dict[str, str]:
    """Public URL (as the inventory normalises it) → edge name, for reading ``Location``."""
    data = tomllib.loads(THREE_REGION_TOML)
    return {edge["url"].rstrip("/").lower(): edge["name"] for edge in data["edges"]}


def edge_of(location: str) -> str:
    for url, name in edge_urls().items():
        if location.startswith(url + "/"):
            return name
    raise AssertionError(f"Location {location!r} is not an inventory edge")


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class FakeAdmin:
    """Stands in for an edge's admin API: ``/readyz`` answers ``status``; stop/start on the same port."""

    def __init__(self) -> None:
        self.status = 200
        self.ready: bool | None = None  # what the JSON body says; None: "status == 200"
        self.delay = 0.0
        self.port: int | None = None
        self.server: TestServer | None = None

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        ready = self.status == 200 if self.ready is None else self.ready
        return web.json_response({"ready": ready}, status=self.status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/readyz", self._readyz)
        self.server = TestServer(app, host="127.0.0.1", port=self.port)
        await self.server.start_server()
        self.port = self.server.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def fake_admins() -> AsyncIterator[dict[str, FakeAdmin]]:
    admins = {name: FakeAdmin() for name in EDGE_NAMES}
    for admin in admins.values():
        await admin.start()
    yield admins
    for admin in admins.values():
        await admin.stop()


@pytest.fixture(scope="session")
def geodb_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo source compiled afresh: the router reads it like any MaxMind City database."""
    out = tmp_path_factory.mktemp("geodb") / "test-city.mmdb"
    build(read_source(DEFAULT_SOURCE), out, build_epoch=1_700_000_000)
    return out


@dataclass
class RunningRouter:
    public: Listener
    admin: TestServer
    router: Router

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.public.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin.port}"

    def state(self, edge: str) -> str:
        return self.router.health.snapshot()[edge].state


RouterFactory = Callable[..., Awaitable[RunningRouter]]


@pytest.fixture
async def start_router(tmp_path: Path, geodb_file: Path) -> AsyncIterator[RouterFactory]:
    """Start router apps in-process from settings, exactly as the CLI assembles them."""
    started: list[RunningRouter] = []

    async def start(inventory: str, **overrides: Any) -> RunningRouter:
        path = tmp_path / f"inventory-{len(started)}.toml"
        path.write_text(inventory)
        data: dict[str, Any] = {
            "edges": str(path),
            "geodb": str(geodb_file),
            "purge_state_dir": str(tmp_path / f"purges-{len(started)}"),
            "listen": "127.0.0.1:0",
            "admin_listen": "127.0.0.1:0",
            "trust_proxy": ["127.0.0.0/8"],
            "health_interval": 0.05,
            "health_timeout": 0.5,
            "fall": 2,
            "rise": 2,
            "debug_header": True,
        }
        data.update(overrides)
        settings = RouterSettings.model_validate(data)
        parts = open_router_parts(settings)
        router = create_router(
            settings, inventory=parts.inventory, locator=parts.locator, coverage=parts.coverage, health=parts.health
        )
        await router.start()
        public, _ = await serve_redirects(router, "127.0.0.1", 0, logger=logging.getLogger(ACCESS_LOGGER))
        admin = TestServer(create_router_admin_app(router), host="127.0.0.1")
        await admin.start_server()
        running = RunningRouter(public, admin, router)
        started.append(running)
        return running

    yield start
    for running in reversed(started):
        await running.admin.close()
        await running.public.close()
        await running.router.close()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(
    client: aiohttp.ClientSession, url: str, method: str = "GET", **kwargs: Any
) -> tuple[int, dict[str, str], str]:
    async with client.request(method, url, allow_redirects=False, **kwargs) as response:
        body = await response.text()
        return response.status, dict(response.headers), body


def route_header(headers: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(headers["X-Edge-Route"])
    return data


# --- redirects by region -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "region", "city"),
    [
        ("198.51.100.7", "us-east", "Ashburn"),
        ("198.51.100.200", "us-east", "Seattle"),
        ("192.0.2.7", "eu-west", "Dublin"),
        ("192.0.2.200", "eu-west", "Cork"),
        ("203.0.113.9", "ap-southeast", "Singapore"),
        ("2001:db8:2::1", "eu-west", "Dublin"),
        ("2001:db8:3::1", "ap-southeast", "Singapore"),
        ("::ffff:203.0.113.9", "ap-southeast", "Singapore"),  # IPv4-mapped: looked up as IPv4
        ("[2001:db8:1::5]:4711", "us-east", "Ashburn"),  # port and brackets stripped
    ],
)
async def test_redirects_to_the_clients_region_via_trusted_xff(
    fake_admins: dict[str, FakeAdmin],
    start_router: RouterFactory,
    client: aiohttp.ClientSession,
    address: str,
    region: str,
    city: str,
) -> None:
    router = await start_router(three_region({name: admin.url for name, admin in fake_admins.items()}))
    status, headers, body = await get(
        client, router.url + "/img/logo.png?v=3", headers={"X-Forwarded-For": f"{address}, 127.0.0.1"}
    )
    assert status == 302
    location = headers["Location"]
    chosen = edge_of(location)
    assert REGION_OF[chosen] == region
    assert location.endswith("/img/logo.png?v=3")
    assert headers["Cache-Control"] == "no-store"
    assert location in body
    assert "<a href=" in body
    route = route_header(headers)
    assert route["edge"] == chosen
    assert route["source"] == "x-forwarded-for"
    assert route["rule"] == "distance"
    assert route["geo"] == "city"


async def test_same_url_same_owner_and_region_capacity_is_shared(
    fake_admins: dict[str, FakeAdmin], start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    """Rendezvous hashing: one URL always lands on one us-east edge; many URLs use both."""
    router = await start_router(three_region({name: admin.url for name, admin in fake_admins.items()}))
    owners: dict[str, set[str]] = {}
    for index in range(40):
        path = f"/obj/{index}"
        for client_ip in ("198.51.100.7", "198.51.100.8"):
            _, headers, _ = await get(client, router.url + path, headers={"X-Forwarded-For": client_ip})
            owners.setdefault(path, set()).add(edge_of(headers["Location"]))
    assert all(len(edges) == 1 for edges in owners.values())
    assert set().union(*owners.values()) == {"us-east-1", "us-east-2"}


async def test_xff_from_an_untrusted_peer_is_ignored(
    fake_admins: dict[str, FakeAdmin], start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    inventory = three_region({name: admin.url for name, admin in fake_admins.items()})
    strict = await start_router(inventory, trust_proxy=["10.0.0.0/8"])
    trusting = await start_router(inventory)
    spoofed = {"X-Forwarded-For": "203.0.113.9"}  # claims Singapore

    _, headers, _ = await get(client, strict.url + "/x", headers=spoofed)
    route = route_header(headers)
    assert (route["client"], route["source"]) == ("127.0.0.1", "peer")
    # loopback cannot be located: no coordinates, no country → region_fallback's first region
    assert (route["rule"], route["region"]) == ("fallback", "eu-west")

    _, headers, _ = await get(client, trusting.url + "/x", headers=spoofed)
    route = route_header(headers)
    assert (route["client"], route["source"], route["region"]) == ("203.0.113.9", "x-forwarded-for", "ap-southeast")


@pytest.mark.parametrize(
    "target",
    [
        b"/a%2Fb/../c;p?q=%20&x=%E2%82%AC&&z",
        b"//double//slash/?",
        b"/%7Euser/./x?a=1&a=2&b",
        b"/",
        b"/path?",
        b"/q?%00=%ZZ&==&;",
        b"/a/b/../../../etc/passwd",
    ],
)
async def test_path_and_query_preserved_byte_for_byte(
    fake_admins: dict[str, FakeAdmin], start_router: RouterFactory, target: bytes
) -> None:
    router = await start_router(three_region({name: admin.url for name, admin in fake_admins.items()}))
    assert router.public.port is not None
    raw = await raw_exchange(
        router.public.port,
        b"GET " + target + b" HTTP/1.1\r\nHost: cdn.example\r\nX-Forwarded-For: 192.0.2.7\r\nConnection: close\r\n\r\n",
    )
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 302 ")
    match = re.search(rb"\r\nLocation: ([^\r\n]*)", head)
    assert match is not None
    location = match.group(1)
    assert location in {b"http://127.0.0.1:8201" + target, b"https://eu-west-2.example.net:8443" + target}


async def test_absolute_form_target_keeps_path_and_query(
    fake_admins: dict[str, FakeAdmin], start_router: RouterFactory
) -> None:
    router = await start_router(three_region({name: admin.url for name, admin in fake_admins.items()}))
    assert router.public.port is not None
    raw = await raw_exchange(
        router.public.port,
        b"GET http://cdn.example/x/../y?z=%20 HTTP/1.1\r\nHost: cdn.example\r\n"
        b"X-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n",
    )
    assert b"\r\nLocation: http://127.0.0.1:8301/x/../y?z=%20\r\n" in raw


async def test_options_star_and_connect_name_no_resource_to_redirect_to(
    fake_admins: dict[str, FakeAdmin], start_router: RouterFactory
) -> None:
    router = await start_router(three_region({name: admin.url for name, admin in fake_admins.items()}))
    assert router.public.port is not None
    raw = await raw_exchange(router.public.port, b"OPTIONS * HTTP/1.1\r\nHost: cdn.example\r\n\r\n"
                                                 b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"
                                                 b"GET /after HTTP/1.1\r\nHost: cdn.example\r\nConnection: close\r\n\r\n")  # fmt: skip
    options, connect, after = raw.split(b"HTTP/1.1 ")[1:]
    assert options.startswith(b"200 OK\r\n")
    assert b"\r\nAllow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n" in options
    assert b"Location" not in options
    assert connect.startswith(b"400 ")
    assert b"Location" not in connect
    assert after.startswith(b"302 ")  # the connection goes on


@pytest.mark.parametrize(
    ("raw_path", "expected"),
    [
        ("/a%2Fb/../c;p?q=%20&x=%E2%82%AC&&z", (None, "/a%2Fb/../c;p?q=%20&x=%E2%82%AC&&z")),
        ("http://Host.example:81/x?y", ("Host.example:81", "/x?y")),
        ("http://user@host/x", ("host", "/x")),
        ("https://host?q=1", ("host", "/?q=1")),
        ("http://host", ("host", "/")),
        ("*", (None, "/")),
        ("host:443", (None, "/")),
        ("/caf\u00e9 x", (None, "/caf%C3%A9%20x")),  # never reaches us raw; encoded if it did
        ("/bad\udcff", (None, "/bad%FF")),
    ],
)
def test_request_target(raw_path: str, expected: tuple[str | None, str]) -> None:
    assert request_target(raw_path) == expected


@pytest.mark.parametrize(("method", "status"), [("POST", 307), ("PUT", 307), ("DELETE", 307), ("PATCH", 307),
                                                ("OPTIONS", 307), ("HEAD", 302), ("GET", 302)])  # fmt: skip
async def test_status_by_method(
    fake_admins: dict[str, FakeAdmin],
    start_router: RouterFactory,
    client: aiohttp.ClientSession,
    method: str,
    status: int,
) -> None:
    router = await start_router(three_region({name: admin.url for name, admin in fake_admins.items()}))
    got, headers, body = await get(
        client, router.url + "/upload?id=7", method, headers={"X-Forwarded-For": "203.0.113.9"}, data=b"payload"
    )
    assert got == status
    assert headers["Location"] == "http://127.0.0.1:8301/upload?id=7"
    assert headers["Cache-Control"] == "no-store"
    assert (body == "") == (method == "HEAD")


# --- health ----------------------------------------------------------------------------------------


async def test_every_edge_down_is_503_then_recovery(
    fake_admins: dict[str, FakeAdmin], start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    for admin in fake_admins.values():
        admin.status = 503
    router = await start_router(three_region({name: admin.url for name, admin in fake_admins.items()}))
    status, headers, body = await get(client, router.url + "/x", headers={"X-Forwarded-For": "203.0.113.9"})
    assert status == 503
    assert "no healthy edge" in body
    assert headers["Retry-After"].isdigit()
    assert headers["Cache-Control"] == "no-store"
    assert "Location" not in headers
    assert route_header(headers)["rule"] == "none"
    status, _, _ = await get(client, router.admin_url + "/readyz")
    assert status == 503

    await wait_for(lambda: router.state("ap-southeast-1") == "down", "ap-southeast-1 down")
    snap = router.router.health.snapshot()["ap-southeast-1"]
    assert snap.last_error == "HTTP 503 from /readyz"

    fake_admins["eu-west-1"].status = 200
    await wait_for(lambda: router.state("eu-west-1") == "up", "eu-west-1 up")
    status, headers, _ = await get(client, router.url + "/x", headers={"X-Forwarded-For": "203.0.113.9"})
    assert status == 302
    assert headers["Location"] == "http://127.0.0.1:8201/x"  # the only healthy edge, far as it is
    status, _, _ = await get(client, router.admin_url + "/readyz")
    assert status == 200


async def test_hysteresis_with_real_edges_going_down_and_up(
    origin: OriginStubServer,
    start_edge: EdgeFactory,
    start_router: RouterFactory,
    client: aiohttp.ClientSession,
) -> None:
    """Two real edges; Dublin's admin API stops, Dublin clients move to Virginia, and come back."""
    dublin_edge, dublin_admin = await start_edge(origin.url, name="dublin", with_admin=True)
    virginia_edge, virginia_admin = await start_edge(origin.url, name="virginia", with_admin=True)
    inventory = inventory_toml(
        [
            {"name": "dublin", "region": "eu-west", "latitude": 53.35, "longitude": -6.26,
             "url": f"http://127.0.0.1:{dublin_edge.port}", "admin_url": f"http://127.0.0.1:{dublin_admin.port}"},
            {"name": "virginia", "region": "us-east", "latitude": 38.9, "longitude": -77.0,
             "url": f"http://127.0.0.1:{virginia_edge.port}", "admin_url": f"http://127.0.0.1:{virginia_admin.port}"},
        ]
    )  # fmt: skip
    restarted: list[TestServer] = []
    router = await start_router(inventory, fall=2, rise=2, health_interval=0.05)
    dublin_client = {"X-Forwarded-For": "192.0.2.7"}
    try:
        # Up right after start: the first successful check is enough.
        assert router.state("dublin") == "up"
        status, headers, _ = await get(client, router.url + "/echo/page?x=1", headers=dublin_client)
        assert status == 302
        assert headers["Location"] == f"http://127.0.0.1:{dublin_edge.port}/echo/page?x=1"
        async with client.get(headers["Location"]) as followed:  # the real edge serves it
            assert followed.status == 200
            assert (await followed.json())["path"] == "/echo/page"

        dublin_admin_port = dublin_admin.port
        await dublin_admin.close()
        await wait_for(lambda: router.state("dublin") == "down", "dublin down")
        down = [change for change in router.router.health.changes if change.edge == "dublin"][-1]
        assert (down.before, down.after, down.streak) == ("up", "down", 2)  # exactly `fall` failures
        assert down.error is not None
        assert "Connect" in down.error
        status, headers, _ = await get(client, router.url + "/echo/page?x=1", headers=dublin_client)
        assert headers["Location"] == f"http://127.0.0.1:{virginia_edge.port}/echo/page?x=1"
        assert route_header(headers)["region"] == "us-east"

        runtime = dublin_edge.runtime  # the same edge's admin API comes back on its port
        admin_app = create_admin_app(runtime.settings, runtime)
        restarted.append(TestServer(admin_app, host="127.0.0.1", port=dublin_admin_port))
        await restarted[-1].start_server()
        await wait_for(lambda: router.state("dublin") == "up", "dublin up again")
        up = [change for change in router.router.health.changes if change.edge == "dublin"][-1]
        assert (up.before, up.after, up.streak) == ("down", "up", 2)  # exactly `rise` successes
        status, headers, _ = await get(client, router.url + "/echo/page?x=1", headers=dublin_client)
        assert headers["Location"] == f"http://127.0.0.1:{dublin_edge.port}/echo/page?x=1"

        status, _, body = await get(client, router.admin_url + "/health")
        health = json.loads(body)
        assert health["edges"]["dublin"]["state"] == "up"
        assert [c["after"] for c in health["recent_changes"] if c["edge"] == "dublin"] == ["up", "down", "up"]
    finally:
        for server in restarted:
            await server.close()


async def test_edge_not_ready_gets_no_clients(
    fake_admins: dict[str, FakeAdmin], start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = await start_router(three_region({name: admin.url for name, admin in fake_admins.items()}))
    fake_admins["ap-southeast-1"].status = 503  # alive but catching up: not ready
    await wait_for(lambda: router.state("ap-southeast-1") == "down", "ap-southeast-1 down")
    _, headers, _ = await get(client, router.url + "/x", headers={"X-Forwarded-For": "203.0.113.9"})
    assert REGION_OF[edge_of(headers["Location"])] != "ap-southeast"
    fake_admins["ap-southeast-1"].status = 200
    await wait_for(lambda: router.state("ap-southeast-1") == "up", "ap-southeast-1 up")
    _, headers, _ = await get(client, router.url + "/x", headers={"X-Forwarded-For": "203.0.113.9"})
    assert edge_of(headers["Location"]) == "ap-southeast-1"


async def test_every_kind_of_failed_check_is_recorded(
    fake_admins: dict[str, FakeAdmin], start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    fake_admins["us-east-1"].delay = 0.6  # slower than the check timeout
    fake_admins["us-east-2"].ready = False  # 200, but the body says not ready
    fake_admins["ap-southeast-1"].status = 500
    await fake_admins["eu-west-2"].stop()  # connection refused
    router = await start_router(
        three_region({name: admin.url for name, admin in fake_admins.items()}), health_timeout=0.2
    )
    await wait_for(
        lambda: all(router.state(name) == "down" for name in ("us-east-1", "us-east-2", "eu-west-2", "ap-southeast-1")),
        "four edges down",
    )
    errors = {name: state.last_error or "" for name, state in router.router.health.snapshot().items()}
    assert errors["us-east-1"] == "timeout after 0.2s"
    assert errors["us-east-2"] == '/readyz answered 200 with "ready": false'
    assert errors["ap-southeast-1"] == "HTTP 500 from /readyz"
    assert errors["eu-west-2"].startswith("ClientConnectorError")
    assert router.state("eu-west-1") == "up"
    # A Seattle client: us-east is nearest but down, so the next region by distance serves it.
    _, headers, _ = await get(client, router.url + "/x", headers={"X-Forwarded-For": "198.51.100.200"})
    assert edge_of(headers["Location"]) == "eu-west-1"


# --- the admin side ----------------------------------------------------------------------------------


async def test_route_endpoint_explains_the_decision(
    fake_admins: dict[str, FakeAdmin], start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = await start_router(three_region({name: admin.url for name, admin in fake_admins.items()}))
    fake_admins["eu-west-2"].status = 500
    await wait_for(lambda: router.state("eu-west-2") == "down", "eu-west-2 down")

    status, _, body = await get(
        client, router.admin_url + "/route", params={"ip": "192.0.2.7", "path": "/a b?c=1", "host": "CDN.example"}
    )
    assert status == 200
    route = json.loads(body)
    assert route["client"] == {"address": "192.0.2.7", "source": "peer", "detail": "given as ?ip="}
    assert route["location"]["city"] == "Dublin"
    assert route["location"]["source"] == "city"
    assert route["cache_key"] == "/a%20b?c=1"  # the shard key: the target, as the edges compute it
    decision = route["decision"]
    assert (decision["edge"], decision["region"], decision["rule"]) == ("eu-west-1", "eu-west", "distance")
    assert "nearest healthy region eu-west" in decision["reason"]
    candidates = {candidate["name"]: candidate for candidate in decision["candidates"]}
    assert set(candidates) == set(EDGE_NAMES)
    assert candidates["eu-west-1"]["distance_km"] < 10
    assert candidates["ap-southeast-1"]["distance_km"] > 10000
    assert (candidates["eu-west-2"]["healthy"], candidates["eu-west-2"]["health"]) == (False, "down")
    assert candidates["eu-west-2"]["last_error"] == "HTTP 500 from /readyz"
    assert candidates["eu-west-1"]["owner_rank"] == 0
    assert (route["status"], route["redirect"]) == (302, "http://127.0.0.1:8201/a%20b?c=1")

    # the same facts through the trust rules: peer + X-Forwarded-For lines, and a method
    status, _, body = await get(
        client, router.admin_url + "/route",
        params=[("peer", "127.0.0.1"), ("xff", "198.51.100.7, 10.1.2.3"), ("method", "post")],
    )  # fmt: skip
    route = json.loads(body)
    assert route["client"]["address"] == "10.1.2.3"  # 10/8 is not trusted by this router
    assert route["client"]["source"] == "x-forwarded-for"
    assert route["location"]["source"] == "none"
    assert route["status"] == 307

    for params in ({}, {"ip": "nope"}, {"peer": "x"}, {"ip": "192.0.2.7", "path": "no-slash"},
                   {"ip": "192.0.2.7", "url": "http://[::1"}, {"ip": "192.0.2.7", "url": "/relative"},
                   {"ip": "192.0.2.7", "url": "ftp://cdn.example/x"}):  # fmt: skip
        status, _, body = await get(client, router.admin_url + "/route", params=params)
        assert status == 400, params
        assert "error" in json.loads(body)


async def test_admin_token_guards_everything_but_probes(
    fake_admins: dict[str, FakeAdmin], start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = await start_router(
        three_region({name: admin.url for name, admin in fake_admins.items()}), admin_token="s3cret"
    )
    for path in ("/route?ip=192.0.2.7", "/health", "/metrics", "/geodb"):
        status, headers, _ = await get(client, router.admin_url + path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Bearer")
        status, _, _ = await get(client, router.admin_url + path, headers={"Authorization": "Bearer wrong"})
        assert status == 401, path
        status, _, _ = await get(client, router.admin_url + path, headers={"Authorization": "Bearer s3cret"})
        assert status == 200, path
    for path in ("/healthz", "/readyz"):
        status, _, _ = await get(client, router.admin_url + path)
        assert status == 200, path


async def test_metrics(
    fake_admins: dict[str, FakeAdmin], start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = await start_router(three_region({name: admin.url for name, admin in fake_admins.items()}))
    for _ in range(3):
        await get(client, router.url + "/m", headers={"X-Forwarded-For": "203.0.113.9"})
    await get(client, router.url + "/m", "POST", headers={"X-Forwarded-For": "203.0.113.9"})
    status, headers, text = await get(client, router.admin_url + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert (
        'edgecache_router_redirects_total{edge="ap-southeast-1",region="ap-southeast",rule="distance",status="302"} 3.0'
        in text
    )
    assert 'status="307"} 1.0' in text
    assert "edgecache_router_decision_seconds_count 4.0" in text
    assert 'edgecache_router_edge_up{edge="eu-west-1",region="eu-west"} 1.0' in text
    assert "edgecache_router_unavailable_total 0.0" in text
    assert re.search(r'^edgecache_build_info\{component="router",version="[^"]+"\} 1\.0$', text, re.MULTILINE)
    # per-router registry: a second router starts from zero
    other = await start_router(three_region({name: admin.url for name, admin in fake_admins.items()}))
    _, _, text = await get(client, other.admin_url + "/metrics")
    assert "edgecache_router_decision_seconds_count 0.0" in text


@pytest.mark.parametrize("log_format", ["json", "combined"])
async def test_access_log_line_per_request(
    fake_admins: dict[str, FakeAdmin],
    start_router: RouterFactory,
    client: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    log_format: str,
) -> None:
    router = await start_router(
        three_region({name: admin.url for name, admin in fake_admins.items()}), log_format=log_format
    )
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    await get(
        client, router.url + "/p?q=1", headers={"X-Forwarded-For": "192.0.2.7", "User-Agent": 'ua "quoted"'}
    )

    def lines() -> list[str]:
        return [record.getMessage() for record in caplog.records if record.name == ACCESS_LOGGER]

    await until(lambda: len(lines()) == 1, timeout=5, what="the batched access-log line")
    lines = lines()
    if log_format == "json":
        entry = json.loads(lines[0])
        assert entry["client"] == "192.0.2.7"
        assert entry["source"] == "x-forwarded-for"
        assert entry["peer"] == "127.0.0.1"
        assert entry["edge"] in {"eu-west-1", "eu-west-2"}
        assert (entry["rule"], entry["status"], entry["target"], entry["method"]) == ("distance", 302, "/p?q=1", "GET")
        assert (entry["city"], entry["country"], entry["geo"]) == ("Dublin", "IE", "city")
        assert isinstance(entry["latency_us"], int)
        assert entry["latency_us"] >= 0
    else:
        line = lines[0]
        assert line.startswith("192.0.2.7 - - [")
        assert '"GET /p?q=1 HTTP/1.1" 302 ' in line
        assert '"ua \\"quoted\\""' in line
        assert re.search(r" edge=eu-west-[12] region=eu-west rule=distance src=xff geo=IE/EU/Dublin us=\d+$", line)


async def test_access_log_can_be_off(
    fake_admins: dict[str, FakeAdmin],
    start_router: RouterFactory,
    client: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = await start_router(
        three_region({name: admin.url for name, admin in fake_admins.items()}), access_log=False, debug_header=False
    )
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    status, headers, _ = await get(client, router.url + "/p", headers={"X-Forwarded-For": "192.0.2.7"})
    assert status == 302
    assert "X-Edge-Route" not in headers
    await asyncio.sleep(0.3)  # nothing must happen during this interval: longer than a log flush
    assert not [record for record in caplog.records if record.name == ACCESS_LOGGER]


async def test_coverage_zone_overrides_geography(
    fake_admins: dict[str, FakeAdmin], start_router: RouterFactory, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    coverage = tmp_path / "coverage.toml"
    coverage.write_text('[[zones]]\nnetwork = "192.0.2.0/25"\nregion = "ap-southeast"\nname = "dublin-office"\n')
    router = await start_router(
        three_region({name: admin.url for name, admin in fake_admins.items()}), coverage=str(coverage)
    )
    _, headers, _ = await get(client, router.url + "/c", headers={"X-Forwarded-For": "192.0.2.7"})
    route = route_header(headers)
    assert (route["region"], route["rule"], route["zone"]) == ("ap-southeast", "coverage-region", "dublin-office")
    _, headers, _ = await get(client, router.url + "/c", headers={"X-Forwarded-For": "192.0.2.200"})
    assert route_header(headers)["region"] == "eu-west"  # outside the zone: geography


SINGAPORE_DUBLIN = """\
network,country,continent,city,latitude,longitude,accuracy_radius,region_hint
192.0.2.0/24,SG,AS,Singapore,1.3521,103.8198,10,ap-southeast
"""


async def test_geodb_reload_switches_database_and_keeps_old_on_failure(
    fake_admins: dict[str, FakeAdmin],
    start_router: RouterFactory,
    client: aiohttp.ClientSession,
    geodb_file: Path,
    tmp_path: Path,
) -> None:
    database = tmp_path / "reloadable.mmdb"
    database.write_bytes(geodb_file.read_bytes())
    router = await start_router(
        three_region({name: admin.url for name, admin in fake_admins.items()}), geodb=str(database)
    )
    dublin = {"X-Forwarded-For": "192.0.2.7"}
    _, headers, _ = await get(client, router.url + "/g", headers=dublin)
    assert route_header(headers)["region"] == "eu-west"

    build(parse_source(SINGAPORE_DUBLIN, "moved.csv"), database, build_epoch=1_800_000_000)
    status, _, body = await get(client, router.admin_url + "/geodb/reload", "POST")
    assert status == 200
    assert json.loads(body)["in_use"]["build_epoch"] == 1_800_000_000
    assert json.loads(body)["in_use"]["build_iso"] == "2027-01-15T08:00:00Z"
    _, headers, _ = await get(client, router.url + "/g", headers=dublin)
    assert route_header(headers)["region"] == "ap-southeast"

    # Replaced atomically, as geoipupdate does: truncating a memory-mapped database in place would
    # crash the reader that still uses it.
    garbage = tmp_path / "garbage.tmp"
    garbage.write_bytes(b"not a database")
    os.replace(garbage, database)
    status, _, body = await get(client, router.admin_url + "/geodb/reload", "POST")
    assert status == 500
    answer = json.loads(body)
    assert answer["reloaded"] is False
    assert answer["in_use"]["build_epoch"] == 1_800_000_000
    _, headers, _ = await get(client, router.url + "/g", headers=dublin)
    assert route_header(headers)["region"] == "ap-southeast"  # the old database still answers
    _, _, text = await get(client, router.admin_url + "/metrics")
    assert 'edgecache_router_geodb_reloads_total{result="ok"} 1.0' in text
    assert 'edgecache_router_geodb_reloads_total{result="failed"} 1.0' in text


# --- the CLI -------------------------------------------------------------------------------------------

LISTEN_LINE = re.compile(r"^router listening on (http://\S+) \(admin (http://\S+)\), (\d+) edges$")


@pytest.fixture
def router_pids() -> Iterator[list[int]]:
    """Router processes registered here are killed by PID at teardown if a test left them running."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_cli_serves_reloads_and_stops(
    fake_admins: dict[str, FakeAdmin],
    geodb_file: Path,
    tmp_path: Path,
    client: aiohttp.ClientSession,
    router_pids: list[int],
) -> None:
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(three_region({name: admin.url for name, admin in fake_admins.items()}))
    stderr_path = tmp_path / "router.stderr"
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge.router",
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--edges", str(inventory), "--geodb", str(geodb_file),
            "--trust-proxy", "127.0.0.0/8", "--debug-header", "--health-interval", "0.1",
            "--purge-state-dir", str(tmp_path / "purges"),
            cwd=PROJECT_ROOT, stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
    router_pids.append(process.pid)
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
    match = LISTEN_LINE.match(line)
    assert match, line
    url, admin_url, count = match.group(1), match.group(2), int(match.group(3))
    assert count == 5
    assert not url.endswith(":0")
    assert not admin_url.endswith(":0")

    status, headers, _ = await get(client, url + "/cli?x=1", headers={"X-Forwarded-For": "203.0.113.9"})
    assert (status, headers["Location"]) == (302, "http://127.0.0.1:8301/cli?x=1")
    status, _, body = await get(client, admin_url + "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})

    os.kill(process.pid, signal.SIGHUP)
    await wait_for(lambda: "geo database reloaded" in stderr_path.read_text(), "reload message")
    status, _, _ = await get(client, url + "/cli", headers={"X-Forwarded-For": "203.0.113.9"})
    assert status == 302  # still serving after the reload
    await wait_for(lambda: '"target":"/cli?x=1"' in stderr_path.read_text(), "the batched access-log line")

    os.kill(process.pid, signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 15) == 0
    router_pids.remove(process.pid)


def run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.router", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_cli_bad_inventory_exits_2_naming_the_field(tmp_path: Path) -> None:
    data = tomllib.loads(THREE_REGION_TOML)
    data["edges"][2]["latitude"] = 91.0
    bad = tmp_path / "bad.toml"
    bad.write_text(inventory_toml(data.pop("edges"), **data))
    result = run_cli(["--edges", str(bad)])
    assert result.returncode == 2
    assert "edges[2] (eu-west-1): latitude" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--fall", "0"], "fall"),
        (["--trust-proxy", "10.0.0.1/8"], "trust_proxy.0"),
        (["--geodb", "/nonexistent/city.mmdb"], "geodb"),
        (["--coverage", "/nonexistent/coverage.toml"], "coverage"),
        (["--admin-listen", "0.0.0.0:0"], "admin_token"),
    ],
)
def test_cli_bad_configuration_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    """In-process ``main()`` (the subprocess path is covered above): exit 2, the field named."""
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(THREE_REGION_TOML)
    with pytest.raises(SystemExit) as exited:
        router_main(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--edges", str(inventory), *args])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert fragment in captured.err
    assert captured.out == ""


def test_cli_missing_edges_exits_2() -> None:
    result = run_cli([])
    assert result.returncode == 2
    assert "edges" in result.stderr
    assert "missing" in result.stderr
