"""The dashboard's figures (``edge.overview``): rates between two samples of an edge's counters,
latency percentiles as Prometheus computes them, and the whole CDN added up round by round."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from edge.overview import Sampler, encoded, json_bytes, parse_since, quantile, rates

BOUNDS = [0.001, 0.01, 0.1]


def sample(requests: int, hits: int, cached: int, fetched: int, buckets: list[int],
           classes: dict[str, int] | None = None) -> dict[str, Any]:  # fmt: skip
    return {"requests": requests, "hits": hits, "bytes_from_cache": cached, "bytes_from_origin": fetched,
            "by_code_class": classes or {}, "request_latency_bounds": BOUNDS, "request_latency_buckets": buckets}  # fmt: skip


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (  # 100 requests in 10 s, 90 hits; 99 under 1 ms, 1 under 100 ms
            sample(0, 0, 0, 0, [0, 0, 0, 0]), sample(100, 90, 9000, 1000, [99, 0, 1, 0], {"5xx": 2}),
            {"requests_per_s": 10.0, "hit_ratio": 0.9, "byte_hit_ratio": 0.9, "bandwidth_bps": 8000.0,
             "offload_bytes_per_s": 900.0, "p50_ms": 0.505, "p99_ms": 1.0, "errors_per_s": {"5xx": 0.2}},
        ),
        (  # the slow tail decides p99 (interpolated inside its bucket)
            sample(0, 0, 0, 0, [0, 0, 0, 0]), sample(100, 0, 0, 0, [50, 48, 2, 0]),
            {"p50_ms": 1.0, "p99_ms": 55.0, "hit_ratio": 0.0},
        ),
        (  # beyond the last bound: the highest finite bound ("at least"), not a blank
            sample(0, 0, 0, 0, [0, 0, 0, 0]), sample(100, 0, 0, 0, [90, 0, 0, 10]),
            {"p50_ms": 0.556, "p99_ms": 100.0},
        ),
        (  # nothing happened
            sample(5, 5, 5, 0, [5, 0, 0, 0]), sample(5, 5, 5, 0, [5, 0, 0, 0]),
            {"requests_per_s": 0.0, "hit_ratio": None, "p50_ms": None, "p99_ms": None},
        ),
        (  # the edge restarted: its counters began again
            sample(1000, 900, 0, 0, [1000, 0, 0, 0]), sample(10, 5, 0, 0, [10, 0, 0, 0]),
            {"requests_per_s": 1.0, "hit_ratio": 0.5, "p50_ms": 0.5},
        ),
    ],
)
def test_rates(before: dict[str, Any], after: dict[str, Any], expected: dict[str, Any]) -> None:
    got = rates((100.0, before), (110.0, after))
    for name, value in expected.items():
        assert got[name] == value, name


@pytest.mark.parametrize(
    ("q", "counts", "expected"),
    [
        (0.5, [0, 0, 0, 0], None),
        (0.5, [10, 0, 0, 0], 0.5),
        (0.99, [0, 0, 0, 5], 100.0),  # everything slower than the last bound
        (0.5, [0, 10, 0, 0], 5.5),  # halfway between 1 ms and 10 ms
        (1.0, [1, 1, 1, 0], 100.0),
    ],
)
def test_quantile_as_prometheus_computes_it(q: float, counts: list[float], expected: float | None) -> None:
    assert quantile(q, BOUNDS, counts) == expected


def counting(requests: int) -> dict[str, Any]:
    return sample(requests, requests, requests * 100, 0, [requests, 0, 0, 0])


async def no_fetch() -> dict[str, dict[str, Any] | None]:
    return {}


def test_an_edge_that_stops_answering_drops_out_of_the_total_at_once() -> None:
    sampler = Sampler(no_fetch, interval=5)
    for index in range(4):  # both edges serve 10 requests/s
        sampler.record(100.0 + 5 * index, {"a": counting(50 * index), "b": counting(50 * index)})
    assert sampler.total_series()[0]["requests_per_s"] == 20.0
    sampler.record(120.0, {"a": counting(200), "b": None})  # b is down; a goes on
    sampler.record(125.0, {"a": counting(200), "b": None})  # and now a is idle
    now, series = sampler.total_series()
    a_now = sampler.edge_series("a")[0]
    assert now is not None
    assert a_now is not None
    assert now["requests_per_s"] == a_now["requests_per_s"] == 8.0  # a's last minute; nothing of b's lingers
    assert [point["requests_per_s"] for _, point in series] == [20.0, 20.0, 20.0, 10.0, 0.0]
    assert sampler.edge_series("b")[0] is None  # b's own "now": unknown while it does not answer


def test_a_restarted_edge_counts_from_zero_without_a_spike_in_the_total() -> None:
    sampler = Sampler(no_fetch, interval=5)
    sampler.record(100.0, {"a": counting(10_000), "b": counting(500)})
    sampler.record(105.0, {"a": counting(10_050), "b": counting(550)})
    sampler.record(110.0, {"a": counting(10_100), "b": counting(20)})  # b restarted: 20 since
    _, series = sampler.total_series()
    assert [point["requests_per_s"] for _, point in series] == [20.0, 14.0]


def test_the_total_is_aligned_by_time_and_forgets_removed_edges() -> None:
    sampler = Sampler(no_fetch, interval=5)
    for index in range(3):
        sampler.record(100.0 + 5 * index, {"a": counting(50 * index)})
    sampler.record(115.0, {"a": counting(150), "c": counting(0)})  # c joins late
    sampler.record(120.0, {"a": counting(200), "c": counting(25)})
    _, series = sampler.total_series()
    assert len(series) == 4  # a's whole history, not cut to the newest edge's
    assert series[-1][1]["requests_per_s"] == 15.0
    sampler.record(125.0, {"a": counting(250)})  # c removed from the inventory
    assert "c" not in sampler.samples


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        ("", None),
        ("2026-12-02T14:05:00Z", "2026-12-02T14:05:00.000Z"),
        ("2026-12-02T14:05:00.5Z", "2026-12-02T14:05:00.500Z"),
        ("2026-12-02T14:05:00.250Z", "2026-12-02T14:05:00.250Z"),
    ],
)
def test_since_is_written_as_the_points_are(given: str | None, expected: str | None) -> None:
    assert parse_since(given) == expected


@pytest.mark.parametrize("given", ["yesterday", "2026-12-02 14:05:00", "2026-12-02T14:05:00+01:00", "1e9",
                                   "2026-12-02T14:05:00.1234Z"])  # fmt: skip
def test_since_refuses_what_is_not_a_utc_time(given: str) -> None:
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_since(given)


def test_rounds_within_one_second_are_not_skipped_by_since() -> None:
    """A short dashboard_interval puts several rounds in one second: a refresh asking for the
    points after its newest one gets each later round exactly once."""
    sampler = Sampler(no_fetch, interval=0.25)
    seen: list[str] = []
    for index in range(12):
        sampler.record(100.0 + 0.25 * index, {"a": counting(10 * index)})
        _, fresh = sampler.total_series(parse_since(seen[-1]) if seen else None)
        seen.extend(at for at, _ in fresh)
    assert len(seen) == len(set(seen)) == 11
    assert seen == sorted(seen)


BIG = json_bytes({"series": [[f"2026-12-02T14:{i // 60:02d}:{i % 60:02d}.000Z", {"requests_per_s": i * 1.5}]
                             for i in range(400)]})  # fmt: skip


@pytest.mark.parametrize(
    ("accept", "gzipped"),
    [
        ([], False),  # no Accept-Encoding: the bytes as they are (curl, urllib)
        (["gzip, deflate, br"], True),  # what browsers send
        (["br", "gzip;q=0.5"], True),
        (["GZIP"], True),
        (["*"], True),
        (["gzip;q=0"], False),  # refused outright (RFC 9110 §12.5.3)
        (["*;q=0"], False),
        (["identity;q=1, gzip;q=0.5"], False),  # prefers the bytes as they are
        (["deflate, br"], False),  # only gzip is offered
        (["gzip;q=bogus"], False),
    ],
)
def test_the_overview_is_gzipped_when_the_client_takes_it(accept: list[str], gzipped: bool) -> None:
    body, headers = encoded(BIG, accept)
    assert headers["Vary"] == "Accept-Encoding"
    assert headers["Content-Type"].startswith("application/json")
    assert ("Content-Encoding" in headers) is gzipped
    assert (gzip.decompress(body) if gzipped else body) == BIG


def test_a_small_overview_is_not_compressed() -> None:
    small = json_bytes({"edges": []})
    assert encoded(small, ["gzip"]) == (small, {"Content-Type": "application/json; charset=utf-8",
                                                "Vary": "Accept-Encoding", "Cache-Control": "no-store"})  # fmt: skip


def test_a_first_load_of_twenty_edges_shrinks_several_times() -> None:
    """The whole 15-minute history is what a first load carries: measured, not guessed."""
    sampler = Sampler(no_fetch, interval=5)
    names = [f"edge-{index:02d}" for index in range(20)]
    for index in range(181):
        sampler.record(100.0 + 5 * index, {name: counting(50 * index + offset) for offset, name in enumerate(names)})
    payload = {"edges": [{"name": name, "series": sampler.edge_series(name)[1]} for name in names],
               "total": {"series": sampler.total_series()[1]}}  # fmt: skip
    plain = json_bytes(payload)
    body, headers = encoded(plain, ["gzip, deflate, br"])
    assert headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(body)) == json.loads(json.dumps(payload))
    assert len(body) * 5 < len(plain), (len(plain), len(body))
