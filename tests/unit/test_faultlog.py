"""Refused requests in the log: the client's fault under ``edge.client`` whatever the status, shown
as the line the client sent (not its first word twice)."""

from __future__ import annotations

import logging

import pytest

from edge import faultlog


@pytest.mark.parametrize(
    ("line", "status", "expected"),
    [
        ("GARBAGE", 400, "refused GARBAGE from 192.0.2.7: 400 malformed request line"),
        ("GET / HTTP/9.9", 505, "refused GET / HTTP/9.9 from 192.0.2.7: 505 malformed request line"),
        ("", 400, "refused request from 192.0.2.7: 400 malformed request line"),
        ("GET /\x1b[31m HTTP/1.1", 400, "refused GET /\\x1b[31m HTTP/1.1 from 192.0.2.7: 400 malformed request line"),
    ],
)
def test_a_refused_request_is_one_client_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, line: str, status: int, expected: str
) -> None:
    monkeypatch.setattr(faultlog, "faults", faultlog.FaultLog())  # a fresh budget for each case
    with caplog.at_level(logging.INFO):
        faultlog.refused_request("192.0.2.7", line, status, "malformed request line")
    assert [(record.name, record.getMessage()) for record in caplog.records] == [("edge.client", expected)]
