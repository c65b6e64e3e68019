"""Sites and origin pools end to end: real origin stubs on their own ports behind one in-process
edge — which origin each request reached, what the client got, and how fast when origins fail."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from origin_stub import OriginStubServer
from origin_stub.body import expected_body
from tests.conftest import EdgeFactory, EdgeProcess, launch_edge, raw_exchange
from tests.integration.test_cache import script, url
from tests.support.processes import children_of
from tests.support.wait import until


@pytest.fixture
async def stubs() -> AsyncIterator[dict[str, OriginStubServer]]:
    servers = {name: OriginStubServer(name=name) for name in ("a", "b", "spare", "blog")}
    for server in servers.values():
        await server.start()
    try:
        yield servers
    finally:
        for server in servers.values():
            await server.stop()


def shop(stubs: dict[str, OriginStubServer], **extra: Any) -> dict[str, Any]:
    site: dict[str, Any] = {
        "name": "shop",
        "hosts": ["shop.test", "*.shop.test"],
        "origins": [
            {"url": stubs["a"].url, "weight": 2},
            {"url": stubs["b"].url},
            {"url": stubs["spare"].url, "backup": True},
        ],
    }
    site.update(extra)
    return site


def blog(stubs: dict[str, OriginStubServer]) -> dict[str, Any]:
    return {"name": "blog", "hosts": ["blog.test"], "origins": [stubs["blog"].url]}


async def get(edge: Any, path: str, host: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    async with (
        aiohttp.ClientSession() as client,
        client.get(url(edge, path), headers={"Host": host, **(headers or {})}) as resp,
    ):
        return resp.status, resp.headers, await resp.read()


def served_by(stubs: dict[str, OriginStubServer], prefix: str) -> Counter[str]:
    return Counter(
        {name: sum(n for p, n in s.state.paths.items() if p.startswith(prefix)) for name, s in stubs.items()}
    )


async def test_two_sites_with_the_same_path_never_share_an_object(
    stubs: dict[str, OriginStubServer], start_edge: EdgeFactory
) -> None:
    edge = await start_edge(None, sites=[shop(stubs), blog(stubs)])
    for name in ("a", "b"):
        await script(stubs[name], "page", [{"headers": [["Cache-Control", "max-age=600"]], "body": "shop page"}])
    await script(stubs["blog"], "page", [{"headers": [["Cache-Control", "max-age=600"]], "body": "blog page"}])
    for _ in range(2):
        assert (await get(edge, "/s/page", "shop.test"))[2] == b"shop page"
        assert (await get(edge, "/s/page", "BLOG.test:8080"))[2] == b"blog page"
    assert (await get(edge, "/s/page", "www.shop.test"))[1]["X-Cache"] == "HIT"  # the wildcard: same site
    assert served_by(stubs, "/s/page") == {"a": 1, "b": 0, "spare": 0, "blog": 1}


async def test_a_host_no_site_serves_is_421_and_reaches_no_origin(
    stubs: dict[str, OriginStubServer], start_edge: EdgeFactory
) -> None:
    edge = await start_edge(None, sites=[shop(stubs), blog(stubs)])
    status, _, body = await get(edge, "/obj/x?size=10", "elsewhere.test")
    assert status == 421
    assert b"elsewhere.test" in body
    assert sum(s.state.total for s in stubs.values()) == 0


async def test_an_absolute_form_target_names_the_site_whatever_host_says(
    stubs: dict[str, OriginStubServer], start_edge: EdgeFactory
) -> None:
    """RFC 9112 §3.2.2: with an absolute-form target the server ignores Host and uses the target's
    authority — for the site, its rules (signed URLs, limits) and its origins alike."""
    edge = await start_edge(None, sites=[shop(stubs), blog(stubs)])
    await script(stubs["blog"], "abs", [{"headers": [["Cache-Control", "max-age=600"]], "body": "blog page"}])
    wire = await raw_exchange(edge.port, b"GET http://blog.test/s/abs HTTP/1.1\r\nHost: shop.test\r\n"
                                         b"Connection: close\r\n\r\n")  # fmt: skip
    assert wire.startswith(b"HTTP/1.1 200")
    assert wire.endswith(b"blog page")
    wire = await raw_exchange(edge.port, b"GET http://elsewhere.test/s/abs HTTP/1.1\r\nHost: shop.test\r\n"
                                         b"Connection: close\r\n\r\n")  # fmt: skip
    assert wire.startswith(b"HTTP/1.1 421")
    for target in (b"http://sh op.test/x", b"http:///x", b"http://a@/x"):  # checked as a Host would be
        wire = await raw_exchange(edge.port, b"GET " + target + b" HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        assert wire.startswith(b"HTTP/1.1 400"), (target, wire[:100])
    assert served_by(stubs, "/s/abs") == {"a": 0, "b": 0, "spare": 0, "blog": 1}


async def test_misses_follow_the_weights(stubs: dict[str, OriginStubServer], start_edge: EdgeFactory) -> None:
    edge = await start_edge(None, sites=[shop(stubs)])
    for index in range(300):
        assert (await get(edge, f"/obj/w{index}?size=10&max_age=600", "shop.test"))[0] == 200
    counts = served_by(stubs, "/obj/w")
    assert 180 <= counts["a"] <= 220  # weight 2 of 3: 200 ± 10%
    assert 90 <= counts["b"] <= 110
    assert counts["spare"] == 0  # backups only when every primary is down


async def test_consistent_hash_keeps_a_key_on_its_origin(
    stubs: dict[str, OriginStubServer], start_edge: EdgeFactory
) -> None:
    edge = await start_edge(None, sites=[shop(stubs, balance="consistent_hash")], cache={"enabled": False})
    for _ in range(3):
        for index in range(20):
            await get(edge, f"/obj/k{index}?size=10", "shop.test")
    per_key = {index: {name for name, s in stubs.items() if s.state.paths.get(f"/obj/k{index}")} for index in range(20)}
    assert all(len(owners) == 1 for owners in per_key.values())
    assert {owner for owners in per_key.values() for owner in owners} == {"a", "b"}


async def test_an_origin_killed_mid_run_costs_no_client_request(
    stubs: dict[str, OriginStubServer], start_edge: EdgeFactory
) -> None:
    edge = await start_edge(None, sites=[shop(stubs)])

    async def load(first: int) -> list[int]:
        return [(await get(edge, f"/obj/k{index}?size=2000&max_age=600", "shop.test"))[0]
                for index in range(first, first + 60)]  # fmt: skip

    running = asyncio.ensure_future(asyncio.gather(load(0), load(100), load(200)))
    await until(lambda: stubs["a"].state.total >= 10, what="load on origin a")
    await stubs["a"].stop()  # killed while requests are in flight
    results = await running
    assert [status for batch in results for status in batch] == [200] * 180
    assert stubs["spare"].state.total == 0


async def test_backups_serve_only_while_every_primary_is_down(
    stubs: dict[str, OriginStubServer], start_edge: EdgeFactory
) -> None:
    edge = await start_edge(None, sites=[shop(stubs, health={"fall": 1, "interval": 30})])
    await stubs["a"].stop()
    await stubs["b"].stop()
    # The first request finds both primaries failing (it is retried once, on the other): a 502.
    assert (await get(edge, "/obj/first?size=100", "shop.test"))[0] == 502
    for index in range(5):
        status, headers, body = await get(edge, f"/obj/bk{index}?size=100&max_age=600", "shop.test")
        assert (status, headers["X-Stub-Name"], body) == (200, "spare", expected_body(f"bk{index}", 100))
        assert 'fwd-origin="origin-3"' in headers["Cache-Status"]


async def test_with_every_origin_down_misses_are_answered_at_once(
    stubs: dict[str, OriginStubServer], start_edge: EdgeFactory
) -> None:
    site = shop(stubs, health={"path": "/healthz", "interval": 0.1, "fall": 1, "rise": 2})
    edge = await start_edge(None, sites=[site], upstream={"connect_timeout": 5, "read_timeout": 5})
    await script(stubs["a"], "stale", [{"headers": [["Cache-Control", "max-age=1, stale-if-error=600"],
                                                    ["Age", "5"]], "body": "old but usable"}])  # fmt: skip
    for name in ("a", "b", "spare"):
        await script(stubs[name], "stale", [{"headers": [["Cache-Control", "max-age=1, stale-if-error=600"],
                                                         ["Age", "5"]], "body": "old but usable"}])  # fmt: skip
    assert (await get(edge, "/s/stale", "shop.test"))[0] == 200
    for server in stubs.values():
        async with aiohttp.ClientSession() as client, client.post(f"{server.url}/_stub/health?status=503"):
            pass
    service = edge.worker.context.sites.by_name["shop"]

    def all_down() -> bool:
        return all(origin.health.state.value == "down" for origin in service.origins.origins)

    await until(all_down, what="every origin down")
    before = sum(s.state.paths.get("/obj/none", 0) for s in stubs.values())
    started = time.monotonic()
    status, headers, body = await get(edge, "/obj/none?size=10", "shop.test")
    assert status == 503
    assert int(headers["Retry-After"]) >= 1
    assert b"down" in body
    status, _, body = await get(edge, "/s/stale", "shop.test")
    assert (status, body) == (200, b"old but usable")  # stale-if-error stands in
    assert time.monotonic() - started < 1.0  # no connect attempt, no timeout waited for
    assert sum(s.state.paths.get("/obj/none", 0) for s in stubs.values()) == before
    # Health comes back: after `rise` good checks the site serves again.
    for server in stubs.values():
        async with aiohttp.ClientSession() as client, client.post(f"{server.url}/_stub/health?status=200"):
            pass
    await until(lambda: not all_down(), what="an origin up again")
    assert (await get(edge, "/obj/back?size=10", "shop.test"))[0] == 200


async def test_passive_health_takes_a_failing_origin_out(
    stubs: dict[str, OriginStubServer], start_edge: EdgeFactory
) -> None:
    edge = await start_edge(None, sites=[shop(stubs, health={"fall": 2, "interval": 30})], cache={"enabled": False})
    async with aiohttp.ClientSession() as client, client.post(f"{stubs['a'].url}/_stub/fail?status=500"):
        pass
    statuses = [(await get(edge, f"/obj/p{index}?size=10", "shop.test"))[0] for index in range(30)]
    assert statuses.count(500) == 2  # the 5xx answers themselves reach the client (never retried)...
    assert served_by(stubs, "/obj/p")["a"] == 2  # ...and after `fall` of them, `a` gets nothing
    assert statuses.count(200) == 28


async def test_purges_select_sites(stubs: dict[str, OriginStubServer], start_edge: EdgeFactory) -> None:
    edge, admin_server = await start_edge(None, sites=[shop(stubs), blog(stubs)], with_admin=True)
    admin = str(admin_server.make_url("")).rstrip("/")
    for host in ("shop.test", "blog.test"):
        await get(edge, "/obj/t?size=10&max_age=600&surrogate_key=common", host)
    assert (await get(edge, "/obj/t?size=10&max_age=600&surrogate_key=common", "blog.test"))[1]["X-Cache"] == "HIT"

    async def purge(body: dict[str, Any]) -> dict[str, Any]:
        async with aiohttp.ClientSession() as client, client.post(f"{admin}/purge", json=body) as resp:
            assert resp.status == 200, await resp.text()
            result: dict[str, Any] = await resp.json()
            return result

    await purge({"urls": ["http://shop.test/obj/t?size=10&max_age=600&surrogate_key=common"]})
    assert (await get(edge, "/obj/t?size=10&max_age=600&surrogate_key=common", "shop.test"))[1]["X-Cache"] == "MISS"
    assert (await get(edge, "/obj/t?size=10&max_age=600&surrogate_key=common", "blog.test"))[1]["X-Cache"] == "HIT"
    await purge({"tags": ["common"], "site": "blog"})
    assert (await get(edge, "/obj/t?size=10&max_age=600&surrogate_key=common", "shop.test"))[1]["X-Cache"] == "HIT"
    assert (await get(edge, "/obj/t?size=10&max_age=600&surrogate_key=common", "blog.test"))[1]["X-Cache"] == "MISS"
    await purge({"all": True, "site": "shop"})
    assert (await get(edge, "/obj/t?size=10&max_age=600&surrogate_key=common", "shop.test"))[1]["X-Cache"] == "MISS"
    assert (await get(edge, "/obj/t?size=10&max_age=600&surrogate_key=common", "blog.test"))[1]["X-Cache"] == "HIT"
    # A site this edge does not have (a cluster purge for other edges' sites): nothing here, no error.
    assert (await purge({"all": True, "site": "elsewhere"}))["affected"] == 0
    assert (await get(edge, "/obj/t?size=10&max_age=600&surrogate_key=common", "blog.test"))[1]["X-Cache"] == "HIT"


async def test_origins_are_visible_to_operators(stubs: dict[str, OriginStubServer], start_edge: EdgeFactory) -> None:
    edge, admin_server = await start_edge(None, sites=[shop(stubs, health={"fall": 1, "interval": 30})],
                                          with_admin=True)  # fmt: skip
    admin = str(admin_server.make_url("")).rstrip("/")
    await stubs["b"].stop()
    for index in range(4):
        await get(edge, f"/obj/v{index}?size=10&max_age=600", "shop.test")
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{admin}/origins") as resp:
            assert resp.status == 200
            report = await resp.json()
        async with client.get(f"{admin}/metrics") as resp:
            metrics = await resp.text()
    (site,) = report["sites"]
    states = {origin["url"]: origin for origin in site["origins"]}
    assert states[stubs["a"].url]["state"] == "up"
    assert states[stubs["a"].url]["requests"] >= 3
    down = states[stubs["b"].url]
    assert (down["state"], down["failures"]) == ("down", 1)
    assert "connect" in down["last_error"]
    assert states[stubs["spare"].url]["state"] == "backup"
    assert f'edgecache_origin_up{{edge="test-edge",origin="{stubs["b"].url}",site="shop"}} 0.0' in metrics
    assert "edgecache_origin_request_seconds_bucket" in metrics
    assert "edgecache_origin_errors_total" in metrics


async def test_a_reload_applies_new_sites_and_keeps_origin_health(
    stubs: dict[str, OriginStubServer], tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    def config_text(weight_a: int, *, with_blog: bool, duplicate: bool = False) -> str:
        text = (
            f'name = "sites-edge"\n[[sites]]\nname = "shop"\nhosts = ["shop.test"]\n'
            f'origins = [{{ url = "{stubs["a"].url}", weight = {weight_a} }}, {{ url = "{stubs["b"].url}" }}]\n'
            "health = { fall = 1, interval = 60 }\n"
        )
        if with_blog:
            text += f'[[sites]]\nname = "blog"\nhosts = ["blog.test"]\norigins = ["{stubs["blog"].url}"]\n'
        if duplicate:
            text += f'[[sites]]\nname = "copy"\nhosts = ["shop.test"]\norigins = ["{stubs["blog"].url}"]\n'
        return text

    config = tmp_path / "edge.toml"
    config.write_text(config_text(1, with_blog=False))
    edge = launch_edge(["--config", str(config), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                        "--cache-dir", str(tmp_path / "cache"), "--workers", "1", "--access-log", "off"])  # fmt: skip
    edge_processes.append(edge)
    await until(lambda: len(children_of(edge.process.pid)) == 1, what="a worker")
    first = children_of(edge.process.pid)
    await stubs["b"].stop()

    async def fetch_host(path: str, host: str) -> int:
        async with aiohttp.ClientSession() as client, client.get(f"{edge.url}{path}", headers={"Host": host}) as r:
            await r.read()
            return r.status

    for index in range(4):
        await fetch_host(f"/obj/r{index}?size=10&max_age=600", "shop.test")

    async def origin_states() -> dict[str, str]:
        async with aiohttp.ClientSession() as client, client.get(f"{edge.admin_url}/origins") as resp:
            report = await resp.json()
        return {f"{site['name']} {o['url']}": o["state"] for site in report["sites"] for o in site["origins"]}

    assert (await origin_states())[f"shop {stubs['b'].url}"] == "down"
    assert await fetch_host("/obj/x?size=10", "blog.test") == 421

    config.write_text(config_text(1, with_blog=True, duplicate=True))  # two sites claim shop.test: refused
    async with aiohttp.ClientSession() as client, client.post(f"{edge.admin_url}/reload") as resp:
        assert resp.status == 422
        assert "'shop' and 'copy'" in await resp.text()
    config.write_text(config_text(3, with_blog=True))
    os.kill(edge.process.pid, signal.SIGHUP)
    await until(lambda: children_of(edge.process.pid).isdisjoint(first) and len(children_of(edge.process.pid)) == 1,
                what="the reloaded worker")  # fmt: skip
    assert await fetch_host("/obj/x?size=10", "blog.test") == 200  # the new site
    states = await origin_states()
    assert states[f"shop {stubs['b'].url}"] == "down"  # unchanged origin: its health carried over
    assert states[f"shop {stubs['a'].url}"] == "up"


async def test_https_origins_are_verified_unless_told_otherwise(tmp_path: Path, start_edge: EdgeFactory) -> None:
    import ssl

    import trustme

    authority = trustme.CA()
    certificate = authority.issue_cert("localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    async with OriginStubServer(ssl_context=context) as secure:
        origin = f"https://localhost:{secure.port}"

        def site(name: str, **tls: Any) -> dict[str, Any]:
            return {"name": name, "hosts": [f"{name}.test"], "origins": [origin], **tls}

        edge = await start_edge(None, sites=[site("strict"), site("pinned", ca_file=str(ca_file)),
                                             site("lax", tls_verify=False)])  # fmt: skip
        status, _, body = await get(edge, "/obj/tls?size=10", "strict.test")
        assert status == 502  # not signed by a CA the system trusts
        assert b"certificate" in body.lower()
        for host in ("pinned.test", "lax.test"):
            status, _, body = await get(edge, "/obj/tls?size=10", host)
            assert (status, body) == (200, expected_body("tls", 10))
        assert secure.state.paths["/obj/tls"] == 2


@pytest.mark.parametrize("retry", [False, True])
async def test_requests_with_bodies_are_retried_only_when_allowed(
    stubs: dict[str, OriginStubServer], start_edge: EdgeFactory, retry: bool
) -> None:
    edge = await start_edge(None, sites=[shop(stubs, retry_non_idempotent=retry, health={"fall": 5})])
    await stubs["a"].stop()  # round robin starts with a (weight 2)
    async with (
        aiohttp.ClientSession() as client,
        client.post(url(edge, "/echo"), data=b"order=1", headers={"Host": "shop.test"}) as resp,
    ):
        body = await resp.read()
        status = resp.status
    if retry:
        assert status == 200
        assert b'"body_length": 7' in body or b'"body_length":7' in body  # the whole body, sent again to b
    else:
        assert status == 502
    assert stubs["b"].state.paths.get("/echo", 0) == (1 if retry else 0)


async def test_failing_checks_drain_an_origin_under_traffic(
    stubs: dict[str, OriginStubServer], start_edge: EdgeFactory
) -> None:
    site = shop(stubs, health={"path": "/healthz", "interval": 0.05, "fall": 2, "rise": 2})
    edge = await start_edge(None, sites=[site], cache={"enabled": False})
    async with aiohttp.ClientSession() as client, client.post(f"{stubs['a'].url}/_stub/health?status=503"):
        pass
    group = edge.worker.context.sites.by_name["shop"].origins
    origin_a = group.origins[0]
    index = 0

    async def drained() -> bool:
        nonlocal index
        index += 1
        assert (await get(edge, f"/obj/d{index}?size=10", "shop.test"))[0] == 200  # traffic keeps flowing
        return origin_a.health.state.value == "down"

    await until(drained, what="origin a drained by its failing checks")
    before = stubs["a"].state.paths.get("/obj/after", 0)
    for _ in range(6):
        await get(edge, "/obj/after?size=10", "shop.test")
    assert stubs["a"].state.paths.get("/obj/after", 0) == before
