"""``edgecache``: the operator's command for a running CDN (the router's admin API, and each edge's).

    edgecache status                          edges by region: health, purge lag, hit ratio
    edgecache purge URL… | --prefix P | --tag T… | --all  [--site S] [--soft] [--wait]
    edgecache inspect URL [--ip IP]           the router's pick, the owners, what each edge holds
    edgecache route IP [--url URL]            the router's decision for a client address, explained
    edgecache check-config FILE…              validate edge, router and inventory files

The router's admin URL and token come from ``--admin``/``--token`` or ``EDGECACHE_ADMIN`` /
``EDGECACHE_TOKEN`` (edges' admin APIs: ``--edge-token`` / ``EDGECACHE_EDGE_TOKEN``, default the
same token).  ``--json`` prints what the API answered, for scripts.

Exit codes: 0 done; 1 not done (an invalid file, a purge not applied everywhere in time, an
edge unhealthy for ``status``); 2 usage; 3 unreachable; 4 unauthorised (401/403).
"""

from __future__ import annotations

import json
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from edge.version import package_version

__all__ = ["main"]

EXIT_NOT_DONE, EXIT_UNREACHABLE, EXIT_UNAUTHORISED = 1, 3, 4
DEFAULT_ADMIN = "http://127.0.0.1:8081"

console = Console()
errors = Console(stderr=True)


class Api:
    """The admin APIs, with the errors an operator can act on."""

    def __init__(self, admin: str, token: str | None, edge_token: str | None, timeout: float) -> None:
        self.admin = admin.rstrip("/")
        self.token = token
        self.edge_token = edge_token if edge_token is not None else token
        self.timeout = timeout

    def call(self, url: str, *, body: Any = None, token: str | None = None, method: str | None = None,
             allow: tuple[int, ...] = ()) -> Any:  # fmt: skip
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            if exc.code in allow:
                return json.loads(text or "null")
            if exc.code in (401, 403):
                fail(EXIT_UNAUTHORISED, f"{url}: {exc.code} unauthorised — give the admin token with --token or "
                                        "EDGECACHE_TOKEN")  # fmt: skip
            try:
                detail = json.loads(text).get("error", text)
            except (ValueError, AttributeError):
                detail = text.strip()[:300]
            fail(EXIT_NOT_DONE, f"{url}: HTTP {exc.code}: {detail}")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            fail(EXIT_UNREACHABLE, f"{url}: unreachable ({reason}) — is the router running? (--admin, EDGECACHE_ADMIN)")

    def router(self, path: str, **kwargs: Any) -> Any:
        return self.call(self.admin + path, token=self.token, **kwargs)

    def edge(self, admin_url: str, path: str) -> Any:
        """An edge's admin API; None when it cannot be asked (shown, not fatal)."""
        try:
            return self.call(admin_url.rstrip("/") + path, token=self.edge_token)
        except SystemExit:
            return None


def fail(code: int, message: str) -> NoReturn:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    sys.exit(code)


def when(epoch: float | None) -> str:
    """A time for people: ISO-8601 in the viewer's zone."""
    if not epoch:
        return "-"
    return datetime.fromtimestamp(epoch, tz=UTC).astimezone().isoformat(timespec="seconds")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


@click.group(help=__doc__, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_version(), prog_name="edgecache")
@click.option("--admin", envvar="EDGECACHE_ADMIN", default=DEFAULT_ADMIN, show_default=True,
              help="the router's admin URL")  # fmt: skip
@click.option("--token", envvar="EDGECACHE_TOKEN", help="the router's admin token")
@click.option("--edge-token", envvar="EDGECACHE_EDGE_TOKEN", help="the edges' admin token (default: --token)")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="seconds per request")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON (for scripts)")
@click.pass_context
def main(ctx: click.Context, admin: str, token: str | None, edge_token: str | None, timeout: float,
         as_json: bool) -> None:  # fmt: skip
    ctx.obj = {"api": Api(admin, token, edge_token, timeout), "json": as_json}


@main.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Edges by region: health, purge lag, hit ratio."""
    api: Api = ctx.obj["api"]
    health = api.router("/health")
    purges = api.router("/purges", allow=(503,))
    lag = {name: item.get("lag") for name, item in (purges or {}).get("edges", {}).items()}
    rows = []
    for name, edge in sorted(health["edges"].items(), key=lambda item: (item[1]["region"], item[0])):
        stats = api.edge(edge["admin_url"], "/stats") if edge.get("admin_url") and edge["healthy"] else None
        rows.append({
            "edge": name, "region": edge["region"], "state": edge["state"], "healthy": edge["healthy"],
            "last_error": edge.get("last_error"), "since": when(edge.get("last_change")),
            "purge_lag": lag.get(name), "hit_ratio": (stats or {}).get("hit_ratio"),
            "requests": (stats or {}).get("requests"),
        })  # fmt: skip
    if ctx.obj["json"]:
        emit_json({"edges": rows, "healthy": health["healthy"], "total": health["total"],
                   "purge_log": (purges or {}).get("backend"), "latest_purge": (purges or {}).get("latest_seq")})
    else:
        table = Table(title=f"{health['healthy']} of {health['total']} edges healthy")
        for column in ("region", "edge", "state", "since", "purge lag", "hit ratio", "requests", "last error"):
            table.add_column(column)
        for row in rows:
            ratio = row["hit_ratio"]
            table.add_row(
                row["region"], row["edge"], ("[green]" if row["healthy"] else "[red]") + row["state"], row["since"],
                "-" if row["purge_lag"] is None else str(row["purge_lag"]),
                "-" if ratio is None else f"{ratio:.1%}", "-" if row["requests"] is None else str(row["requests"]),
                row["last_error"] or "",
            )  # fmt: skip
        console.print(table)
    if health["healthy"] < health["total"]:
        sys.exit(EXIT_NOT_DONE)


@main.command()
@click.argument("urls", nargs=-1)
@click.option("--prefix", help="purge every URL under this one")
@click.option("--tag", "tags", multiple=True, help="purge objects with this surrogate key (repeatable)")
@click.option("--all", "everything", is_flag=True, help="purge everything")
@click.option("--site", help="limit a prefix, tags or --all to one site")
@click.option("--soft", is_flag=True, help="mark stale instead of deleting")
@click.option("--wait", "wait_s", type=float, default=None, is_flag=False, flag_value=30.0,
              help="wait until every healthy edge applied it (seconds, default 30)")  # fmt: skip
@click.pass_context
def purge(ctx: click.Context, urls: tuple[str, ...], prefix: str | None, tags: tuple[str, ...], everything: bool,
          site: str | None, soft: bool, wait_s: float | None) -> None:  # fmt: skip
    """Purge URLs, a prefix, tags or everything on every edge."""
    chosen = [bool(urls), prefix is not None, bool(tags), everything]
    if sum(chosen) != 1:
        raise click.UsageError("give URLs, or exactly one of --prefix, --tag, --all")
    body: dict[str, Any] = (
        {"urls": list(urls)} if urls else {"prefix": prefix} if prefix else {"tags": list(tags)} if tags
        else {"all": True}
    )  # fmt: skip
    body["soft"] = soft
    if site:
        body["site"] = site
    api: Api = ctx.obj["api"]
    answer = api.router("/purge", body=body)
    described = answer
    complete = answer.get("applied") == len(answer.get("edges", {}))
    if wait_s is not None:
        deadline = time.monotonic() + wait_s
        healthy = {name for name, edge in api.router("/health")["edges"].items() if edge["healthy"]}
        while True:
            described = api.router(f"/purges/{answer['id']}")
            pending = [name for name, edge in described["edges"].items()
                       if name in healthy and edge["status"] != "applied"]  # fmt: skip
            complete = not pending
            if complete or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
    if ctx.obj["json"]:
        emit_json(described)
    else:
        table = Table(title=f"purge {answer['id']} (seq {answer['seq']})" + (" — soft" if soft else ""))
        for column in ("edge", "status", "affected", "ms", "error"):
            table.add_column(column)
        for name, edge in sorted(described.get("edges", {}).items()):
            status_text = edge.get("status", "?")
            colour = "[green]" if status_text == "applied" else "[yellow]"
            table.add_row(name, colour + status_text, str(edge.get("affected", "") or ""),
                          str(edge.get("ms", "") or ""), edge.get("error") or "")  # fmt: skip
        console.print(table)
    if not complete:
        sys.exit(EXIT_NOT_DONE)


@main.command()
@click.argument("ip")
@click.option("--url", help="also the owners of this URL")
@click.pass_context
def route(ctx: click.Context, ip: str, url: str | None) -> None:
    """Where the router sends a client address, and why."""
    api: Api = ctx.obj["api"]
    query = {"ip": ip, **({"url": url} if url else {})}
    answer = api.router("/route?" + urllib.parse.urlencode(query))
    if ctx.obj["json"]:
        emit_json(answer)
        return
    decision, location = answer["decision"], answer["location"]
    console.print(f"[bold]{ip}[/] → [bold]{decision.get('edge') or 'no edge'}[/] ({decision.get('region')}, "
                  f"rule {decision.get('rule')}): {decision.get('reason')}", highlight=False)  # fmt: skip
    console.print(f"location: {location.get('city') or '-'}, {location.get('country') or '-'} "
                  f"({location.get('source')})", highlight=False)  # fmt: skip
    if url:
        console.print(f"owners of {url}: {', '.join(answer.get('owners') or []) or '-'}", highlight=False)


@main.command()
@click.argument("url")
@click.option("--ip", default="127.0.0.1", show_default=True, help="the client address to route")
@click.pass_context
def inspect(ctx: click.Context, url: str, ip: str) -> None:
    """A URL across the CDN: the router's pick, its owners, and what each edge holds."""
    api: Api = ctx.obj["api"]
    route_answer = api.router("/route?" + urllib.parse.urlencode({"ip": ip, "url": url}))
    health = api.router("/health")
    edges = []
    for name, edge in sorted(health["edges"].items()):
        held = api.edge(edge["admin_url"], "/cache?" + urllib.parse.urlencode({"url": url})) if edge.get(
            "admin_url") else None  # fmt: skip
        variants = (held or {}).get("variants", [])
        edges.append({"edge": name, "region": edge["region"], "healthy": edge["healthy"],
                      "reachable": held is not None, "variants": variants})  # fmt: skip
    result = {"url": url, "client": ip, "chosen": route_answer["decision"].get("edge"),
              "owners": route_answer.get("owners"), "edges": edges}  # fmt: skip
    if ctx.obj["json"]:
        emit_json(result)
        return
    console.print(f"[bold]{url}[/]: a client at {ip} is sent to [bold]{result['chosen'] or 'no edge'}[/]; "
                  f"owners {', '.join(result['owners'] or []) or '-'}", highlight=False)  # fmt: skip
    table = Table()
    for column in ("edge", "region", "cached", "tier", "age", "ttl", "size", "stored headers"):
        table.add_column(column)
    for edge in edges:
        if not edge["reachable"]:
            table.add_row(edge["edge"], edge["region"], "[yellow]unreachable", "", "", "", "", "")
            continue
        if not edge["variants"]:
            table.add_row(edge["edge"], edge["region"], "no", "", "", "", "", "")
        for variant in edge["variants"]:
            headers = ", ".join(f"{name}: {value}" for name, value in variant.get("headers", [])[:6])
            age, ttl = f"{variant.get('age', 0):.0f} s", f"{variant.get('ttl', 0):.0f} s"
            table.add_row(edge["edge"], edge["region"], "[green]yes", str(variant.get("tier", "")), age, ttl,
                          str(variant.get("size", "")), headers)  # fmt: skip
    console.print(table)


def _kind_of(data: dict[str, Any]) -> str:
    if "edges" in data and isinstance(data["edges"], list):
        return "inventory"
    if "edges" in data:  # a router names its inventory file
        return "router"
    return "edge"


@main.command("check-config")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--kind", type=click.Choice(["auto", "edge", "router", "inventory"]), default="auto")
@click.pass_context
def check_config(ctx: click.Context, files: tuple[Path, ...], kind: str) -> None:
    """Validate edge, router and inventory files (the kind is read from the file unless --kind)."""
    from edge.config import ConfigError, load_settings
    from edge.inventory import InventoryError, load_inventory
    from edge.router.config import load_router_settings

    results = []
    for path in files:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            results.append({"file": str(path), "kind": kind, "ok": False, "error": str(exc)})
            continue
        found = _kind_of(data) if kind == "auto" else kind
        try:
            if found == "inventory":
                inventory = load_inventory(path)
                summary = f"{len(inventory.edges)} edges"
            elif found == "router":
                router_settings = load_router_settings(path, environ={})
                summary = f"listen {router_settings.listen}, admin {router_settings.admin_listen}"
            else:
                edge_settings = load_settings(path, environ={})
                summary = f"{len(edge_settings.site_list())} site(s), listen {edge_settings.listen}"
            results.append({"file": str(path), "kind": found, "ok": True, "summary": summary})
        except (ConfigError, InventoryError, ValueError) as exc:
            results.append({"file": str(path), "kind": found, "ok": False, "error": str(exc)})
    if ctx.obj["json"]:
        emit_json(results)
    else:
        for item in results:
            if item["ok"]:
                console.print(f"[green]ok[/]    {item['file']} ({item['kind']}): {item['summary']}", highlight=False)
            else:
                console.print(f"[red]error[/] {item['file']} ({item['kind']}): {item['error']}", highlight=False)
    if not all(item["ok"] for item in results):
        sys.exit(EXIT_NOT_DONE)


if __name__ == "__main__":
    main()
