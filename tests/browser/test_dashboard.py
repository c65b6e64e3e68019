"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium) against a router and two edges on loopback, asserting what
a person sees.  ``make test`` installs Chromium as root (CI); elsewhere this is skipped, saying how
to enable it.  ``EDGECACHE_SCREENSHOTS=dir`` (``make screenshots``) keeps the pictures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EdgeProcess, free_port, launch_edge
from tests.support.cdn import inventory_toml, router_toml, spawn
from tests.support.wait import until_sync

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Chromium is not installed: run `make test` as root (it installs Debian's chromium and "
    "chromium-driver) or `apt-get install chromium chromium-driver` to run the dashboard test",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,1800"):  # fmt: skip
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    # Chromium's singleton socket directories go under TMPDIR: the test's own, removed with it.
    service = Service(str(CHROMEDRIVER), env={**os.environ, "TMPDIR": str(tmp_path)})
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def cdn(
    tmp_path: Path, edge_processes: list[EdgeProcess], spawned: list[subprocess.Popen[bytes]]
) -> dict[str, Any]:
    origin_port = free_port()
    spawned.append(spawn("origin_stub", "--port", str(origin_port)))
    ports = {name: (free_port(), free_port()) for name in ("eu-west", "us-east")}
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(inventory_toml(
        (name, name, lat, public, admin) for (name, (public, admin)), lat in zip(ports.items(), (50, 40), strict=True)
    ))  # fmt: skip
    router_admin, router_public = free_port(), free_port()
    config = tmp_path / "router.toml"
    config.write_text(router_toml(router_public, router_admin, inventory, tmp_path / "router",
                                  'trust_proxy = ["127.0.0.1/32"]\ndashboard_interval = 0.5\n'))  # fmt: skip
    spawned.append(spawn("edge.router", "--config", str(config)))
    for name, (public, admin) in ports.items():
        edge_processes.append(launch_edge(
            ["--origin", f"http://127.0.0.1:{origin_port}", "--listen", f"127.0.0.1:{public}",
             "--admin-listen", f"127.0.0.1:{admin}", "--cache-dir", str(tmp_path / f"cache-{name}"),
             "--workers", "1", "--name", name, "--access-log", "off"],
            env={"EDGE_CONTROL_PLANE": f"http://127.0.0.1:{router_admin}"},
        ))  # fmt: skip

    def answering() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{router_admin}/healthz", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    until_sync(answering, timeout=30, what="the router's admin listener")
    return {"admin": f"http://127.0.0.1:{router_admin}", "router": f"http://127.0.0.1:{router_public}",
            "edges": {name: f"http://127.0.0.1:{public}" for name, (public, _) in ports.items()}}


def shot(driver: Any, name: str) -> None:
    directory = os.environ.get("EDGECACHE_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(directory) / f"{name}.png"))


def test_the_dashboard_shows_edges_traffic_and_purges(browser: Any, cdn: dict[str, Any]) -> None:
    browser.get(cdn["admin"] + "/")  # the admin root leads to the dashboard
    assert browser.current_url.endswith("/dashboard")

    def text(selector: str) -> str:
        """What the page shows there now (read in one step: the page re-renders every few seconds)."""
        shown = browser.execute_script(
            "const node = document.querySelector(arguments[0]); return node ? node.innerText : '';", selector
        )
        return str(shown).strip()

    until_sync(lambda: text('#edges tr[data-edge="eu-west"] td.state') == "up"
               and text('#edges tr[data-edge="us-east"] td.state') == "up", timeout=30,
               what="both edges listed as up")  # fmt: skip
    assert "eu-west" in text("#regions")
    url = cdn["edges"]["eu-west"] + "/obj/dash?size=2048&max_age=600"

    def points() -> int:
        return int(browser.execute_script("return document.querySelectorAll('#chart-rps polyline').length"
                                          " ? document.querySelector('#chart-rps polyline').points.length : 0;"))  # fmt: skip

    for burst in range(3):  # one miss, then hits, in bursts a few sampling rounds apart (a chart to look at)
        for index in range(10 + 10 * burst):
            other = f"{cdn['edges']['us-east']}/obj/dash-{index % 4}?size=512&max_age=600"
            with urllib.request.urlopen(url if index % 3 else other, timeout=5) as resp:
                resp.read()
        seen = points()
        until_sync(lambda seen=seen: points() >= seen + 2, timeout=30, what="the chart moving on")  # type: ignore[misc]
    no_redirect = urllib.request.build_opener(type("Stay", (urllib.request.HTTPRedirectHandler,), {
        "redirect_request": lambda *args, **kwargs: None}))  # fmt: skip
    for client in ("192.0.2.7", "198.51.100.7", "192.0.2.7"):  # the router's decisions, by region
        with pytest.raises(urllib.error.HTTPError, match="302"):  # the redirect, not followed
            no_redirect.open(urllib.request.Request(cdn["router"] + "/", headers={"X-Forwarded-For": client}), timeout=5)

    def hit_ratio() -> float:
        value = text("#hit-ratio").replace("%", "").strip()
        try:
            return float(value)
        except ValueError:
            return -1.0

    until_sync(lambda: hit_ratio() > 50, timeout=30, what="a hit ratio above 50 % after the traffic")
    until_sync(lambda: text("#decisions tbody") != "", timeout=30, what="the router's decisions by region")
    assert text('#edges tr[data-edge="eu-west"] td.hit-ratio') != "\u2013"
    assert text("#latency").endswith(" ms")
    assert text("#latency").split(" / ")[0] != "\u2013"  # a p50 from the client-side histogram
    shot(browser, "dashboard")

    def count(selector: str) -> int:
        return int(browser.execute_script("return document.querySelectorAll(arguments[0]).length;", selector))

    # Per edge: a sparkline in its row, and its own charts when chosen (the whole CDN again on a second click).
    until_sync(lambda: count('#edges tr[data-edge="eu-west"] td.trend polyline') > 0, timeout=30,
               what="a requests/s sparkline in eu-west's row")  # fmt: skip
    assert "purge lag" in text('#regions .member[data-edge="eu-west"]')
    browser.execute_script("document.querySelector('#edges tr[data-edge=\"eu-west\"]').click();")
    until_sync(lambda: text("#chart-title") == "edge eu-west" and count("#chart-rps polyline") > 0, timeout=30,
               what="eu-west's own requests/s chart")  # fmt: skip
    assert browser.execute_script("return document.getElementById('chart-scope').value;") == "eu-west"
    assert count("#chart-hits .line-1") > 0  # hit ratio by bytes beside by requests (a line, or a dot)
    assert "by bytes" in text("#chart-hits ~ .legend")
    assert text("#chart-errors ~ .legend").startswith("4xx")
    shot(browser, "dashboard-edge")
    browser.execute_script("document.querySelector('#edges tr[data-edge=\"eu-west\"]').click();")
    until_sync(lambda: text("#chart-title") == "whole CDN", timeout=10, what="the whole CDN's charts again")
    body = json.dumps({"urls": ["http://www.example.com/obj/dash?size=2048&max_age=600"]}).encode()
    request = urllib.request.Request(cdn["admin"] + "/purge", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        purge_id = json.load(resp)["id"]
    until_sync(lambda: text(f'#purges tr[data-purge-id="{purge_id}"] td.applied') == "2 of 2", timeout=30,
               what="the purge listed, applied by both edges")  # fmt: skip
    assert text(f'#purges tr[data-purge-id="{purge_id}"] td.lagging') == "none"
    shot(browser, "dashboard-purge")


def test_the_token_is_asked_for_once_and_kept_for_the_session(browser: Any, tmp_path: Path) -> None:
    """An admin API with a token: the page prompts once, keeps the answer for the session (a reload
    does not ask again), and a wrong answer is not asked for again on every refresh."""
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(inventory_toml([("lone", "eu-west", 50, free_port(), free_port())]))
    admin_port = free_port()
    config = tmp_path / "router.toml"
    config.write_text(router_toml(free_port(), admin_port, inventory, tmp_path / "router",
                                  'dashboard_interval = 0.5\nadmin_token = "t0ken"\n'))  # fmt: skip
    router = spawn("edge.router", "--config", str(config))
    try:
        admin = f"http://127.0.0.1:{admin_port}"

        def answering() -> bool:
            try:
                with urllib.request.urlopen(admin + "/dashboard", timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                return False

        until_sync(answering, timeout=30, what="the router's admin listener")
        from selenium.common.exceptions import NoAlertPresentException

        def prompt() -> Any:
            try:
                return browser.switch_to.alert
            except NoAlertPresentException:
                return None

        def status() -> str:
            return str(browser.execute_script("return document.getElementById('status').innerText;"))

        browser.get(admin + "/dashboard")
        until_sync(lambda: prompt() is not None, timeout=15, what="the token prompt")
        alert = browser.switch_to.alert
        alert.send_keys("t0ken")
        alert.accept()
        until_sync(lambda: status().startswith("updated"), timeout=15, what="the data, with the token")
        until_sync(lambda: "lone" in str(browser.execute_script("return document.body.innerText;")), timeout=15,
                   what="the edge listed")  # fmt: skip
        browser.refresh()  # the same tab's session: no second prompt
        until_sync(lambda: status().startswith("updated"), timeout=15, what="the data after a reload")
        assert prompt() is None

        browser.execute_script("sessionStorage.setItem('edgecache-admin-token', 'wrong');")
        browser.refresh()
        until_sync(lambda: prompt() is not None, timeout=15, what="one prompt for a wrong token")
        browser.switch_to.alert.dismiss()
        until_sync(lambda: "token is needed" in status(), timeout=15, what="the page saying a token is needed")
        rounds = browser.execute_script("return performance.getEntriesByType('resource').length;")
        until_sync(lambda: browser.execute_script("return performance.getEntriesByType('resource').length;")
                   > rounds + 1, timeout=15, what="two more refreshes")  # fmt: skip
        assert prompt() is None  # refreshing did not ask again
    finally:
        os.kill(router.pid, signal.SIGTERM)
        router.wait(15)
