"""A region as one cache (``[cluster]``, ``edge.cluster``), with real edge processes on loopback and
a counting origin: how many times the origin is asked, and what clients get when edges stop."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp.test_utils import TestServer

from edge.inventory import load_inventory
from edge.router.app import create_router, create_router_admin_app, open_router_parts
from edge.router.config import RouterSettings
from edge.router.select import rendezvous_order
from origin_stub import OriginStubServer
from origin_stub.body import expected_body
from tests.conftest import EdgeProcess, free_port, launch_edge
from tests.support.wait import until

TOKEN = "region-secret"
Region = list[EdgeProcess]


def write_inventory(path: Path, ports: list[tuple[int, int]], replication: int) -> None:
    lines = [f"replication = {replication}\n"]
    for index, (port, admin) in enumerate(ports):
        lines.append(
            f'\n[[edges]]\nname = "r-{index}"\nregion = "r"\nlatitude = 50.0\nlongitude = 8.0\n'
            f'url = "http://127.0.0.1:{port}"\nadmin_url = "http://127.0.0.1:{admin}"\n'
        )
    path.write_text("".join(lines))


async def json_get(url: str) -> Any:
    async with aiohttp.ClientSession() as client, client.get(url) as resp:
        return await resp.json()


async def start_region(
    origin: OriginStubServer,
    tmp_path: Path,
    edge_processes: list[EdgeProcess],
    *,
    replication: int,
    count: int = 3,
    extra: Callable[[int], str] = lambda index: "",
    cache: str = "",
) -> Region:
    ports = [(free_port(), free_port()) for _ in range(count)]
    tmp_path.mkdir(parents=True, exist_ok=True)
    inventory = tmp_path / "inventory.toml"
    write_inventory(inventory, ports, replication)
    region: Region = []
    for index, (port, admin) in enumerate(ports):
        config = tmp_path / f"edge-{index}.toml"
        config.write_text(
            f'origin = "{origin.url}"\nname = "r-{index}"\n{cache}\n'
            f'[cluster]\ninventory = "{inventory}"\nself = "r-{index}"\ntoken = "{TOKEN}"\n'
            f"health_interval = 0.2\nfall = 2\nrise = 1\n{extra(index)}"
        )
        edge = launch_edge([
            "--config", str(config), "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
            "--cache-dir", str(tmp_path / f"cache-{index}"), "--workers", "1", "--access-log", "off",
        ])  # fmt: skip
        edge_processes.append(edge)
        region.append(edge)

    async def all_healthy() -> bool:
        for edge in region:
            try:
                report = await json_get(f"{edge.admin_url}/cluster")
            except aiohttp.ClientError:
                return False
            if not all(peer["healthy"] for peer in report["peers"]):
                return False
        return True

    await until(all_healthy, timeout=20, what="every edge sees its peers healthy")
    return region


async def fetch(edge: EdgeProcess, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as client, client.get(f"{edge.url}{path}", headers=headers) as resp:
        return resp.status, resp.headers, await resp.read()


def owners(tmp_path: Path, path: str) -> list[str]:
    inventory = load_inventory(tmp_path / "inventory.toml")
    ranked = [edge.name for edge, _ in rendezvous_order(path, inventory.in_region("r"))]
    return ranked[: inventory.replication]


def origin_total(origin: OriginStubServer, prefix: str) -> int:
    return sum(count for path, count in origin.state.paths.items() if path.startswith(prefix))


async def warm(region: Region, paths: list[str]) -> None:
    for path in paths:
        for edge in region:
            status, _, _body = await fetch(edge, path)
            assert status == 200


PATHS = [f"/obj/k{index}?size=200&max_age=600" for index in range(100)]


async def test_every_object_reaches_the_origin_once_per_region(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    region = await start_region(origin, tmp_path, edge_processes, replication=1)
    await warm(region, PATHS)
    assert origin_total(origin, "/obj/k") == 100
    # The edges agree with the router on owners, and say where an object came from.
    report = await json_get(f"{region[0].admin_url}/cluster?url=http://x/obj/k7?size=200%26max_age=600")
    assert report["url"]["owners"] == owners(tmp_path, "/obj/k7?size=200&max_age=600")
    first = int(report["url"]["owners"][0][-1])
    other = region[(first + 1) % 3]
    status, headers, body = await fetch(other, "/obj/k7?size=200&max_age=600")
    assert (status, body) == (200, expected_body("k7", 200))
    members = headers["Cache-Status"].split(", ")
    assert members[0].startswith(f"r-{first};hit")  # the owner's member first (origin-most), then ours
    assert "fwd=peer" in members[-1]
    assert members[-1].endswith("stored=?0")  # a non-owner keeps no copy without peer_copy
    async with aiohttp.ClientSession() as client, client.get(f"{other.admin_url}/metrics") as resp:
        text = await resp.text()
    assert f'edgecache_peer_requests_total{{edge="r-{(first + 1) % 3}",peer="r-{first}"}}' in text


async def test_with_two_replicas_losing_an_edge_loses_nothing(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    region = await start_region(origin, tmp_path, edge_processes, replication=2)
    await warm(region, PATHS)
    assert origin_total(origin, "/obj/k") == 100
    region[0].stop()  # the first owner of about a third of the keys, a second owner of another third
    for path in PATHS:
        for edge in region[1:]:
            status, _, _body = await fetch(edge, path)
            assert status == 200
    assert origin_total(origin, "/obj/k") == 100  # every key still had a copy on a live owner


async def test_with_one_replica_only_the_lost_edges_keys_are_fetched_again(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    region = await start_region(origin, tmp_path, edge_processes, replication=1)
    await warm(region, PATHS)
    region[1].stop()
    lost = [path for path in PATHS if owners(tmp_path, path)[0] == "r-1"]
    assert 10 < len(lost) < 60
    for path in PATHS:
        for edge in (region[0], region[2]):
            assert (await fetch(edge, path))[0] == 200
    assert origin_total(origin, "/obj/k") == 100 + len(lost)  # each lost key once more, no more


async def test_the_region_holds_what_one_edge_cannot(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    small = "[cache]\nmemory_max_bytes = 1048576\nmemory_max_object_bytes = 65536\ndisk_max_bytes = 1048576\n"
    region = await start_region(origin, tmp_path, edge_processes, replication=1, cache=small)
    working_set = [f"/obj/ws{index}?size=20000&max_age=600" for index in range(120)]  # 2.4 MB: > one edge

    async def hit_ratio(edges: Region, prefix: str) -> float:
        before = origin_total(origin, prefix)
        for round_index, path in enumerate(working_set * 2):
            await fetch(edges[round_index % len(edges)], path)
        second_round = origin_total(origin, prefix) - before - len(working_set)
        return 1 - second_round / len(working_set)

    ratio = await hit_ratio(region, "/obj/ws")
    assert ratio > 0.9  # three edges' memory and disk hold the working set
    for edge in region:
        edge.stop()
    big = "[cache]\nmemory_max_bytes = 3145728\nmemory_max_object_bytes = 65536\ndisk_max_bytes = 3145728\n"
    alone = await start_region(origin, tmp_path / "alone", edge_processes, replication=1, count=1, cache=big)
    single = await hit_ratio(alone, "/obj/ws")
    assert abs(ratio - single) < 0.1  # ... as one edge with three times the memory does
    for edge in alone:
        edge.stop()
    lone = await start_region(origin, tmp_path / "lone", edge_processes, replication=1, count=1, cache=small)
    assert await hit_ratio(lone, "/obj/ws") < 0.5  # one small edge alone cannot hold it (measured: 0.0)


async def test_forged_peer_headers_change_nothing_and_loops_end(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    region = await start_region(origin, tmp_path, edge_processes, replication=1)
    path = "/s/forged"
    await _script(origin, "forged", [{"headers": [["Cache-Control", "max-age=600"]], "body": "ok"}])
    first = int(owners(tmp_path, path)[0][-1])
    other = region[(first + 1) % 3]
    status, headers, _ = await fetch(other, path, {"Edgecache-Peer": "guessed"})
    assert status == 200
    assert "fwd=peer" in headers["Cache-Status"]  # still a client request: filled through the owner
    seen = await _seen(origin, "forged")
    assert len(seen) == 1
    assert all(name.lower() != "edgecache-peer" or value == TOKEN for name, value in seen[0]["headers"])
    assert not any(name.lower() == "edgecache-peer" for name, _ in seen[0]["headers"])
    status, _, _body = await fetch(other, path, {"Via": f"1.1 r-{(first + 1) % 3}"})
    assert status == 508


async def test_a_parent_loop_ends_without_a_storm(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    ports = [(free_port(), free_port()) for _ in range(2)]

    def parent(index: int) -> str:
        return f'parent = "http://127.0.0.1:{ports[1 - index][0]}"\n'

    region = await _two_with_parents(origin, tmp_path, edge_processes, ports, parent)
    status, _, body = await fetch(region[0], "/obj/looped?size=10&max_age=600")
    assert (status, body) == (200, expected_body("looped", 10))
    assert origin_total(origin, "/obj/looped") == 1
    assert origin.state.total < 5


async def _two_with_parents(
    origin: OriginStubServer,
    tmp_path: Path,
    edge_processes: list[EdgeProcess],
    ports: list[tuple[int, int]],
    parent: Callable[[int], str],
) -> Region:
    region: Region = []
    for index, (port, admin) in enumerate(ports):
        inventory = tmp_path / f"inventory-{index}.toml"
        write_inventory(inventory, [(port, admin)], 1)  # each its own one-edge region: parents only
        config = tmp_path / f"edge-{index}.toml"
        config.write_text(
            f'origin = "{origin.url}"\nname = "r-{index}"\n[cluster]\ninventory = "{inventory}"\n'
            f'self = "r-0"\ntoken = "{TOKEN}"\n{parent(index)}'
        )
        edge = launch_edge([
            "--config", str(config), "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
            "--cache-dir", str(tmp_path / f"cache-{index}"), "--workers", "1", "--access-log", "off",
        ])  # fmt: skip
        edge_processes.append(edge)
        region.append(edge)
    return region


async def _script(origin: OriginStubServer, name: str, responses: list[dict[str, Any]]) -> None:
    async with aiohttp.ClientSession() as client, client.put(f"{origin.url}/_stub/script/{name}", json=responses) as r:
        assert r.status == 200


async def _seen(origin: OriginStubServer, name: str) -> list[dict[str, Any]]:
    return await json_get(f"{origin.url}/_stub/script/{name}/requests")  # type: ignore[no-any-return]


async def test_router_and_edges_agree_on_owners(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    region = await start_region(origin, tmp_path, edge_processes, replication=2)
    settings = RouterSettings.model_validate({
        "edges": str(tmp_path / "inventory.toml"), "purge_state_dir": str(tmp_path / "purges"),
        "health_interval": 0.1, "fall": 1, "rise": 1,
    })  # fmt: skip
    parts = open_router_parts(settings)
    router = create_router(
        settings, inventory=parts.inventory, locator=parts.locator, coverage=parts.coverage, health=parts.health
    )
    await router.start()
    admin = TestServer(create_router_admin_app(router), host="127.0.0.1")
    await admin.start_server()
    try:
        await until(lambda: all(router.health.healthy_view().values()), timeout=10, what="router sees every edge")
        for index in range(20):
            url = f"http://cdn.example/obj/agree{index}?size=5"
            route = await json_get(f"http://127.0.0.1:{admin.port}/route?ip=127.0.0.1&url={quote(url)}")
            for edge in region:
                view = await json_get(f"{edge.admin_url}/cluster?url={quote(url)}")
                assert view["url"]["owners"] == route["owners"], url
            if route["decision"]["edge"] is not None:
                assert route["decision"]["edge"] in route["owners"]
    finally:
        await admin.close()
        await router.close()


async def test_a_soft_purge_refreshes_through_the_owners(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    region = await start_region(
        origin, tmp_path, edge_processes, replication=2, extra=lambda index: "peer_copy = true\n"
    )
    paths = [f"/obj/soft{index}?size=100&max_age=600&etag=v1" for index in range(10)]
    await warm(region, paths)
    assert origin_total(origin, "/obj/soft") == 10
    for edge in region:  # as the control plane does: every edge, every copy
        async with aiohttp.ClientSession() as client:
            body = {"prefix": "http://cdn.example/obj/soft", "soft": True}
            async with client.post(f"{edge.admin_url}/purge", json=body) as resp:
                assert resp.status == 200
    for path in paths:
        for edge in region:
            status, headers, body = await fetch(edge, path)
            assert status == 200
            assert body == expected_body(path.split("?")[0].rsplit("/", 1)[1], 100)
    assert origin_total(origin, "/obj/soft") == 20  # one revalidation per key, by its first owner
    for path in paths:  # ... after which every copy is fresh again
        for edge in region:
            _, headers, _body = await fetch(edge, path)
            assert ";hit" in headers["Cache-Status"].split(", ")[-1]
    assert origin_total(origin, "/obj/soft") == 20


async def test_a_parent_tier_shows_every_hop_and_falls_back_to_the_origin(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    ports = [(free_port(), free_port()) for _ in range(2)]

    def parent(index: int) -> str:
        return f'parent = "http://127.0.0.1:{ports[1][0]}"\n' if index == 0 else ""

    child, shield = await _two_with_parents(origin, tmp_path, edge_processes, ports, parent)
    status, headers, body = await fetch(child, "/obj/tier?size=10&max_age=600")
    assert (status, body) == (200, expected_body("tier", 10))
    hops = headers["Cache-Status"].split(", ")
    assert hops[0].startswith("r-1;fwd=uri-miss"), hops  # origin-most first: the parent,
    assert hops[1].startswith("r-0;fwd=uri-miss"), hops  # then the edge the client asked
    via = ", ".join(headers.getall("Via")).split(", ")
    assert [hop.split()[-1] for hop in via][-2:] == ["r-1", "r-0"]
    await fetch(child, "/obj/tier2?size=10&max_age=600")
    status, headers, _ = await fetch(shield, "/obj/tier2?size=10&max_age=600")
    assert headers["Cache-Status"].startswith("r-1;hit")  # the shield holds what its children fetched
    assert origin_total(origin, "/obj/tier") == 2
    shield.stop()
    for index in range(5):  # the parent is gone: misses go to the origin, no client error
        status, _, body = await fetch(child, f"/obj/gone{index}?size=10&max_age=600")
        assert (status, body) == (200, expected_body(f"gone{index}", 10))
    assert origin_total(origin, "/obj/gone") == 5


def non_owner(region: Region, tmp_path: Path, path: str) -> tuple[EdgeProcess, int]:
    first = int(owners(tmp_path, path)[0][-1])
    return region[(first + 1) % 3], first


async def test_a_non_owner_relays_ranges_conditionals_and_head_to_the_owner(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    region = await start_region(origin, tmp_path, edge_processes, replication=1)
    path = "/obj/relayed?size=1000&max_age=600&etag=v1"
    other, first = non_owner(region, tmp_path, path)
    status, _, body = await fetch(other, path)
    assert (status, body) == (200, expected_body("relayed", 1000))
    status, headers, body = await fetch(other, path, {"Range": "bytes=10-19"})
    assert (status, body) == (206, expected_body("relayed", 1000)[10:20])
    assert headers["Cache-Status"].startswith(f"r-{first};hit")  # the owner answered the range itself
    assert "fwd=peer" in headers["Cache-Status"].split(", ")[-1]
    status, headers, _ = await fetch(other, path, {"If-None-Match": headers["ETag"]})
    assert status == 304
    async with aiohttp.ClientSession() as client, client.head(f"{other.url}{path}") as resp:
        assert (resp.status, resp.headers["Content-Length"]) == (200, "1000")
    assert origin_total(origin, "/obj/relayed") == 1  # the owner filled once; it answered everything
    inspect = await json_get(f"{other.admin_url}/cache?url={quote('http://cdn.example' + path)}")
    assert inspect["variants"] == []  # and the non-owner kept nothing


async def test_keys_the_site_makes_one_have_one_owner(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    cache = '[cache]\ndrop_query_params = ["utm_*"]\nsort_query = true\n'
    region = await start_region(origin, tmp_path, edge_processes, replication=1, cache=cache)
    for index in range(6):
        for edge in region:
            status, _, body = await fetch(edge, f"/obj/norm?utm_source=n{index}&size=30&max_age=600")
            assert (status, body) == (200, expected_body("norm", 30))
    assert origin_total(origin, "/obj/norm") == 1


async def test_a_client_naming_the_owner_in_via_cannot_take_it_out(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    region = await start_region(origin, tmp_path, edge_processes, replication=1)
    path = "/obj/via1?size=10&max_age=600"
    other, first = non_owner(region, tmp_path, path)
    for _ in range(3):  # the owner's name in Via: this request skips the owner; the owner stays in
        status, _, body = await fetch(other, path, {"Via": f"1.1 r-{first}"})
        assert (status, body) == (200, expected_body("via1", 10))
    # ...and cannot switch caching off for the key either: what the non-owner fetched itself, it
    # keeps and shares (it went to the origin once, not once per request).
    assert origin_total(origin, "/obj/via1") == 1
    answers = await asyncio.gather(*(fetch(other, "/obj/via2?size=10&max_age=600", {"Via": f"1.1 r-{first}"})
                                     for _ in range(20)))  # fmt: skip
    assert all(status == 200 for status, _, _ in answers)
    assert origin_total(origin, "/obj/via2") <= 2  # collapsed (an owner of its own may fetch it once more)
    report = await json_get(f"{other.admin_url}/cluster")
    assert all(peer["healthy"] for peer in report["peers"])
    checked = [peer for peer in report["peers"] if "state" in peer]
    assert checked
    assert all(peer["last_change_iso"].endswith("Z") for peer in checked)
    keys = [f"/obj/via-k{index}?size=10&max_age=600" for index in range(30)]
    await warm(region, keys)
    assert origin_total(origin, "/obj/via-k") == 30  # nobody was taken out: still once per region


async def test_a_slow_origin_does_not_make_an_owner_suspect(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    region = await start_region(
        origin, tmp_path, edge_processes, replication=1, cache="[upstream]\nread_timeout = 0.5\n"
    )
    path = "/obj/slow?size=10&max_age=600&delay_ms=1500"
    other, _first = non_owner(region, tmp_path, path)
    status, _, _body = await fetch(other, path)
    assert status == 504  # the owner's answer: its origin was too slow
    assert origin_total(origin, "/obj/slow") == 1  # not asked a second time by the non-owner
    report = await json_get(f"{other.admin_url}/cluster")
    assert all(peer["healthy"] for peer in report["peers"])


async def test_peer_copy_keeps_a_memory_copy_only(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    region = await start_region(
        origin, tmp_path, edge_processes, replication=1, extra=lambda index: "peer_copy = true\n"
    )
    path = "/obj/copied?size=100&max_age=600"
    other, first = non_owner(region, tmp_path, path)
    status, headers, _ = await fetch(other, path)
    member = headers["Cache-Status"].split(", ")[-1]
    assert (status, member.split(";")[:2]) == (200, [f"r-{(first + 1) % 3}", "fwd=peer"])
    inspect = await json_get(f"{other.admin_url}/cache?url={quote('http://cdn.example' + path)}")
    assert [variant["tier"] for variant in inspect["variants"]] == ["memory"]
    _, headers, _ = await fetch(other, path)
    assert headers["Cache-Status"].split(", ")[-1].startswith(f"r-{(first + 1) % 3};hit")  # its own copy now
    assert origin_total(origin, "/obj/copied") == 1


async def test_an_owner_does_not_judge_its_peers_as_clients(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    rules = '[protection]\nallow = ["10.0.0.0/8"]\ntrust_proxy = ["127.0.0.0/8"]\nrate = 5\nburst = 5\n'
    region = await start_region(origin, tmp_path, edge_processes, replication=1, cache=rules)
    paths = [f"/obj/judged{index}?size=10&max_age=600" for index in range(30)]
    for index, path in enumerate(paths):  # 30 clients of one non-owner: the owner sees one peer
        other, _ = non_owner(region, tmp_path, path)
        status, _, body = await fetch(other, path, {"X-Forwarded-For": f"10.0.0.{index + 1}"})
        assert (status, body) == (200, expected_body(f"judged{index}", 10)), status
    status, _, _ = await fetch(region[0], paths[0], {"X-Forwarded-For": "192.0.2.1"})
    assert status == 403  # clients are still judged, where they arrive


async def test_an_owner_that_has_not_applied_a_purge_yet_cannot_refill_its_old_copy(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    """The router reaches edges one by one: the second owner applied a purge, the first not yet.  The
    second's miss must not be filled with the first's old copy (kept there for its whole TTL).  The
    copy is older than the purge however fast the test runs: the origin says it is 30 s old (Age)."""
    region = await start_region(origin, tmp_path, edge_processes, replication=2)
    made, made_field = "age", "Age: 30"
    path = f"/obj/late-{made}?{urllib.parse.urlencode({'size': 100, 'max_age': 600, 'header': made_field})}"
    described = await json_get(f"{region[0].admin_url}/cluster?url={quote('http://cdn.example' + path)}")
    first, second = (region[int(name.removeprefix("r-"))] for name in described["url"]["owners"])
    assert (await fetch(first, path))[0] == 200
    assert origin_total(origin, f"/obj/late-{made}") == 1
    async with aiohttp.ClientSession() as client:
        body = {"prefix": f"http://cdn.example/obj/late-{made}"}
        async with client.post(f"{second.admin_url}/purge", json=body) as resp:
            assert resp.status == 200  # the first owner has not been told yet
    _, headers, _body = await fetch(second, path)
    assert "fwd=peer" not in headers["Cache-Status"]  # before: the first owner's old copy, then stored
    assert origin_total(origin, f"/obj/late-{made}") == 2
    _, headers, _body = await fetch(second, path)
    assert ";hit" in headers["Cache-Status"].split(", ")[-1]  # what it fetched itself, it keeps
    assert origin_total(origin, f"/obj/late-{made}") == 2
