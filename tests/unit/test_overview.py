"""The dashboard's rates between two samples of an edge's counters (``edge.overview``)."""

from __future__ import annotations

from typing import Any

import pytest

from edge.overview import rates

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
             "offload_bytes_per_s": 900.0, "p50_ms": 1.0, "p99_ms": 1.0, "errors_per_s": {"5xx": 0.2}},
        ),
        (  # the slow tail decides p99
            sample(0, 0, 0, 0, [0, 0, 0, 0]), sample(100, 0, 0, 0, [50, 48, 2, 0]),
            {"p50_ms": 1.0, "p99_ms": 100.0, "hit_ratio": 0.0},
        ),
        (  # nothing happened
            sample(5, 5, 5, 0, [5, 0, 0, 0]), sample(5, 5, 5, 0, [5, 0, 0, 0]),
            {"requests_per_s": 0.0, "hit_ratio": None, "p50_ms": None, "p99_ms": None},
        ),
        (  # the edge restarted: its counters began again
            sample(1000, 900, 0, 0, [1000, 0, 0, 0]), sample(10, 5, 0, 0, [10, 0, 0, 0]),
            {"requests_per_s": 1.0, "hit_ratio": 0.5, "p50_ms": 1.0},
        ),
    ],
)
def test_rates(before: dict[str, Any], after: dict[str, Any], expected: dict[str, Any]) -> None:
    got = rates((100.0, before), (110.0, after))
    for name, value in expected.items():
        assert got[name] == value, name
