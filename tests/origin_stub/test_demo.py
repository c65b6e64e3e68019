"""The demo site, through the bare app factory (the way ``aiohttp_server`` users get it)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from origin_stub import create_origin_app


@pytest.fixture
async def client(aiohttp_client: Any) -> TestClient[Any, Any]:
    result: TestClient[Any, Any] = await aiohttp_client(create_origin_app())
    return result


async def test_index_page(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert resp.headers["Cache-Control"] == "public, max-age=10"
    etag = resp.headers["ETag"]
    html = await resp.text()
    assert "<title>edgecache demo origin</title>" in html
    for ref in ("/static/style.css", "/static/logo.svg", "/static/photo.svg"):
        assert ref in html
        assert (await client.get(ref)).status == 200

    again = await client.get("/", headers={"If-None-Match": etag})
    assert again.status == 304
    assert again.headers["ETag"] == etag
    assert await again.read() == b""


@pytest.mark.parametrize(
    ("path", "ctype", "marker"),
    [
        ("/static/style.css", "text/css; charset=utf-8", b"body {"),
        ("/static/logo.svg", "image/svg+xml", b"<svg"),
        ("/static/photo.svg", "image/svg+xml", b"<svg"),
    ],
)
async def test_static_assets(client: TestClient[Any, Any], path: str, ctype: str, marker: bytes) -> None:
    resp = await client.get(path)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == ctype
    assert resp.headers["Cache-Control"] == "public, max-age=60"
    assert resp.headers["Last-Modified"] == "Mon, 01 Jan 2024 00:00:00 GMT"
    body = await resp.read()
    assert marker in body
    assert resp.headers["Content-Length"] == str(len(body))
    revalidated = await client.get(path, headers={"If-None-Match": resp.headers["ETag"]})
    assert revalidated.status == 304
    changed = await client.get(path, headers={"If-None-Match": '"other"'})
    assert changed.status == 200


async def test_unknown_static_is_404(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/static/nope.png")).status == 404


async def test_refuse_needs_a_real_server(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/_stub/refuse?seconds=1")
    assert resp.status == 501
    assert "OriginStubServer" in await resp.text()
    # and the app is still serving
    assert (await client.get("/obj/x?size=1")).status == 200
