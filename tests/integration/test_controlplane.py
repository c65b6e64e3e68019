"""The purge control plane against fake edges, over real sockets on 127.0.0.1.

A fake edge is a tiny aiohttp app implementing the edge admin contract the control plane relies
on: ``POST /purge`` (bearer token, records the body, keeps the highest ``cluster_seq``, answers
``affected``) and ``GET /readyz`` (``cluster_seq``; 503 while not ready).  Tests make it slow,
failing, hanging, refusing or gone, and watch what the control plane reports and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
from aiohttp import hdrs, web
from aiohttp.test_utils import TestClient

from edge.controlplane import CONTROL_PLANE_KEY, ControlPlaneSettings, create_control_plane_app, register_control_plane
from edge.inventory import Inventory, parse_inventory
from tests.conftest import PROJECT_ROOT
from tests.support.processes import terminate

EDGE_TOKEN = "edge-secret"
ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]
FakeFactory = Callable[..., Awaitable[list["FakeEdge"]]]


# -- fake edges ----------------------------------------------------------------------------------


@dataclass
class InFlight:
    """Purge requests being handled right now across all fake edges, and the most ever at once."""

    now: int = 0
    peak: int = 0


@dataclass
class FakeEdge:
    name: str
    token: str | None = EDGE_TOKEN
    tracker: InFlight | None = None
    mode: Literal["ok", "fail", "hang", "reject"] = "ok"
    delay: float = 0.0
    ready: bool = True
    cluster_seq: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)  # bodies it applied from pushes
    replayed: list[int] = field(default_factory=list)  # sequences it applied from GET /purges
    log_ids: set[str] = field(default_factory=set)  # the logs its pushed purges said they came from
    attempts: int = 0
    port: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def seqs(self) -> list[int]:
        return [body["cluster_seq"] for body in self.received]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/purge", self.purge)
        app.router.add_get("/readyz", self.readyz)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            self.release.set()
            await self._runner.cleanup()
            self._runner = None
            self.release = asyncio.Event()

    async def purge(self, request: web.Request) -> web.Response:
        if self.token and request.headers.get(hdrs.AUTHORIZATION) != f"Bearer {self.token}":
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        self.attempts += 1
        tracker = self.tracker or InFlight()
        tracker.now += 1
        tracker.peak = max(tracker.peak, tracker.now)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.mode == "hang":
                await self.release.wait()
                return web.json_response({"error": "gave up"}, status=503)
            if self.mode == "fail":
                return web.json_response({"error": "disk on fire"}, status=500)
            body = await request.json()
            if self.mode == "reject":
                return web.json_response({"error": "invalid request body"}, status=422)
            assert isinstance(body.get("id"), str)
            assert isinstance(body.get("cluster_seq"), int)
            log_id = body.pop("log_id")
            assert isinstance(log_id, str)
            assert log_id
            self.log_ids.add(log_id)
            self.received.append(body)
            self.cluster_seq = max(self.cluster_seq, body["cluster_seq"])
            kind = next(key for key in ("urls", "prefix", "tags", "all") if key in body)
            return web.json_response(
                {
                    "id": body["id"],
                    "seq": len(self.received),
                    "cluster_seq": body["cluster_seq"],
                    "kind": kind,
                    "soft": body.get("soft", False),
                    "affected": len(body["urls"]) if kind == "urls" else 7,
                    "edge": self.name,
                }
            )
        finally:
            tracker.now -= 1

    async def readyz(self, request: web.Request) -> web.Response:
        body = {"ready": self.ready, "cluster_seq": self.cluster_seq, "edge": self.name}
        return web.json_response(body, status=200 if self.ready else 503)

    async def replay_from(self, control_plane_url: str, token: str | None = None) -> None:
        """What a real edge does at startup: apply what it missed from the log, then turn ready."""
        headers = {hdrs.AUTHORIZATION: f"Bearer {token}"} if token else {}
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{control_plane_url}/purges", params={"after": str(self.cluster_seq)}, headers=headers
            ) as resp,
        ):
            assert resp.status == 200
            page = await resp.json()
        for record in page["records"]:
            self.replayed.append(record["seq"])
            self.cluster_seq = max(self.cluster_seq, record["seq"])
        self.ready = True


@pytest.fixture
async def fakes() -> AsyncIterator[FakeFactory]:
    started: list[FakeEdge] = []

    async def make(count: int, **options: Any) -> list[FakeEdge]:
        edges = [FakeEdge(name=f"edge-{chr(ord('a') + len(started) + i)}", **options) for i in range(count)]
        for edge in edges:
            await edge.start()
            started.append(edge)
        return edges

    yield make
    for edge in started:
        await edge.stop()


def inventory_of(edges: list[FakeEdge], disabled: tuple[str, ...] = ()) -> Inventory:
    return parse_inventory(
        {
            "edges": [
                {
                    "name": edge.name,
                    "region": "local",
                    "latitude": 0.0,
                    "longitude": 0.0,
                    "url": edge.url,
                    "admin_url": edge.url,
                    "enabled": edge.name not in disabled,
                }
                for edge in edges
            ]
        }
    )


def settings_for(tmp_path: Path, **overrides: Any) -> ControlPlaneSettings:
    data: dict[str, Any] = {
        "state_dir": str(tmp_path / "cp"),
        "edge_token": EDGE_TOKEN,
        "timeout": 1.0,
        "retry_interval": 0.05,
    }
    data.update(overrides)
    return ControlPlaneSettings.model_validate(data)


async def start_cp(aiohttp_client: ClientFactory, edges: list[FakeEdge], tmp_path: Path, **overrides: Any) -> Client:
    disabled = overrides.pop("disabled", ())
    return await aiohttp_client(
        create_control_plane_app(inventory_of(edges, disabled), settings_for(tmp_path, **overrides))
    )


def cp_url(client: Client) -> str:
    return str(client.make_url("")).rstrip("/")


async def purge(client: Client, body: Any, **kwargs: Any) -> dict[str, Any]:
    resp = await client.post("/purge", json=body, **kwargs)
    assert resp.status == 200, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def status(client: Client, purge_id: str, **kwargs: Any) -> dict[str, Any]:
    resp = await client.get(f"/purges/{purge_id}", **kwargs)
    assert resp.status == 200, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def until_complete(client: Client, purge_id: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def complete() -> bool:
        found.update(await status(client, purge_id))
        return bool(found["complete"])

    await eventually(complete)
    return found


# -- fan-out -------------------------------------------------------------------------------------


async def test_a_purge_reaches_every_edge_in_parallel_with_per_edge_results(
    aiohttp_client: ClientFactory, fakes: FakeFactory, tmp_path: Path
) -> None:
    tracker = InFlight()
    edges = await fakes(3, tracker=tracker, delay=0.3)
    client = await start_cp(aiohttp_client, edges, tmp_path)

    result = await purge(client, {"urls": ["http://example.com/a", "http://example.com/b"]})

    assert tracker.peak == 3  # all three edges were handling it at the same time
    assert (result["seq"], result["kind"], result["soft"]) == (1, "urls", False)
    assert (result["applied"], result["failed"]) == (3, 0)
    assert result["id"].startswith("p-1-")
    assert result["created_at_iso"].endswith("Z")
    assert result["created_at_iso"][:4].isdigit()
    assert set(result["edges"]) == {"edge-a", "edge-b", "edge-c"}
    for outcome in result["edges"].values():
        assert (outcome["status"], outcome["affected"], outcome["error"]) == ("applied", 2, None)
        assert outcome["ms"] >= 250  # it measured the edge's 0.3 s answer (loop timers may fire a hair early)
    for edge in edges:
        urls = ["http://example.com/a", "http://example.com/b"]
        assert edge.received == [{"urls": urls, "soft": False, "id": result["id"], "cluster_seq": 1}]
    found = await status(client, result["id"])
    assert found["complete"]
    assert found["applied"] == 3
    assert found["lagging"] == []
    assert {outcome["via"] for outcome in found["edges"].values()} == {"push"}


@pytest.mark.parametrize(
    ("body", "forwarded"),
    [
        ({"prefix": "https://example.com/img/"}, {"prefix": "https://example.com/img/", "soft": False}),
        ({"tags": ["product-42", "home"], "soft": True}, {"tags": ["product-42", "home"], "soft": True}),
        ({"all": True}, {"all": True, "soft": False}),
        ({"all": True, "soft": True}, {"all": True, "soft": True}),
    ],
)
async def test_every_purge_kind_is_forwarded_as_the_edge_expects(
    aiohttp_client: ClientFactory, fakes: FakeFactory, tmp_path: Path, body: dict[str, Any], forwarded: dict[str, Any]
) -> None:
    edges = await fakes(2)
    client = await start_cp(aiohttp_client, edges, tmp_path)
    result = await purge(client, body)
    assert result["kind"] == next(iter(body))
    assert all(outcome["affected"] == 7 for outcome in result["edges"].values())
    for edge in edges:
        assert edge.received == [{**forwarded, "id": result["id"], "cluster_seq": 1}]


async def test_concurrent_purges_reach_each_edge_in_sequence_order(
    aiohttp_client: ClientFactory, fakes: FakeFactory, tmp_path: Path
) -> None:
    edges = await fakes(3, delay=0.01)
    client = await start_cp(aiohttp_client, edges, tmp_path)
    results = await asyncio.gather(*(purge(client, {"tags": [f"t{i}"]}) for i in range(20)))
    assert sorted(result["seq"] for result in results) == list(range(1, 21))
    assert all(result["applied"] == 3 for result in results)
    for edge in edges:
        assert edge.seqs == list(range(1, 21))  # never N+1 before N


async def test_disabled_edges_are_not_sent_purges(
    aiohttp_client: ClientFactory, fakes: FakeFactory, tmp_path: Path
) -> None:
    edges = await fakes(2)
    client = await start_cp(aiohttp_client, edges, tmp_path, disabled=("edge-b",))
    result = await purge(client, {"all": True})
    assert list(result["edges"]) == ["edge-a"]
    assert edges[1].received == []


# -- failures, lag and background retries --------------------------------------------------------


async def test_a_down_edge_is_reported_then_caught_up_in_order_when_it_returns(
    aiohttp_client: ClientFactory, fakes: FakeFactory, tmp_path: Path
) -> None:
    edges = await fakes(3)
    a, b, c = edges
    client = await start_cp(aiohttp_client, edges, tmp_path)
    await b.stop()

    first = await purge(client, {"urls": ["http://example.com/x"]})
    assert (first["applied"], first["failed"]) == (2, 1)
    assert first["edges"]["edge-b"]["status"] == "failed"
    assert first["edges"]["edge-b"]["affected"] is None
    assert "connect" in first["edges"]["edge-b"]["error"].lower()
    assert first["edges"]["edge-a"]["status"] == first["edges"]["edge-c"]["status"] == "applied"

    found = await status(client, first["id"])
    assert (found["complete"], found["lagging"], found["applied"], found["failed"]) == (False, ["edge-b"], 2, 1)
    assert found["edges"]["edge-b"]["status"] == "failed"

    second = await purge(client, {"tags": ["t"]})
    third = await purge(client, {"prefix": "http://example.com/p"})
    assert second["edges"]["edge-b"]["status"] == third["edges"]["edge-b"]["status"] == "failed"
    overview = await (await client.get("/purges")).json()
    assert overview["edges"]["edge-b"]["lag"] == 3
    assert overview["edges"]["edge-b"]["failing"]
    assert overview["edges"]["edge-a"]["lag"] == 0
    assert overview["edges"]["edge-a"]["last_success_at_iso"].endswith("Z")  # when, readable beside the epoch

    await b.start()  # same port
    done = await until_complete(client, third["id"])
    assert done["edges"]["edge-b"]["via"] == "push"
    assert b.seqs == [1, 2, 3]  # the missed purges, in order, once each
    assert a.seqs == c.seqs == [1, 2, 3]
    again = await status(client, first["id"])
    assert again["complete"]
    assert again["edges"]["edge-b"]["affected"] == 1
    counters = client.app[CONTROL_PLANE_KEY].counters
    assert counters.purges == {"urls": 1, "tags": 1, "prefix": 1}
    assert counters.edge_failures["edge-b"] >= 3
    assert client.app[CONTROL_PLANE_KEY].edge_lag() == {"edge-a": 0, "edge-b": 0, "edge-c": 0}


async def test_an_edge_that_replayed_the_log_itself_is_confirmed_through_readyz(
    aiohttp_client: ClientFactory, fakes: FakeFactory, tmp_path: Path
) -> None:
    edges = await fakes(2)
    b = edges[1]
    client = await start_cp(aiohttp_client, edges, tmp_path)
    await b.stop()
    first = await purge(client, {"urls": ["http://example.com/x"]})
    second = await purge(client, {"all": True})
    assert first["edges"]["edge-b"]["status"] == second["edges"]["edge-b"]["status"] == "failed"

    b.ready = False  # restarts, catching up: /readyz answers 503, so the control plane waits
    await b.start()
    await asyncio.sleep(0.3)  # several background rounds
    assert b.received == []
    lagging = (await status(client, second["id"]))["edges"]["edge-b"]
    assert lagging["status"] == "failed"
    assert "connect" in lagging["error"].lower()
    assert lagging["current_error"] == "edge not ready"  # what the background loop meets now

    await b.replay_from(cp_url(client))
    assert b.replayed == [1, 2]
    done = await until_complete(client, second["id"])
    assert done["edges"]["edge-b"] == {
        "status": "applied", "affected": None, "error": None, "at": None, "at_iso": None, "ms": None, "via": "cluster_seq",
    }  # fmt: skip
    assert b.received == []  # nothing pushed twice


async def test_a_hanging_edge_times_out_and_is_retried_in_the_background(
    aiohttp_client: ClientFactory, fakes: FakeFactory, tmp_path: Path
) -> None:
    edges = await fakes(2)
    b = edges[1]
    b.mode = "hang"
    client = await start_cp(aiohttp_client, edges, tmp_path, timeout=0.3)
    result = await purge(client, {"urls": ["http://example.com/x"]})
    assert result["edges"]["edge-a"]["status"] == "applied"
    assert result["edges"]["edge-b"]["status"] == "failed"
    assert "timed out" in result["edges"]["edge-b"]["error"]

    b.mode = "ok"
    b.release.set()
    await until_complete(client, result["id"])
    assert b.seqs == [1]


async def test_an_edge_answering_errors_is_retried_until_it_applies(
    aiohttp_client: ClientFactory, fakes: FakeFactory, tmp_path: Path
) -> None:
    edges = await fakes(1)
    edges[0].mode = "fail"
    client = await start_cp(aiohttp_client, edges, tmp_path)
    result = await purge(client, {"all": True})
    assert result["edges"]["edge-a"]["error"] == "HTTP 500: disk on fire"

    async def retried_twice() -> bool:
        return edges[0].attempts >= 3

    await eventually(retried_twice)
    assert (await status(client, result["id"]))["lagging"] == ["edge-a"]
    edges[0].mode = "ok"
    await until_complete(client, result["id"])


async def test_a_purge_the_edge_rejects_is_recorded_and_does_not_block_later_ones(
    aiohttp_client: ClientFactory, fakes: FakeFactory, tmp_path: Path
) -> None:
    edges = await fakes(1)
    edges[0].mode = "reject"
    client = await start_cp(aiohttp_client, edges, tmp_path)
    rejected = await purge(client, {"urls": ["http://example.com/x"]})
    outcome = rejected["edges"]["edge-a"]
    assert outcome["status"] == "failed"
    assert outcome["error"] == "rejected by the edge: HTTP 422: invalid request body"

    edges[0].mode = "ok"
    later = await purge(client, {"all": True})
    assert later["edges"]["edge-a"]["status"] == "applied"
    await asyncio.sleep(0.2)
    assert edges[0].seqs == [2]  # the rejected one is not retried
    found = await status(client, rejected["id"])
    assert found["edges"]["edge-a"]["status"] == "rejected"
    assert (found["lagging"], found["complete"], found["rejected"]) == ([], False, 1)


async def test_an_edge_behind_retention_first_gets_a_purge_all(
    aiohttp_client: ClientFactory, fakes: FakeFactory, tmp_path: Path
) -> None:
    edges = await fakes(2)
    b = edges[1]
    client = await start_cp(aiohttp_client, edges, tmp_path, max_records=2)
    await b.stop()
    results = [await purge(client, {"tags": [f"t{i}"]}) for i in range(4)]  # keeps 3 and 4 only
    await b.start()
    await until_complete(client, results[-1]["id"])
    assert b.received[0] == {"all": True, "soft": False, "id": "gap-1-2", "cluster_seq": 2}
    assert b.seqs == [2, 3, 4]
    assert client.app[CONTROL_PLANE_KEY].counters.gap_purges == {"edge-b": 1}


async def test_progress_and_the_log_survive_a_control_plane_restart(
    aiohttp_client: ClientFactory, fakes: FakeFactory, tmp_path: Path
) -> None:
    edges = await fakes(2)
    b = edges[1]
    await b.stop()
    first_cp = await start_cp(aiohttp_client, edges, tmp_path, retry_interval=60)
    first = await purge(first_cp, {"urls": ["http://example.com/x"]})
    assert first["edges"]["edge-b"]["status"] == "failed"
    await first_cp.close()

    await b.start()
    second_cp = await start_cp(aiohttp_client, edges, tmp_path)
    done = await until_complete(second_cp, first["id"])  # retried by the new process
    assert done["edges"]["edge-a"]["affected"] == 1  # the outcome stored by the first one
    assert b.seqs == [1]
    assert (await purge(second_cp, {"all": True}))["seq"] == 2


# -- the catch-up endpoint -----------------------------------------------------------------------


async def test_purges_after_n_pages_in_order_and_flags_truncation(
    aiohttp_client: ClientFactory, fakes: FakeFactory, tmp_path: Path
) -> None:
    edges = await fakes(1)
    client = await start_cp(aiohttp_client, edges, tmp_path, max_records=3)
    ids = [(await purge(client, {"urls": [f"http://example.com/{i}"]}))["id"] for i in range(5)]

    page = await (await client.get("/purges", params={"after": "0"})).json()
    assert [r["seq"] for r in page["records"]] == [3, 4, 5]
    assert [r["id"] for r in page["records"]] == ids[2:]
    assert (page["latest_seq"], page["oldest_seq"], page["truncated"], page["more"]) == (5, 3, True, False)
    record = page["records"][0]
    assert record["kind"] == "urls"
    assert record["values"] == ["http://example.com/2"]
    assert record["soft"] is False
    assert record["body"] == {"urls": ["http://example.com/2"], "soft": False, "id": ids[2], "cluster_seq": 3}

    page = await (await client.get("/purges", params={"after": "2", "limit": "2"})).json()
    assert ([r["seq"] for r in page["records"]], page["truncated"], page["more"]) == ([3, 4], False, True)
    page = await (await client.get("/purges", params={"after": "5"})).json()
    assert (page["records"], page["truncated"]) == ([], False)

    for params in (
        {"after": "-1"},
        {"after": "x"},
        {"after": "²"},
        {"after": "9" * 5000},
        {"after": "0", "limit": "0"},
        {"after": "0", "limit": "10001"},
    ):
        resp = await client.get("/purges", params=params)
        assert resp.status == 400
        assert "must be an integer" in (await resp.json())["error"]
    resp = await client.get(f"/purges/{ids[0]}")
    assert resp.status == 404  # deleted by retention
    assert (await status(client, "5"))["id"] == ids[4]  # a sequence number works as well
    for odd in ("²", "9" * 40):
        assert (await client.get(f"/purges/{odd}")).status == 404


async def test_recent_purges_with_summaries(aiohttp_client: ClientFactory, fakes: FakeFactory, tmp_path: Path) -> None:
    edges = await fakes(2)
    await edges[1].stop()
    client = await start_cp(aiohttp_client, edges, tmp_path, retry_interval=60)
    for i in range(3):
        await purge(client, {"tags": [f"t{i}"]})
    overview = await (await client.get("/purges", params={"limit": "2"})).json()
    assert [r["seq"] for r in overview["records"]] == [3, 2]
    assert overview["records"][0]["summary"] == {
        "applied": 1, "failed": 1, "rejected": 0, "pending": 0, "lagging": ["edge-b"], "complete": False,
    }  # fmt: skip
    assert overview["edges"]["edge-b"]["lag"] == 3
    assert overview["edges"]["edge-b"]["applied_through"] == 0
    assert (overview["latest_seq"], overview["oldest_seq"]) == (3, 1)


# -- bad requests and auth -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "status_code", "mentions"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[]", 422, "(body)"),
        (b"{}", 422, "exactly one of urls, prefix, tags, all"),
        (b'{"urls": ["http://a.test/"], "tags": ["x"]}', 422, "exactly one"),
        (b'{"urls": ["/relative"]}', 422, "urls: urls[0]: not an absolute"),
        (b'{"all": false}', 422, '"all" must be true'),
        (b'{"all": true, "soft": "yes"}', 422, "soft:"),
        (b'{"all": true, "cluster_seq": 9}', 422, "cluster_seq: unknown field"),
        (b'{"tags": ["a b"]}', 422, "tags:"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
        (b'{"tags": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "nested too deeply"),
    ],
)
async def test_malformed_purges_are_refused_and_not_logged(
    aiohttp_client: ClientFactory, fakes: FakeFactory, tmp_path: Path, payload: bytes, status_code: int, mentions: str
) -> None:
    edges = await fakes(1)
    client = await start_cp(aiohttp_client, edges, tmp_path)
    resp = await client.post("/purge", data=payload, headers={hdrs.CONTENT_TYPE: "application/json"})
    assert resp.status == status_code
    body = await resp.json()
    assert mentions in body["error"]
    if status_code == 422:
        assert body["problems"]
        assert all({"field", "error"} <= set(item) for item in body["problems"])
    assert (await (await client.get("/purges", params={"after": "0"})).json())["latest_seq"] == 0
    assert edges[0].received == []
    resp = await client.get("/purges/p-1-nothing")
    assert resp.status == 404


async def test_tokens_are_required_when_configured(
    aiohttp_client: ClientFactory, fakes: FakeFactory, tmp_path: Path
) -> None:
    edges = await fakes(2)
    edges[1].token = "another-token"  # this edge does not accept the token the control plane sends
    client = await start_cp(aiohttp_client, edges, tmp_path, admin_token="admin-secret")
    admin = {hdrs.AUTHORIZATION: "Bearer admin-secret"}
    as_edge = {hdrs.AUTHORIZATION: f"Bearer {EDGE_TOKEN}"}

    for headers in ({}, {hdrs.AUTHORIZATION: "Bearer wrong"}, {hdrs.AUTHORIZATION: "Basic admin-secret"}, as_edge):
        resp = await client.post("/purge", json={"all": True}, headers=headers)
        assert resp.status == 401
        assert resp.headers[hdrs.WWW_AUTHENTICATE].startswith("Bearer")
    for path in ("/purges", "/purges?after=0", "/purges/p-1-x"):
        assert (await client.get(path)).status == 401
        assert (await client.get(path, headers={hdrs.AUTHORIZATION: "Bearer wrong"})).status == 401

    result = await purge(client, {"all": True}, headers=admin)
    assert result["edges"]["edge-a"]["status"] == "applied"
    refused = result["edges"]["edge-b"]
    assert (refused["status"], refused["error"]) == ("failed", "HTTP 401: missing or wrong bearer token")
    assert (await client.get("/purges?after=0", headers=as_edge)).status == 200  # edges may read the log
    assert (await client.get(f"/purges/{result['id']}", headers=admin)).status == 200


async def test_it_mounts_on_an_existing_app_under_a_prefix(
    aiohttp_client: ClientFactory, fakes: FakeFactory, tmp_path: Path
) -> None:
    edges = await fakes(1)
    host = web.Application()

    async def own(request: web.Request) -> web.Response:
        return web.Response(text="host route")

    host.router.add_get("/health", own)
    control_plane = register_control_plane(host, inventory_of(edges), settings_for(tmp_path), prefix="/cp")
    client = await aiohttp_client(host)
    assert host[CONTROL_PLANE_KEY] is control_plane
    resp = await client.post("/cp/purge", json={"all": True})
    assert resp.status == 200
    assert (await client.get("/health")).status == 200
    assert (await (await client.get("/cp/purges", params={"after": "0"})).json())["latest_seq"] == 1
    assert control_plane.counters.snapshot()["purges"] == {"all": 1}


# -- the standalone program ----------------------------------------------------------------------


def _launch(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge.controlplane", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def _stop(process: subprocess.Popen[str]) -> int:
    terminate(process)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    return process.returncode


def _write_inventory(path: Path, edges: list[FakeEdge]) -> None:
    lines = []
    for edge in edges:
        lines += [
            "[[edges]]",
            f'name = "{edge.name}"',
            'region = "local"',
            "latitude = 0.0",
            "longitude = 0.0",
            f'url = "{edge.url}"',
            f'admin_url = "{edge.url}"',
        ]
    path.write_text("\n".join(lines) + "\n")


async def test_the_cli_serves_the_control_plane_and_stops_on_sigterm(fakes: FakeFactory, tmp_path: Path) -> None:
    edges = await fakes(2)
    inventory = tmp_path / "inventory.toml"
    _write_inventory(inventory, edges)
    process = _launch(
        ["--listen", "127.0.0.1:0", "--edges", str(inventory), "--state-dir", str(tmp_path / "state")],
        env={"CONTROLPLANE_EDGE_TOKEN": EDGE_TOKEN, "CONTROLPLANE_ADMIN_TOKEN": "cli-admin"},
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 20)
        assert line.startswith("control plane listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        assert not url.endswith(":0")
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{url}/purge", json={"tags": ["cli"]}, headers={hdrs.AUTHORIZATION: "Bearer cli-admin"}
            ) as resp,
        ):
            assert resp.status == 200
            result = await resp.json()
        assert result["applied"] == 2
        assert all(edge.seqs == [1] for edge in edges)
    finally:
        code = await asyncio.to_thread(_stop, process)
    assert code == 0


async def test_the_cli_refuses_bad_configuration(fakes: FakeFactory, tmp_path: Path) -> None:
    edges = await fakes(1)
    inventory = tmp_path / "inventory.toml"
    _write_inventory(inventory, edges)
    base = ["--edges", str(inventory), "--state-dir", str(tmp_path / "state")]
    cases = [
        (["--listen", "0.0.0.0:0", *base], "admin_token: required"),
        (["--listen", "127.0.0.1:0", "--timeout", "-1", *base], "timeout"),
        (["--listen", "127.0.0.1:0", "--edges", str(tmp_path / "missing.toml"), "--state-dir", "x"], "cannot read"),
    ]
    for args, message in cases:
        process = _launch(args)
        _, stderr = await asyncio.to_thread(process.communicate, None, 20)
        assert process.returncode == 2, stderr
        assert message in stderr

    process = _launch(["--check-config", *base])
    out, _ = await asyncio.to_thread(process.communicate, None, 20)
    assert process.returncode == 0
    assert "configuration ok: 1 enabled edges" in out


async def test_the_cli_refuses_a_state_directory_in_use(fakes: FakeFactory, tmp_path: Path) -> None:
    edges = await fakes(1)
    inventory = tmp_path / "inventory.toml"
    _write_inventory(inventory, edges)
    args = ["--listen", "127.0.0.1:0", "--edges", str(inventory), "--state-dir", str(tmp_path / "state")]
    first = _launch(args)
    try:
        assert first.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(first.stdout.readline), 20)
        assert "listening" in line
        second = _launch(args)
        _, stderr = await asyncio.to_thread(second.communicate, None, 20)
        assert second.returncode == 2
        assert "in use by another control plane" in stderr
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(_stop, first)
