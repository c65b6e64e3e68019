"""Pure origin-side policy: balancing (``edge.balance``), the health state machine
(``edge.health``), host → site matching (``edge.sites``) and the sites configuration."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from edge.balance import Balancer, Candidate, rendezvous_score
from edge.config import ConfigError, EdgeSettings, load_settings
from edge.health import Health, State, load_state, save_state
from edge.sites import matches, normalize_host

A, B, C = Candidate(0, "http://a", 2), Candidate(1, "http://b", 1), Candidate(2, "http://c", 1)


def test_round_robin_is_smooth_and_weighted() -> None:
    balancer = Balancer("round_robin", 3)
    picks = [balancer.pick([A, B, C]).ident[-1] for _ in range(8)]
    assert Counter(picks) == {"a": 4, "b": 2, "c": 2}
    assert "aa" not in "".join(picks[:4])  # interleaved, not in bursts
    assert picks[:4] == ["a", "b", "c", "a"]


def test_round_robin_over_a_shrinking_set_keeps_going() -> None:
    balancer = Balancer("round_robin", 3)
    assert {balancer.pick([B, C]).ident for _ in range(4)} == {"http://b", "http://c"}


@pytest.mark.parametrize(
    ("loads", "expected"),
    [
        ((0, 0, 0), {"http://a", "http://b", "http://c"}),  # ties: round robin over all
        ((4, 1, 3), {"http://b"}),
        ((2, 1, 1), {"http://a", "http://b", "http://c"}),  # 2/2 == 1/1: weight counts
        ((3, 1, 0), {"http://c"}),
    ],
)
def test_least_conn(loads: tuple[int, int, int], expected: set[str]) -> None:
    balancer = Balancer("least_conn", 3)
    candidates = [Candidate(o.index, o.ident, o.weight, load) for o, load in zip((A, B, C), loads, strict=True)]
    assert {balancer.pick(candidates).ident for _ in range(6)} == expected


def test_consistent_hash_moves_only_the_keys_of_a_lost_origin() -> None:
    balancer = Balancer("consistent_hash", 3)
    keys = [f"http://site/{index}" for index in range(3000)]
    before = {key: balancer.pick([A, B, C], key).ident for key in keys}
    after = {key: balancer.pick([A, C], key).ident for key in keys}
    moved = [key for key in keys if before[key] != after[key]]
    assert moved
    assert all(before[key] == "http://b" for key in moved)
    shares = Counter(before.values())
    assert 0.4 < shares["http://a"] / len(keys) < 0.6  # weight 2 of 4
    again = {key: balancer.pick([C, B, A], key).ident for key in keys[:200]}
    assert all(again[key] == before[key] for key in keys[:200])  # order does not matter


def test_random_two_prefers_the_less_loaded() -> None:
    balancer = Balancer("random_two", 3, random.Random(7))
    loaded = [Candidate(0, "http://a", 1, 10), Candidate(1, "http://b", 1, 0), Candidate(2, "http://c", 1, 10)]
    picks = Counter(balancer.pick(loaded).ident for _ in range(300))
    assert picks["http://b"] > 150
    assert picks["http://a"] + picks["http://c"] < 150


@given(st.text(max_size=30), st.integers(1, 100))
def test_rendezvous_score_is_positive(key: str, weight: int) -> None:
    assert rendezvous_score(key, "http://a", weight) > 0


# -- health -------------------------------------------------------------------------------------


def run(health: Health, events: str, start: float = 100.0) -> list[str]:
    """Feed ``events`` (f = failure, s = success, one per second); the state after each."""
    states = []
    for offset, event in enumerate(events):
        now = start + offset
        if event == "f":
            health.failure(now, "boom")
        else:
            health.success(now)
        states.append(health.state.value[0])
    return states


@pytest.mark.parametrize(
    ("events", "fall", "rise", "expected"),
    [
        ("fff", 3, 2, "uud"),
        ("ffsff", 3, 2, "uuuuu"),  # a success resets the count
        ("fffss", 3, 2, "uuddu"),
        ("fffsfs", 3, 2, "uudddd"),  # a failure while recovering starts over
        ("fs", 1, 1, "du"),
    ],
)
def test_health_state_machine(events: str, fall: int, rise: int, expected: str) -> None:
    assert "".join(run(Health(fall, rise, 5.0, active=True), events)) == expected


def test_without_active_checks_a_down_origin_gets_one_trial_after_interval() -> None:
    health = Health(1, 1, 5.0, active=False)
    health.failure(100.0, "refused")
    assert health.state is State.DOWN
    assert not health.usable(102.0)
    assert health.usable(105.0)
    health.begin(105.0)
    assert not health.usable(105.5)  # one trial at a time
    health.failure(106.0, "refused again")
    assert not health.usable(110.0)
    assert health.usable(111.0)
    health.begin(111.0)
    assert health.success(111.2)
    assert health.usable(111.3)


def test_with_active_checks_a_down_origin_gets_no_traffic() -> None:
    health = Health(1, 2, 1.0, active=True)
    health.failure(0.0, "x")
    assert not health.usable(1000.0)


def test_health_state_survives_in_its_file(tmp_path: Path) -> None:
    health = Health(1, 1, 3.0, active=True)
    health.failure(50.0, "refused")
    save_state(tmp_path, "shop", "http://a", health)
    fresh = Health(1, 1, 3.0, active=True)
    load_state(tmp_path, "shop", "http://a", fresh, 60.0)
    assert (fresh.state, fresh.since, fresh.last_error) == (State.DOWN, 50.0, "refused")
    other = Health(1, 1, 3.0, active=True)
    load_state(tmp_path, "blog", "http://a", other, 60.0)
    assert other.state is State.UP


# -- sites --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Shop.Example.COM", "shop.example.com"),
        ("shop.example.com:8080", "shop.example.com"),
        ("shop.example.com.", "shop.example.com"),
        ("[::1]:8080", "[::1]"),
        ("[::1]", "[::1]"),
        ("", ""),
    ],
)
def test_normalize_host(value: str, expected: str) -> None:
    assert normalize_host(value) == expected


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("*", "anything", True),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "badexample.com", False),
        ("shop.example.com", "shop.example.com", True),
        ("shop.example.com", "www.shop.example.com", False),
    ],
)
def test_host_patterns(pattern: str, host: str, expected: bool) -> None:
    assert matches(pattern, host) is expected


def settings(**data: Any) -> EdgeSettings:
    return EdgeSettings.model_validate({"cache_dir": "/tmp/x", **data})


def test_origin_is_a_default_site() -> None:
    sites = settings(origin="http://o:81").site_list()
    assert [(s.name, s.hosts, [o.url for o in s.origins], s.health.passive) for s in sites] == [
        ("default", ["*"], ["http://o:81"], False)
    ]


def test_sites_from_toml(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(
        """
[[sites]]
name = "shop"
hosts = ["Shop.Example.com", "*.shop.example.com"]
origins = [
  { url = "http://10.0.0.5:8000", weight = 2 },
  { url = "http://10.0.0.6:8000" },
  { url = "https://backup.example.net", backup = true },
]
balance = "consistent_hash"
health = { path = "/healthz", interval = 2.0, timeout = 1.0, fall = 3, rise = 2, expect = [200, 204] }
[sites.cache]
ignore_query = true
slice_size = 1048576

[[sites]]
name = "blog"
hosts = ["blog.example.com"]
origins = ["http://10.0.1.5"]
"""
    )
    loaded = load_settings(config, {}, environ={})
    shop, blog = loaded.site_list()
    assert shop.hosts == ["shop.example.com", "*.shop.example.com"]
    assert [(o.weight, o.backup) for o in shop.origins] == [(2, False), (1, False), (1, True)]
    assert (shop.balance, shop.health.expect, shop.cache.slice_size) == ("consistent_hash", [200, 204], 1048576)
    assert [o.url for o in blog.origins] == ["http://10.0.1.5"]


@pytest.mark.parametrize(
    ("data", "must_mention"),
    [
        ({}, ["origin"]),
        ({"sites": [{"name": "a", "hosts": ["x.com"], "origins": ["http://o"]},
                    {"name": "b", "hosts": ["X.com"], "origins": ["http://p"]}]}, ["x.com", "'a'", "'b'"]),
        ({"origin": "http://o", "sites": [{"name": "a", "hosts": ["*"], "origins": ["http://p"]}]},
         ["'*'", "'a'", "'default'"]),
        ({"sites": [{"name": "a", "hosts": ["x"], "origins": [{"url": "http://o", "backup": True}]}]},
         ["backup"]),
        ({"sites": [{"name": "Bad Name", "hosts": ["x"], "origins": ["http://o"]}]}, ["name"]),
        ({"sites": [{"name": "a", "hosts": ["x"], "origins": ["ftp://o"]}]}, ["http"]),
        ({"sites": [{"name": "a", "hosts": ["x"], "origins": ["http://o"], "balance": "fastest"}]}, ["balance"]),
        ({"sites": [{"name": "a", "hosts": ["x"], "origins": ["http://o"], "health": {"path": "healthz"}}]},
         ["path"]),
        ({"sites": [{"name": "a", "hosts": ["x"], "origins": []}]}, ["origins"]),
        ({"sites": [{"name": "a", "hosts": ["x.com:8080"], "origins": ["http://o"]}]}, ["port"]),
        ({"sites": [{"name": "a", "hosts": ["x"], "origins": ["http://user:pw@o"]}]}, ["credentials"]),
    ],
)  # fmt: skip
def test_bad_sites_are_refused_naming_the_problem(data: dict[str, Any], must_mention: list[str]) -> None:
    with pytest.raises(ValidationError) as caught:
        settings(**data)
    for fragment in must_mention:
        assert fragment in str(caught.value)


def test_config_error_names_both_sites(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text('[[sites]]\nname = "a"\nhosts = ["x.com"]\norigins = ["http://o"]\n'
                      '[[sites]]\nname = "b"\nhosts = ["x.com"]\norigins = ["http://p"]\n')  # fmt: skip
    with pytest.raises(ConfigError, match="claimed by two sites: 'a' and 'b'"):
        load_settings(config, {}, environ={})
