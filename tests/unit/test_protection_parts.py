"""The pure parts of protection: the GCRA bucket (table-driven over simulated time), signed URLs
(properties), connection counting, and the Forwarded header."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.connlimit import ConnectionTable
from edge.protection import canonical_path, limit_key
from edge.ratelimit import RateTable, key_hash
from edge.signedurl import check, sign_url, signature


@pytest.mark.parametrize(
    ("rate", "burst", "sent_per_s", "seconds", "accepted"),
    [
        (100, 200, 5000, 3.0, 200 + 1 + 300),  # a flood: the burst, then the rate
        (100, 200, 50, 3.0, 150),  # under the rate: everything
        (10, 0, 1000, 2.0, 1 + 20),  # no burst: one at once, then the rate
        (1, 5, 100, 10.0, 5 + 1 + 10),
    ],
)
def test_a_bucket_accepts_burst_plus_rate(rate: float, burst: int, sent_per_s: float, seconds: float,
                                          accepted: int) -> None:  # fmt: skip
    table = RateTable(None)
    count, now, step = 0, 1000.0, 1.0 / sent_per_s
    while now < 1000.0 + seconds - 1e-9:
        count += table.take("client", rate, burst, now) == 0.0
        now += step
    assert abs(count - accepted) <= max(2, accepted * 0.01), count


def test_a_refusal_says_how_long_to_wait_and_clients_are_independent() -> None:
    table = RateTable(None)
    assert [table.take("a", 1, 2, 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = table.take("a", 1, 2, 100.0)
    assert wait == pytest.approx(1.0)
    assert table.take("b", 1, 2, 100.0) == 0.0
    assert table.take("a", 1, 2, 101.0) == 0.0  # a second later: one more


@given(
    path=st.text(st.characters(codec="utf-8", exclude_characters="?#\x00"), min_size=1).map(lambda p: "/" + p),
    expires=st.integers(min_value=2_000_000_000, max_value=9_999_999_999),
    client=st.none() | st.ip_addresses().map(str),
)
def test_a_signed_url_verifies_and_any_change_breaks_it(path: str, expires: int, client: str | None) -> None:
    secret = "a-secret-of-sixteen"
    token = signature(secret, path, expires, client)
    query = f"expires={expires}&token={token}"
    assert check(secret, path, query, param="token", expires_param="expires", client=client) is None
    assert check(secret, path + "x", query, param="token", expires_param="expires", client=client) == "bad signature"
    later = f"expires={expires + 1}&token={token}"
    assert check(secret, path, later, param="token", expires_param="expires", client=client) == "bad signature"
    assert check("another-secret-123", path, query, param="token", expires_param="expires",
                 client=client) == "bad signature"  # fmt: skip


@pytest.mark.parametrize(
    ("query", "now", "problem"),
    [
        ("", 0, "missing signature"),
        ("expires=10", 0, "missing signature"),
        ("expires=ten&token=x", 0, "malformed expiry"),
        ("expires=10&token=x", 11, "link expired"),
        ("expires=10&token=x", 9, "bad signature"),
    ],
)
def test_signed_url_refusals(query: str, now: float, problem: str) -> None:
    assert check("s" * 16, "/a", query, param="token", expires_param="expires", client=None, now=now) == problem


def test_sign_url_keeps_the_query_and_adds_the_parameters() -> None:
    url = sign_url("https://cdn.example/v/a.mp4?q=1", "s" * 16, 2_000_000_000)
    assert url.startswith("https://cdn.example/v/a.mp4?q=1&expires=2000000000&token=")


def test_connections_are_counted_per_address_and_in_all() -> None:
    table = ConnectionTable(None)
    assert [table.admit("10.0.0.1", 2, 3) for _ in range(2)] == [None, None]
    assert table.admit("10.0.0.1", 2, 3) == "max_connections_per_ip"
    assert table.admit("10.0.0.2", 2, 3) is None
    assert table.admit("10.0.0.3", 2, 3) == "max_connections"
    table.release("10.0.0.1")
    assert table.admit("10.0.0.3", 2, 3) is None
    table.release("10.0.0.9")  # never admitted: nothing happens
    table.close()


def test_addresses_of_one_network_spread_over_the_whole_table() -> None:
    table = RateTable(None)
    buckets = {key_hash(f"10.0.{i // 256}.{i % 256}", table.salt) % table.buckets for i in range(16384)}
    assert len(buckets) > 0.95 * table.buckets  # 16,384 keys over 4,096 buckets: nearly all used


def test_a_full_bucket_gives_the_least_indebted_entry_to_a_new_client() -> None:
    table = RateTable(None, buckets=1)  # one bucket of 16 entries
    for index in range(16):
        assert table.take(f"c{index}", 1, 0, 100.0 + index * 0.001) == 0.0
    assert table.take("c0", 1, 0, 100.5) > 0  # still in debt, still refused
    assert table.take("newcomer", 1, 0, 100.5) == 0.0  # took c0's entry (the least in debt) …
    assert table.take("newcomer", 1, 0, 100.5) > 0  # … and is limited from its first request on
    assert table.table_full == 1


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ("/private/a", "/private/a"),
        ("/%70rivate/a", "/private/a"),
        ("//private//a", "/private/a"),
        ("/x/../private/./a", "/private/a"),
        ("/../private/a", "/private/a"),
        ("/private/", "/private/"),
        ("/priv%2Fate", "/priv%2Fate"),  # an encoded slash stays data
    ],
)
def test_canonical_paths(path: str, canonical: str) -> None:
    assert canonical_path(path) == canonical


@pytest.mark.parametrize(
    ("client", "key"),
    [("198.51.100.7", "198.51.100.7"), ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"), ("-", "-")],
)
def test_limits_count_an_ipv6_client_by_its_64(client: str, key: str) -> None:
    assert limit_key(client) == key
