"""Edge health hysteresis: the pure state machine, table-driven, and the checker's bookkeeping."""

from __future__ import annotations

import tomllib

import pytest

from edge.inventory import parse_inventory
from edge.router.health import HealthChecker, HealthState, _says_not_ready
from tests.unit.test_inventory import THREE_REGION_TOML

# Each row: (fall, rise, observations as "+"/"-", expected state after each observation).
# U = unknown, u = up, d = down.
TABLE = [
    # unknown → up on the very first success, so a fresh router is usable at once
    (3, 2, "+", "u"),
    (3, 2, "++", "uu"),
    # unknown → down only after `fall` failures in a row
    (3, 2, "---", "UUd"),
    (1, 2, "-", "d"),
    # unknown, a few failures, then one success: up (never having been shown down)
    (3, 2, "--+", "UUu"),
    # up → down after `fall` consecutive failures, not before
    (3, 2, "+--", "uuu"),
    (3, 2, "+---", "uuud"),
    # a success in between resets the failure streak
    (3, 2, "+--+--", "uuuuuu"),
    (3, 2, "+--+---", "uuuuuud"),
    # down → up after `rise` consecutive successes
    (2, 2, "+--+", "uudd"),
    (2, 2, "+--++", "uuddu"),
    (2, 3, "+--+++", "uudddu"),
    # a failure in between resets the success streak
    (2, 2, "+--+-++", "uuddddu"),
    # rise = 1: one success brings a down edge back
    (1, 1, "+-+-+", "ududu"),
    # staying down keeps counting
    (2, 2, "-----", "Udddd"),
]

LETTER = {"unknown": "U", "up": "u", "down": "d"}


@pytest.mark.parametrize(("fall", "rise", "observations", "expected"), TABLE)
def test_hysteresis_table(fall: int, rise: int, observations: str, expected: str) -> None:
    state = HealthState(fall=fall, rise=rise)
    seen = ""
    for symbol in observations:
        state = state.observe(symbol == "+")
        seen += LETTER[state.state]
    assert seen == expected


@pytest.mark.parametrize(
    ("observations", "ok", "fail"),
    [("", 0, 0), ("+", 1, 0), ("++-", 0, 1), ("--+", 1, 0), ("+-+-++", 2, 0), ("----", 0, 4)],
)
def test_consecutive_counters(observations: str, ok: int, fail: int) -> None:
    state = HealthState(fall=3, rise=2)
    for symbol in observations:
        state = state.observe(symbol == "+")
    assert (state.consecutive_ok, state.consecutive_fail) == (ok, fail)


def test_state_is_a_value() -> None:
    start = HealthState(fall=2, rise=2)
    after = start.observe(True)
    assert start.state == "unknown"  # observe() returns a new state, the old one is unchanged
    assert after.healthy
    assert not start.healthy
    assert HealthState(fall=2, rise=2, state="down").observe(False) == HealthState(2, 2, "down", 0, 1)


@pytest.mark.parametrize(("fall", "rise"), [(0, 1), (1, 0)])
def test_thresholds_must_be_positive(fall: int, rise: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        HealthState(fall=fall, rise=rise)


def checker(**kwargs: float) -> tuple[HealthChecker, list[float]]:
    inventory = parse_inventory(tomllib.loads(THREE_REGION_TOML))
    now = [1000.0]
    health = HealthChecker(inventory.edges, fall=2, rise=2, clock=lambda: now[0], **kwargs)  # type: ignore[arg-type]
    return health, now


def test_checker_starts_unknown_and_unhealthy() -> None:
    health, _ = checker()
    assert health.healthy_map() == dict.fromkeys(
        ["us-east-1", "us-east-2", "eu-west-1", "eu-west-2", "ap-southeast-1"], False
    )
    assert {state.state for state in health.snapshot().values()} == {"unknown"}


def test_checker_records_changes_errors_and_times() -> None:
    health, now = checker()
    now[0] = 1001.0
    health.record("eu-west-1", True, latency_ms=1.5)
    assert health.healthy_map()["eu-west-1"] is True
    snap = health.snapshot()["eu-west-1"]
    assert (snap.state, snap.last_change, snap.last_check, snap.checks, snap.last_latency_ms) == (
        "up", 1001.0, 1001.0, 1, 1.5,
    )  # fmt: skip

    now[0] = 1002.0
    health.record("eu-west-1", False, "HTTP 503 from /readyz")
    snap = health.snapshot()["eu-west-1"]
    assert snap.healthy
    assert snap.last_change == 1001.0
    assert snap.last_error == "HTTP 503 from /readyz"

    now[0] = 1003.0
    health.record("eu-west-1", False, "timeout after 1s")
    snap = health.snapshot()["eu-west-1"]
    assert (snap.state, snap.healthy, snap.last_change, snap.consecutive_fail) == ("down", False, 1003.0, 2)
    assert snap.last_error == "timeout after 1s"
    assert health.healthy_map()["eu-west-1"] is False

    now[0] = 1004.0
    health.record("eu-west-1", True)
    now[0] = 1005.0
    health.record("eu-west-1", True)
    snap = health.snapshot()["eu-west-1"]
    assert (snap.state, snap.last_change, snap.consecutive_ok) == ("up", 1005.0, 2)
    assert snap.last_error == "timeout after 1s"  # the last error stays visible after recovery

    assert [(c.edge, c.before, c.after, c.streak, c.error) for c in health.changes] == [
        ("eu-west-1", "unknown", "up", 1, None),
        ("eu-west-1", "up", "down", 2, "timeout after 1s"),
        ("eu-west-1", "down", "up", 2, None),
    ]


def test_healthy_map_is_a_copy() -> None:
    health, _ = checker()
    copy = health.healthy_map()
    copy["eu-west-1"] = True
    assert health.healthy_map()["eu-west-1"] is False


def test_disabled_edges_are_marked_and_never_healthy() -> None:
    data = tomllib.loads(THREE_REGION_TOML)
    data["edges"][0]["enabled"] = False
    health = HealthChecker(parse_inventory(data).edges)
    snap = health.snapshot()["us-east-1"]
    assert not snap.enabled
    assert not snap.healthy
    assert snap.last_error is not None
    assert "disabled" in snap.last_error


@pytest.mark.parametrize(("interval", "timeout"), [(0.0, 1.0), (1.0, 0.0), (-1.0, 1.0)])
def test_checker_rejects_nonpositive_timing(interval: float, timeout: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        checker(interval=interval, timeout=timeout)


@pytest.mark.parametrize(
    ("body", "not_ready"),
    [
        (b'{"ready": true}', False),
        (b'{"ready": false, "reason": "replaying purges"}', True),
        (b"", False),
        (b"OK", False),
        (b"[false]", False),
        (b'{"status": "ok"}', False),
    ],
)
def test_readiness_body(body: bytes, not_ready: bool) -> None:
    assert _says_not_ready(body) is not_ready
