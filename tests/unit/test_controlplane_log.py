"""The cluster purge log (edge.controlplane.log): order, durability, retention, per-edge status.

No sockets: the log is a synchronous SQLite file; time is injected where retention depends on it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from edge.controlplane.log import ClusterPurgeLog, Delivery, LogLockedError, edge_status
from edge.controlplane.models import ControlPlaneSettings, PurgeRequest, StandaloneSettings, load_standalone_settings


def req(**body: Any) -> PurgeRequest:
    return PurgeRequest.model_validate(body)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- ordering ------------------------------------------------------------------------------------


def test_append_assigns_contiguous_sequences_and_unique_ids(tmp_path: Path) -> None:
    with ClusterPurgeLog(tmp_path) as log:
        assert (log.latest_seq, log.oldest_seq, log.pruned_through) == (0, None, 0)
        records = [log.append(req(urls=[f"http://example.com/{i}"])) for i in range(1, 6)]
        assert [record.seq for record in records] == [1, 2, 3, 4, 5]
        assert len({record.id for record in records}) == 5
        assert all(record.id.startswith(f"p-{record.seq}-") for record in records)
        assert (log.latest_seq, log.oldest_seq) == (5, 1)
        assert [r.seq for r in log.records_after(2)] == [3, 4, 5]
        assert [r.seq for r in log.records_after(0, limit=2)] == [1, 2]
        assert [r.seq for r in log.records_between(1, 3)] == [2, 3]
        assert [r.seq for r in log.recent(2)] == [5, 4]
        assert log.records_after(5) == []


@pytest.mark.parametrize(
    ("body", "kind", "values", "edge_body"),
    [
        ({"urls": ["http://a.test/x", "http://a.test/x", "http://a.test/y"]}, "urls",
         ("http://a.test/x", "http://a.test/y"), {"urls": ["http://a.test/x", "http://a.test/y"]}),
        ({"prefix": "https://a.test/img/"}, "prefix", ("https://a.test/img/",), {"prefix": "https://a.test/img/"}),
        ({"tags": ["t1", "t2"], "soft": True}, "tags", ("t1", "t2"), {"tags": ["t1", "t2"]}),
        ({"all": True}, "all", (), {"all": True}),
        ({"tags": ["t1"], "site": "blog"}, "tags", ("t1",), {"tags": ["t1"], "site": "blog"}),
        ({"all": True, "site": "shop"}, "all", (), {"all": True, "site": "shop"}),
    ],
)  # fmt: skip
def test_each_kind_round_trips_and_renders_the_edge_body(
    tmp_path: Path, body: dict[str, Any], kind: str, values: tuple[str, ...], edge_body: dict[str, Any]
) -> None:
    with ClusterPurgeLog(tmp_path) as log:
        record = log.append(req(**body))
        assert (record.kind, record.values, record.soft) == (kind, values, body.get("soft", False))
        assert log.get(record.id) == record
        assert log.get_seq(record.seq) == record
        assert record.edge_body() == {**edge_body, "soft": record.soft, "id": record.id, "cluster_seq": record.seq}
        assert record.site == body.get("site")
        as_json = record.to_json()
        assert as_json["values"] == list(values)
        assert as_json["body"] == record.edge_body()


# -- durability ----------------------------------------------------------------------------------


def test_records_progress_and_sequence_survive_reopening(tmp_path: Path) -> None:
    log = ClusterPurgeLog(tmp_path)
    first = log.append(req(tags=["a"]))
    second = log.append(req(all=True, soft=True))
    log.ensure_edges(["e1", "e2"])
    log.record_deliveries([Delivery(1, "e1", "applied", 3, None, 10.0, 1.5)], {"e1": 2})
    log_id = log.log_id
    log.close()

    with ClusterPurgeLog(tmp_path) as log:
        assert log.log_id == log_id
        assert log.records_after(0) == [first, second]
        assert log.edge_progress() == {"e1": 2, "e2": 2}
        assert log.append(req(all=True)).seq == 3
        assert log.statuses(1, ["e1"])["e1"].affected == 3


def test_the_database_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    with ClusterPurgeLog(tmp_path):
        conn = sqlite3.connect(tmp_path / "controlplane.sqlite")
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            conn.close()


def test_a_second_owner_of_the_state_directory_is_refused(tmp_path: Path) -> None:
    with ClusterPurgeLog(tmp_path), pytest.raises(LogLockedError, match="in use"):
        ClusterPurgeLog(tmp_path)
    ClusterPurgeLog(tmp_path).close()  # released on close


# -- retention -----------------------------------------------------------------------------------


def test_max_records_deletes_the_oldest_and_flags_truncation(tmp_path: Path) -> None:
    with ClusterPurgeLog(tmp_path, max_records=3) as log:
        for i in range(10):
            log.append(req(urls=[f"http://example.com/{i}"]))
        assert (log.latest_seq, log.oldest_seq, log.pruned_through) == (10, 8, 7)
        assert [r.seq for r in log.records_after(0)] == [8, 9, 10]
        assert log.get_seq(7) is None

        behind = log.page(after=5)
        assert behind.truncated  # 6 and 7 are gone: the edge must treat everything as purged
        assert [r.seq for r in behind.records] == [8, 9, 10]
        exactly = log.page(after=7)
        assert not exactly.truncated  # nothing it needs is missing
        assert [r.seq for r in exactly.records] == [8, 9, 10]
        assert not log.page(after=10).truncated
        assert log.page(after=10).records == []


def test_max_age_deletes_a_prefix_and_sequences_keep_counting(tmp_path: Path) -> None:
    clock = Clock()
    with ClusterPurgeLog(tmp_path, max_records=None, max_age=60.0, clock=clock) as log:
        log.append(req(all=True))  # t=0
        clock.now += 30
        log.append(req(all=True))  # t=30
        clock.now += 40
        assert log.prune() == 1  # t=70: the first is older than 60 s
        assert (log.oldest_seq, log.pruned_through) == (2, 1)
        clock.now += 1000
        assert log.prune() == 1
        assert (log.latest_seq, log.oldest_seq, log.pruned_through) == (2, None, 2)
        page = log.page(after=1)
        assert page.truncated
        assert page.records == []
        assert page.oldest_seq is None
        assert not log.page(after=2).truncated
        assert log.append(req(all=True)).seq == 3  # never reused, even with an empty table
    with ClusterPurgeLog(tmp_path) as log:
        assert (log.latest_seq, log.pruned_through, log.oldest_seq) == (3, 2, 3)


def test_paging_says_when_there_is_more(tmp_path: Path) -> None:
    with ClusterPurgeLog(tmp_path) as log:
        for _ in range(5):
            log.append(req(all=True))
        page = log.page(after=0, limit=2)
        assert ([r.seq for r in page.records], page.more, page.latest_seq) == ([1, 2], True, 5)
        page = log.page(after=4, limit=2)
        assert ([r.seq for r in page.records], page.more) == ([5], False)
        assert page.to_json()["log_id"] == log.log_id


def test_retention_drops_the_delivery_rows_of_deleted_records(tmp_path: Path) -> None:
    with ClusterPurgeLog(tmp_path, max_records=2) as log:
        for _ in range(2):
            log.append(req(all=True))
        log.record_deliveries([Delivery(1, "e1", "applied", 1, None, 1.0, 1.0)])
        log.append(req(all=True))
        assert log.deliveries(1, 3) == {}
        log.record_deliveries([Delivery(1, "e1", "applied", 1, None, 1.0, 1.0)])  # late row: dropped
        assert log.deliveries(1, 3) == {}


# -- per-edge status -----------------------------------------------------------------------------


def test_new_edges_start_at_the_latest_sequence_and_watermarks_only_rise(tmp_path: Path) -> None:
    with ClusterPurgeLog(tmp_path) as log:
        assert log.ensure_edges(["e1"]) == {"e1": 0}
        log.append(req(all=True))
        log.append(req(all=True))
        assert log.ensure_edges(["e1", "e2"]) == {"e1": 0, "e2": 2}
        log.record_deliveries([], {"e1": 2})
        log.record_deliveries([], {"e1": 1})
        assert log.edge_progress()["e1"] == 2


def test_statuses_applied_failed_rejected_pending(tmp_path: Path) -> None:
    with ClusterPurgeLog(tmp_path) as log:
        log.ensure_edges(["ok", "down", "late", "refuses", "confirmed"])
        record = log.append(req(urls=["http://example.com/a"]))
        log.record_deliveries(
            [
                Delivery(1, "ok", "applied", 2, None, 5.0, 1.25),
                Delivery(1, "down", "failed", None, "connection refused", 5.0, 0.5),
                Delivery(1, "refuses", "rejected", None, "HTTP 422", 5.0, 0.5),
                Delivery(1, "confirmed", "failed", None, "timed out", 5.0, 2000.0),
            ],
            {"ok": 1, "refuses": 1, "confirmed": 1},  # "confirmed": its /readyz reported cluster_seq 1 later
        )
        statuses = log.statuses(record.seq, ["ok", "down", "late", "refuses", "confirmed", "unknown"])
        assert statuses["ok"].to_json() == {
            "status": "applied", "affected": 2, "error": None, "at": 5.0, "at_iso": "1970-01-01T00:00:05Z", "ms": 1.25, "via": "push",
        }  # fmt: skip
        assert (statuses["down"].status, statuses["down"].error) == ("failed", "connection refused")
        assert statuses["late"].status == "pending"
        assert (statuses["refuses"].status, statuses["refuses"].error) == ("rejected", "HTTP 422")
        assert (statuses["confirmed"].status, statuses["confirmed"].via) == ("applied", "cluster_seq")
        assert statuses["unknown"].status == "pending"


def test_the_last_delivery_outcome_wins(tmp_path: Path) -> None:
    with ClusterPurgeLog(tmp_path) as log:
        log.ensure_edges(["e"])
        log.append(req(all=True))
        log.record_deliveries(
            [Delivery(1, "e", "failed", None, "boom", 1.0, 1.0), Delivery(1, "e", "applied", 0, None, 2.0, 1.0)],
            {"e": 1},
        )
        assert log.statuses(1, ["e"])["e"].status == "applied"
        assert edge_status(2, None, 1).status == "pending"


# -- request and settings validation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "exactly one"),
        ({"urls": ["http://a.test/"], "all": True}, "exactly one"),
        ({"all": False}, '"all" must be true'),
        ({"all": 1}, "all"),
        ({"all": True, "soft": "yes"}, "soft"),
        ({"urls": []}, "urls"),
        ({"urls": ["/relative"]}, "urls[0]"),
        ({"urls": ["http://a.test/", "mailto:x@y"]}, "urls[1]"),
        ({"prefix": "ftp://a.test/"}, "absolute"),
        ({"tags": ["with space"]}, "tags[0]"),
        ({"tags": [""]}, "tags[0]"),
        ({"all": True, "cluster_seq": 3}, "Extra"),
    ],
)
def test_bad_purge_requests_are_refused(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        PurgeRequest.model_validate(body)


def test_settings_defaults_and_standalone_loading(tmp_path: Path) -> None:
    settings = ControlPlaneSettings(state_dir=tmp_path)
    assert (settings.timeout, settings.retry_interval, settings.max_records, settings.max_age) == (
        2.0, 1.0, 100_000, None,
    )  # fmt: skip
    config = tmp_path / "cp.toml"
    config.write_text(f'state_dir = "{tmp_path}"\nedges = "inv.toml"\ntimeout = 5\n')
    loaded = load_standalone_settings(
        config, {"timeout": 0.5, "listen": None}, environ={"CONTROLPLANE_EDGE_TOKEN": "from-env"}
    )
    assert isinstance(loaded, StandaloneSettings)
    assert (loaded.timeout, loaded.edge_token, loaded.listen) == (0.5, "from-env", "127.0.0.1:8090")
    assert loaded.control_plane().edge_token == "from-env"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"timeout": 0}, "timeout"),
        ({"bogus": 1}, "bogus: unknown setting"),
        ({"listen": "0.0.0.0:8090"}, "admin_token: required"),
        ({"admin_token": "  "}, "admin_token"),
        ({"max_records": 0}, "max_records"),
    ],
)
def test_bad_settings_name_the_field(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    from edge.config import ConfigError

    base = {"state_dir": str(tmp_path), "edges": "inv.toml"}
    with pytest.raises(ConfigError, match=message):
        load_standalone_settings(None, {**base, **overrides}, environ={})


def test_a_site_name_must_be_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="site"):
        req(all=True, site="Not A Site")
