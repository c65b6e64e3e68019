"""The router's access log: one line per request, saying where the client was sent and why.

Two formats (``log_format``):

- ``json`` — one JSON object per line, for log pipelines::

    {"time": "2024-05-01T12:00:00.123Z", "client": "192.0.2.7", "source": "x-forwarded-for",
     "peer": "127.0.0.1", "method": "GET", "host": "cdn.example", "target": "/a?b", "status": 302,
     "edge": "eu-west-1", "region": "eu-west", "rule": "distance", "geo": "city", "country": "IE",
     "continent": "EU", "city": "Dublin", "zone": null, "reason": "...", "latency_us": 41}

- ``combined`` — Apache/nginx "combined" with the routing facts appended as ``key=value``, for
  tools that already read web-server logs::

    192.0.2.7 - - [01/May/2024:12:00:00 +0000] "GET /a?b HTTP/1.1" 302 123 "-" "curl/8.5.0" \
edge=eu-west-1 region=eu-west rule=distance src=xff geo=IE/EU/Dublin us=41

``python -m edge.router`` writes the lines to stderr (or ``access_log_file``) in batches
(``edge.accesslog.LineWriter``), formatted when written; in-process tests send them to the
``edge.router.access`` logger instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

from edge.accesslog import Clock, json_string
from edge.router.clientip import ClientAddress
from edge.router.coverage import CoverageZone
from edge.router.geo import GeoResult
from edge.router.select import Decision

__all__ = ["ACCESS_LOGGER", "AccessLogger", "AccessRecord"]

ACCESS_LOGGER = "edge.router.access"


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """The facts of one answered request."""

    peer: str | None
    client: ClientAddress
    location: GeoResult
    zone: CoverageZone | None
    decision: Decision
    method: str
    host: str
    target: str
    version: str
    status: int
    body_bytes: int
    referer: str | None
    user_agent: str | None
    latency_us: int
    client_text: str | None = None  # str(client.address), when the caller already has it (it is not free)


class AccessLogger:
    """Formats :class:`AccessRecord` s as ``json`` or ``combined`` lines."""

    def __init__(self, log_format: Literal["json", "combined"] = "json", logger: logging.Logger | None = None) -> None:
        self.format = log_format
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)
        self._clock = Clock()

    def log(self, record: AccessRecord) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        line = self.json_line(record) if self.format == "json" else self.combined_line(record)
        self.logger.info(line)

    def _stamps(self, when: float | None = None) -> tuple[str, str, int]:
        """ISO-8601 and CLF renderings of a second (cached: one strftime per second)."""
        now = time.time() if when is None else when
        self._clock.at(now)
        return self._clock.iso, self._clock.clf, int((now - int(now)) * 1000)

    def json_line(self, record: AccessRecord, when: float | None = None) -> str:
        iso, _, millis = self._stamps(when)
        decision, location = record.decision, record.location
        address = record.client.address
        client = record.client_text or (None if address is None else str(address))
        zone = record.zone
        return (
            f'{{"time":"{iso}.{millis:03d}Z","client":{json_string(client)},'
            f'"source":{json_string(record.client.source)},"peer":{json_string(record.peer)},'
            f'"method":{json_string(record.method)},"host":{json_string(record.host)},'
            f'"target":{json_string(record.target)},"status":{record.status},'
            f'"edge":{json_string(None if decision.edge is None else decision.edge.name)},'
            f'"region":{json_string(decision.region)},"rule":{json_string(decision.rule)},'
            f'"geo":{json_string(location.source)},"country":{json_string(location.country)},'
            f'"continent":{json_string(location.continent)},"city":{json_string(location.city)},'
            f'"zone":{json_string(None if zone is None else zone.label)},"reason":{json_string(decision.reason)},'
            f'"latency_us":{record.latency_us}}}'
        )

    def combined_line(self, record: AccessRecord, when: float | None = None) -> str:
        _, clf, _ = self._stamps(when)
        decision, location = record.decision, record.location
        client = record.client_text or ("-" if record.client.address is None else str(record.client.address))
        source = "xff" if record.client.source == "x-forwarded-for" else "peer"
        geo = "/".join(part or "-" for part in (location.country, location.continent, location.city))
        request_line = _quote(f"{record.method} {record.target} HTTP/{record.version}")
        parts = [
            f'{client} - - [{clf}] "{request_line}" {record.status} {record.body_bytes}',
            f'"{_quote(record.referer or "-")}" "{_quote(record.user_agent or "-")}"',
            f"edge={decision.edge.name if decision.edge is not None else '-'}",
            f"region={decision.region or '-'}",
            f"rule={decision.rule}",
            f"src={source}",
            f"geo={_quote(geo).replace(' ', '_')}",
        ]
        if record.zone is not None:
            parts.append(f"zone={_quote(record.zone.label).replace(' ', '_')}")
        parts.append(f"us={record.latency_us}")
        return " ".join(parts)


def _quote(text: str) -> str:
    """Escape what would break a quoted log field: backslash, quote and control characters."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    out: list[str] = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif not char.isprintable():
            out.append(char.encode("unicode_escape").decode("ascii"))
        else:
            out.append(char)
    return "".join(out)
