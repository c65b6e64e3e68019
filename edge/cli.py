"""edgecache: the operator's command for a running CDN (the router's admin API, and each edge's).

\b
  edgecache status                  health, purge lag, hit ratio by region
  edgecache purge URL… | --prefix P | --tag T… | --all
        [--site S] [--soft] [--wait [SECONDS]]   purge on every edge
  edgecache inspect URL [--ip IP]   the router's pick, the owners, and
                                    what each edge holds
  edgecache route IP [--url URL]    the router's decision for an address
  edgecache check-config FILE…      validate edge, router, inventory files

\b
The router's admin URL and token: --admin / EDGECACHE_ADMIN (a URL, HOST or
HOST:PORT) and --token / EDGECACHE_TOKEN.  The edges' admin token (status,
inspect): --edge-token / EDGECACHE_EDGE_TOKEN, default the same token.
--json, before or after the command, prints what the API answered (scripts).

\b
Exit codes: 0 done; 1 not done (an invalid file, a purge not applied
everywhere in time, an edge unhealthy for status); 2 usage (also what the
router refuses as given: 400/422); 3 the router cannot be reached; 4
unauthorised (401/403, the router's or an edge's).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import math
import os
import re
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
from click.core import ParameterSource
from rich.console import Console
from rich.table import Table

from edge.version import package_version

__all__ = ["main"]

EXIT_NOT_DONE, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_UNAUTHORISED = 1, 2, 3, 4
DEFAULT_ADMIN = "http://127.0.0.1:8081"
DEFAULT_ADMIN_PORT = urllib.parse.urlsplit(DEFAULT_ADMIN).port
DEFAULT_WAIT = 30.0

# Piped into a file or another program, the output is not squeezed into 80 columns (edge names
# cut to "eu-wes…", messages broken mid-word): tables get room, plain lines are not wrapped.
KEEP_WHOLE = frozenset({"region", "edge", "state", "status"})  # never "eu-wes…": names identify
_PIPED_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200
console = Console(width=_PIPED_WIDTH, soft_wrap=_PIPED_WIDTH is not None)
errors = Console(stderr=True, soft_wrap=True)


class ApiError(Exception):
    """A failed request: the exit code it means; the hint depends on whom we asked (router or edge)."""

    def __init__(self, code: int, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.code, self.reason = code, reason


class Api:
    """The admin APIs, with the errors an operator can act on."""

    def __init__(self, admin: str, token: str | None, edge_token: str | None, timeout: float) -> None:
        self.admin = admin.rstrip("/")
        self.token = token
        self.edge_token = edge_token if edge_token is not None else token
        self.timeout = timeout
        self.edge_failures: dict[str, ApiError] = {}  # by edge name: what an edge's admin API answered instead

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
                text = response.read()
        except urllib.error.HTTPError as exc:
            text = exc.read()
            if exc.code in allow:
                return _json(url, text)
            if exc.code in (401, 403):
                raise ApiError(EXIT_UNAUTHORISED, url, f"{exc.code} unauthorised") from None
            said = text.decode("utf-8", "replace")
            try:
                detail = json.loads(said).get("error", said)
            except (ValueError, AttributeError):
                detail = said.strip()[:300]
            # 400/422: what was asked cannot be done as given (an address, a URL, a purge body): usage
            code = EXIT_USAGE if exc.code in (400, 422) else EXIT_NOT_DONE
            raise ApiError(code, url, f"HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ApiError(EXIT_UNREACHABLE, url, f"unreachable ({reason})") from None
        return _json(url, text)

    def router(self, path: str, **kwargs: Any) -> Any:
        """The router's admin API; a failure ends the command with its exit code."""
        try:
            return self.call(self.admin + path, token=self.token, **kwargs)
        except ApiError as exc:
            hint = {EXIT_UNAUTHORISED: " — give the admin token with --token or EDGECACHE_TOKEN",
                    EXIT_UNREACHABLE: " — is the router running? (--admin, EDGECACHE_ADMIN)"}  # fmt: skip
            fail(exc.code, f"{exc}{hint.get(exc.code, '')}")

    def edge(self, name: str, admin_url: str, path: str) -> Any:
        """An edge's admin API; None when it cannot be asked: the rest is still worth showing, and
        refusals are reported (exit 4) once everything is shown, by :func:`exit_if_edges_refused`."""
        try:
            return self.call(admin_url.rstrip("/") + path, token=self.edge_token)
        except ApiError as exc:
            self.edge_failures[name] = exc
            if exc.code != EXIT_UNAUTHORISED:
                errors.print(f"[yellow]warning:[/] edge {name}: {exc}", highlight=False)
            return None


def _json(url: str, text: bytes) -> Any:
    try:
        return json.loads(text or b"null")
    except ValueError:
        raise ApiError(EXIT_NOT_DONE, url, f"not JSON — is this an admin API? ({text[:80]!r})") from None


def exit_if_edges_refused(api: Api) -> None:
    """Exit 4 when an edge refused the edge token: its data is missing, and only the operator can fix that."""
    refused = sorted(name for name, exc in api.edge_failures.items() if exc.code == EXIT_UNAUTHORISED)
    if not refused:
        return
    for name in refused:
        errors.print(f"[bold red]error:[/] edge {name}: {api.edge_failures[name]}", highlight=False)
    given = "" if api.edge_token else " (none was given)"
    fail(EXIT_UNAUTHORISED, f"edge{'s' if len(refused) > 1 else ''} {', '.join(refused)} refused the edge token"
                            f"{given} — give the edges' admin token with --edge-token or EDGECACHE_EDGE_TOKEN "
                            "(default: --token / EDGECACHE_TOKEN)")  # fmt: skip


def admin_address(value: str) -> str:
    """The router's admin URL from what people type (a URL, ``HOST`` or ``HOST:PORT``, like
    ``EDGECACHE_ADMIN=localhost``); ValueError says what is wrong, so it is a usage error, not a traceback."""
    text = value.strip()
    bare = "://" not in text
    if bare and text.count(":") > 1 and not text.startswith("["):
        text = f"[{text}]"  # a bare IPv6 address
    parts = urllib.parse.urlsplit(f"http://{text}" if bare else text)
    expected = "a URL (http://HOST:PORT), HOST or HOST:PORT"
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{value!r} is not an http(s) URL; give {expected}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"{value!r}: the port is not a number from 1 to 65535")
    host = parts.hostname or ""
    if not (re.fullmatch(r"[\w.-]+", host, re.ASCII) or _is_ip(host)):
        raise ValueError(f"{value!r} has no valid host name; give {expected}")
    if parts.username is not None or parts.query or parts.fragment:
        raise ValueError(f"{value!r}: give {expected}, without user, query or fragment (the token: --token)")
    if port is None and bare:
        parts = parts._replace(netloc=f"[{host}]:{DEFAULT_ADMIN_PORT}" if ":" in host
                               else f"{host}:{DEFAULT_ADMIN_PORT}")  # fmt: skip
    return urllib.parse.urlunsplit(parts).rstrip("/")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _admin_option(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return admin_address(value)
    except ValueError as exc:
        from_env = param.name is not None and ctx.get_parameter_source(param.name) is ParameterSource.ENVIRONMENT
        hint = "EDGECACHE_ADMIN (in the environment)" if from_env else "'--admin'"
        raise click.BadParameter(str(exc), ctx=ctx, param=param, param_hint=hint) from None


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


def _json_after_command(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--json`` after the command too (``edgecache status --json``): people add it at the end."""
    if value and isinstance(ctx.obj, dict):
        ctx.obj["json"] = True


json_option = click.option("--json", "as_json", is_flag=True, expose_value=False, callback=_json_after_command,
                           help="print the API's JSON (for scripts)")  # fmt: skip


@click.group(help=__doc__, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_version(), prog_name="edgecache")
@click.option("--admin", envvar="EDGECACHE_ADMIN", default=DEFAULT_ADMIN, show_default=True,
              callback=_admin_option, help="the router's admin URL: a URL, HOST or HOST:PORT (http, port "
              f"{DEFAULT_ADMIN_PORT})")  # fmt: skip
@click.option("--token", envvar="EDGECACHE_TOKEN", help="the router's admin token")
@click.option("--edge-token", envvar="EDGECACHE_EDGE_TOKEN", help="the edges' admin token (default: --token)")
@click.option("--timeout", type=float, default=10.0, show_default=True, callback=lambda ctx, param, value: _seconds(
    value, "--timeout"), help="seconds per request (more than 0)")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON (for scripts)")
@click.pass_context
def main(ctx: click.Context, admin: str, token: str | None, edge_token: str | None, timeout: float,
         as_json: bool) -> None:  # fmt: skip
    ctx.obj = {"api": Api(admin, token, edge_token, timeout), "json": as_json}


@main.command()
@json_option
@click.pass_context
def status(ctx: click.Context) -> None:
    """Edges by region: health, purge lag, hit ratio."""
    api: Api = ctx.obj["api"]
    health = api.router("/health")
    purges = api.router("/purges", allow=(503,))
    lag = {name: item.get("lag") for name, item in (purges or {}).get("edges", {}).items()}
    rows = []
    for name, edge in sorted(health["edges"].items(), key=lambda item: (item[1]["region"], item[0])):
        stats = api.edge(name, edge["admin_url"], "/stats") if edge.get("admin_url") and edge["healthy"] else None
        failure = api.edge_failures.get(name)
        rows.append({
            "edge": name, "region": edge["region"], "state": edge["state"], "healthy": edge["healthy"],
            "last_error": edge.get("last_error"), "since": when(edge.get("last_change")),
            "purge_lag": lag.get(name), "hit_ratio": (stats or {}).get("hit_ratio"),
            "requests": (stats or {}).get("requests"), "stats_error": failure.reason if failure else None,
        })  # fmt: skip
    if ctx.obj["json"]:
        emit_json({"edges": rows, "healthy": health["healthy"], "total": health["total"],
                   "purge_log": (purges or {}).get("backend"), "latest_purge": (purges or {}).get("latest_seq")})
    else:
        table = Table(title=f"{health['healthy']} of {health['total']} edges healthy")
        for column in ("region", "edge", "state", "since", "purge lag", "hit ratio", "requests", "last error"):
            table.add_column(column, no_wrap=column in KEEP_WHOLE)
        for row in rows:
            ratio = row["hit_ratio"]
            table.add_row(
                row["region"], row["edge"], ("[green]" if row["healthy"] else "[red]") + row["state"], row["since"],
                "-" if row["purge_lag"] is None else str(row["purge_lag"]),
                "-" if ratio is None else f"{ratio:.1%}", "-" if row["requests"] is None else str(row["requests"]),
                row["last_error"] or "",
            )  # fmt: skip
        console.print(table)
    exit_if_edges_refused(api)
    if any(edge.get("enabled", True) and not edge["healthy"] for edge in health["edges"].values()):
        sys.exit(EXIT_NOT_DONE)  # an edge disabled in the inventory is not checked: not unhealthy


def _seconds(value: float, option: str) -> float:
    """A finite number of seconds above 0 (``nan``, ``-1`` and ``0`` are usage errors)."""
    if not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"{value:g} is not a number of seconds above 0", param_hint=f"'{option}'")
    return value


def _is_seconds(text: str) -> bool:
    """A finite, non-negative number (``10``, ``2.5``, ``1e1``): a URL or a flag never is."""
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value >= 0


class PurgeCommand(click.Command):
    """``purge`` with ``--wait [SECONDS]``: click's optional-value options take the next token whatever it
    is (``--wait URL`` failed), so ``--wait`` is a flag and a number right after it (``--wait 10``,
    ``--wait=10``) is rewritten to ``--wait --wait-timeout 10`` before click parses; anything else is left alone."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value = {name for param in self.params if isinstance(param, click.Option) and not param.is_flag
                       and not param.count for name in param.opts}  # fmt: skip
        rewritten: list[str] = []
        position = 0
        while position < len(args):
            token = args[position]
            following = args[position + 1] if position + 1 < len(args) else None
            if token == "--":
                rewritten.extend(args[position:])
                break
            if token in takes_value:  # its value is not ours to look at (a tag named "10")
                rewritten.extend(args[position:position + 2])
                position += 2
                continue
            if token.startswith("--wait="):
                seconds = token.partition("=")[2]
                if not _is_seconds(seconds):
                    raise click.BadParameter(f"{seconds!r} is not a number of seconds", ctx=ctx, param_hint="'--wait'")
                rewritten.extend(["--wait", "--wait-timeout", seconds])
            elif token == "--wait" and following is not None and _is_seconds(following):
                rewritten.extend(["--wait", "--wait-timeout", following])
                position += 1
            else:
                rewritten.append(token)
            position += 1
        return super().parse_args(ctx, rewritten)


@main.command(cls=PurgeCommand)
@click.argument("urls", nargs=-1)
@click.option("--prefix", help="purge every URL under this one")
@click.option("--tag", "tags", multiple=True, help="purge objects with this surrogate key (repeatable)")
@click.option("--all", "everything", is_flag=True, help="purge everything")
@click.option("--site", help="limit a prefix, tags or --all to one site")
@click.option("--soft", is_flag=True, help="mark stale instead of deleting")
@click.option("--wait", is_flag=True, help="wait until every healthy edge applied it (--wait SECONDS: the same as "
              "--wait --wait-timeout SECONDS)")  # fmt: skip
@click.option("--wait-timeout", "wait_timeout", type=float, metavar="SECONDS",
              help=f"wait this long at most (implies --wait)  [default: {DEFAULT_WAIT:g}]")  # fmt: skip
@json_option
@click.pass_context
def purge(ctx: click.Context, urls: tuple[str, ...], prefix: str | None, tags: tuple[str, ...], everything: bool,
          site: str | None, soft: bool, wait: bool, wait_timeout: float | None) -> None:  # fmt: skip
    """Purge URLs, a prefix, tags or everything on every edge.

    \b
      edgecache purge URL… [--wait]
      edgecache purge --wait URL…
      edgecache purge --prefix P [--site S] [--soft]
      edgecache purge --tag T… [--site S] --wait 10
      edgecache purge --all --wait=10

    Exit 1 when --wait ran out before every healthy edge applied it.
    """
    chosen = [bool(urls), prefix is not None, bool(tags), everything]
    if sum(chosen) != 1:
        raise click.UsageError("give URLs, or exactly one of --prefix, --tag, --all")
    if prefix is not None and not prefix.strip():  # "$UNSET" must never mean everything
        raise click.BadParameter("an empty prefix names nothing (to purge everything: --all)", ctx=ctx,
                                 param_hint="'--prefix'")  # fmt: skip
    body: dict[str, Any] = (
        {"urls": list(urls)} if urls else {"prefix": prefix} if prefix is not None
        else {"tags": list(tags)} if tags else {"all": True}
    )  # fmt: skip
    if wait_timeout is not None and not (math.isfinite(wait_timeout) and wait_timeout >= 0):
        raise click.BadParameter(f"{wait_timeout:g} is not a number of seconds (negative or not finite)", ctx=ctx,
                                 param_hint="'--wait-timeout'")  # fmt: skip
    if wait_timeout is not None:
        wait = True  # --wait-timeout 10 says it: wait, this long at most
    wait_s = (DEFAULT_WAIT if wait_timeout is None else wait_timeout) if wait else None
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
            complete = bool(healthy) and not pending  # no healthy edge applied it: not done
            if complete or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
    if ctx.obj["json"]:
        emit_json(described)
    else:
        table = Table(title=f"purge {answer['id']} (seq {answer['seq']})" + (" — soft" if soft else ""))
        for column in ("edge", "status", "affected", "ms", "error"):
            table.add_column(column, no_wrap=column in KEEP_WHOLE)
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
@json_option
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
@json_option
@click.pass_context
def inspect(ctx: click.Context, url: str, ip: str) -> None:
    """A URL across the CDN: the router's pick, its owners, and what each edge holds."""
    api: Api = ctx.obj["api"]
    route_answer = api.router("/route?" + urllib.parse.urlencode({"ip": ip, "url": url}))
    health = api.router("/health")
    edges = []
    for name, edge in sorted(health["edges"].items()):
        held = api.edge(name, edge["admin_url"], "/cache?" + urllib.parse.urlencode({"url": url})) if edge.get(
            "admin_url") else None  # fmt: skip
        variants = (held or {}).get("variants", [])
        failure = api.edge_failures.get(name)
        edges.append({"edge": name, "region": edge["region"], "healthy": edge["healthy"],
                      "reachable": held is not None, "variants": variants,
                      "error": failure.reason if failure else None})  # fmt: skip
    result = {"url": url, "client": ip, "chosen": route_answer["decision"].get("edge"),
              "owners": route_answer.get("owners"), "edges": edges}  # fmt: skip
    if ctx.obj["json"]:
        emit_json(result)
        exit_if_edges_refused(api)
        return
    console.print(f"[bold]{url}[/]: a client at {ip} is sent to [bold]{result['chosen'] or 'no edge'}[/]; "
                  f"owners {', '.join(result['owners'] or []) or '-'}", highlight=False)  # fmt: skip
    table = Table()
    for column in ("edge", "region", "cached", "tier", "age", "ttl", "size", "stored headers"):
        table.add_column(column, no_wrap=column in KEEP_WHOLE)
    for edge in edges:
        if not edge["reachable"]:
            refused = edge["error"] and api.edge_failures[edge["edge"]].code == EXIT_UNAUTHORISED
            table.add_row(edge["edge"], edge["region"], "[red]unauthorised" if refused else "[yellow]unreachable",
                          "", "", "", "", "")  # fmt: skip
            continue
        if not edge["variants"]:
            table.add_row(edge["edge"], edge["region"], "no", "", "", "", "", "")
        for variant in edge["variants"]:
            headers = ", ".join(f"{name}: {value}" for name, value in variant.get("headers", [])[:6])
            age, ttl = f"{variant.get('age', 0):.0f} s", f"{variant.get('ttl', 0):.0f} s"
            table.add_row(edge["edge"], edge["region"], "[green]yes", str(variant.get("tier", "")), age, ttl,
                          str(variant.get("size", "")), headers)  # fmt: skip
    console.print(table)
    exit_if_edges_refused(api)


def _kind_of(data: dict[str, Any]) -> str:
    if "edges" in data and isinstance(data["edges"], list):
        return "inventory"
    if "edges" in data:  # a router names its inventory file
        return "router"
    return "edge"


@main.command("check-config")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--kind", type=click.Choice(["auto", "edge", "router", "inventory"]), default="auto")
@click.option("--offline", is_flag=True, help="check each file alone, not the inventory, geo database and coverage "
              "files a router file names (configs checked away from their host)")  # fmt: skip
@json_option
@click.pass_context
def check_config(ctx: click.Context, files: tuple[Path, ...], kind: str, offline: bool) -> None:
    """Validate edge, router and inventory files (the kind is read from the file unless --kind); a
    router file's inventory, geo database and coverage file are opened too, as the router does,
    unless --offline."""
    from edge.config import ConfigError, load_settings
    from edge.inventory import InventoryError, load_inventory
    from edge.router.app import open_router_parts
    from edge.router.config import load_router_settings

    results = []
    for path in files:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            results.append({"file": str(path), "kind": kind, "ok": False, "error": str(exc)})
            continue
        found = _kind_of(data) if kind == "auto" else kind
        try:
            if found == "inventory":
                inventory = load_inventory(path)
                summary = f"{len(inventory.edges)} edges"
            elif found == "router":  # the files it names too (inventory, geodb, coverage), as the router does
                router_settings = load_router_settings(path, environ={})
                summary = f"listen {router_settings.listen}, admin {router_settings.admin_listen}"
                if not offline:
                    parts = open_router_parts(router_settings)
                    parts.locator.close()
                    summary += f", {len(parts.inventory.edges)} edges"
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
