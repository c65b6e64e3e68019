"""HTTP-date parsing/formatting: RFC 9110 §5.6.7 and the cache rules of RFC 9111 §4.2."""

from __future__ import annotations

import calendar
import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.http.dates import format_http_date, parse_http_date

SUN_06_NOV_1994 = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT, the RFC's example


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


NOW_2025 = ts(2025, 6, 1)
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", SUN_06_NOV_1994, id="9110-5.6.7-imf-fixdate"),
        pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", SUN_06_NOV_1994, id="9110-5.6.7-rfc850"),
        pytest.param("Sun Nov  6 08:49:37 1994", SUN_06_NOV_1994, id="9110-5.6.7-asctime"),
        pytest.param("Sun Nov 06 08:49:37 1994", SUN_06_NOV_1994, id="9110-5.6.7-asctime-2digit-day"),
        pytest.param("sun, 06 nov 1994 08:49:37 gmt", SUN_06_NOV_1994, id="9111-4.2-case-insensitive"),
        pytest.param("SUNDAY, 06-NOV-94 08:49:37 GMT", SUN_06_NOV_1994, id="9111-4.2-case-insensitive-850"),
        pytest.param("  Sun, 06 Nov 1994 08:49:37 GMT\t", SUN_06_NOV_1994, id="9110-5.6.7-surrounding-ws"),
        pytest.param("Thu, 01 Jan 1970 00:00:00 GMT", 0.0, id="9110-5.6.7-epoch"),
        pytest.param("Wed, 31 Dec 1969 23:59:59 GMT", -1.0, id="9110-5.6.7-before-epoch"),
        pytest.param("Thu, 29 Feb 2024 12:00:00 GMT", ts(2024, 2, 29, 12), id="9110-5.6.7-leap-day"),
        pytest.param("Fri, 31 Dec 9999 23:59:59 GMT", ts(9999, 12, 31, 23, 59, 59), id="9110-5.6.7-max"),
        pytest.param(
            "Sat, 31 Dec 2016 23:59:60 GMT", ts(2016, 12, 31, 23, 59, 59), id="9111-4.2-leap-second-earlier"
        ),
        # The day name is checked to be one, not cross-checked against the date.
        pytest.param("Mon, 06 Nov 1994 08:49:37 GMT", SUN_06_NOV_1994, id="9110-5.6.7-wrong-weekday-ok"),
    ],
)
def test_parse_valid(value: str, expected: float) -> None:
    assert parse_http_date(value, now=NOW_2025) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("0", id="9111-5.3-zero"),
        pytest.param("-1", id="9111-5.3-minus-one"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("tomorrow", id="word"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 UTC", id="9111-4.2-zone-utc"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 +0000", id="9111-4.2-zone-numeric"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 EST", id="9111-4.2-zone-est"),
        pytest.param("Sun, 06 Nov 1994 08:49:37", id="no-zone"),
        pytest.param("Sun Nov  6 08:49:37 1994 GMT", id="asctime-with-zone"),
        pytest.param("Sun, 06 Nov 94 08:49:37 GMT", id="imf-2digit-year"),
        pytest.param("Sun, 32 Nov 1994 08:49:37 GMT", id="day-32"),
        pytest.param("Sun, 00 Nov 1994 08:49:37 GMT", id="day-0"),
        pytest.param("Thu, 29 Feb 2023 12:00:00 GMT", id="feb-29-non-leap"),
        pytest.param("Sun, 06 Foo 1994 08:49:37 GMT", id="bad-month"),
        pytest.param("Xyz, 06 Nov 1994 08:49:37 GMT", id="bad-day-name"),
        pytest.param("Sun, 06 Nov 1994 24:00:00 GMT", id="hour-24"),
        pytest.param("Sun, 06 Nov 1994 08:60:00 GMT", id="minute-60"),
        pytest.param("Sun, 06 Nov 1994 08:49:61 GMT", id="second-61"),
        pytest.param("Sun, 06 Nov 1994 8:49:37 GMT", id="1digit-hour"),
        pytest.param("Sun, 06 Nov 0000 08:49:37 GMT", id="year-0"),
        pytest.param("Sun, \u0660\u0666 Nov 1994 08:49:37 GMT", id="non-ascii-digits"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT", id="list"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMTX", id="trailing-garbage"),
        pytest.param("1994-11-06T08:49:37Z", id="iso8601"),
        # RFC 9110 §5.6.7 allows exactly three formats: no extra spaces, no other digit counts.
        pytest.param("Thu, 18  Aug  2050 02:01:18 GMT", id="9110-5.6.7-double-spaces"),
        pytest.param("Thu, 18-Aug-2050 02:01:18 GMT", id="9110-5.6.7-dashes-4digit-year"),
        pytest.param("Sun,  06 Nov 1994 08:49:37 GMT", id="9110-5.6.7-two-spaces-after-comma"),
        pytest.param("Sun, 06 Nov 1994 08:49:37  GMT", id="9110-5.6.7-two-spaces-before-gmt"),
        pytest.param("Sun,06 Nov 1994 08:49:37 GMT", id="9110-5.6.7-no-space-after-comma"),
        pytest.param("Sun, 6 Nov 1994 08:49:37 GMT", id="9110-5.6.7-1digit-day"),
        pytest.param("Sun, 06-Nov-94 08:49:37 GMT", id="9110-5.6.7-850-short-day-name"),
        pytest.param("Sunday, 06 Nov 1994 08:49:37 GMT", id="9110-5.6.7-imf-long-day-name"),
        pytest.param("Sunday, 6-Nov-94 08:49:37 GMT", id="9110-5.6.7-850-1digit-day"),
        pytest.param("Sun Nov 6 08:49:37 1994", id="9110-5.6.7-asctime-one-space-1digit"),
        pytest.param("Sun\tNov  6 08:49:37 1994", id="9110-5.6.7-tab-for-sp"),
        pytest.param("Sunday Nov  6 08:49:37 1994", id="9110-5.6.7-asctime-long-day-name"),
    ],
)
def test_parse_invalid_is_none(value: str) -> None:
    assert parse_http_date(value, now=NOW_2025) is None


@pytest.mark.parametrize(
    ("value", "now", "expected_year"),
    [
        pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", NOW_2025, 1994, id="9110-5.6.7-94-past"),
        pytest.param("Tuesday, 01-Jan-30 00:00:00 GMT", NOW_2025, 2030, id="9110-5.6.7-30-near-future"),
        pytest.param("Monday, 01-Jan-75 00:00:00 GMT", NOW_2025, 2075, id="9110-5.6.7-exactly-50-future"),
        pytest.param("Thursday, 01-Jan-76 00:00:00 GMT", NOW_2025, 1976, id="9110-5.6.7-over-50-future"),
        pytest.param("Saturday, 01-Jan-00 00:00:00 GMT", NOW_2025, 2000, id="9110-5.6.7-00"),
        pytest.param("Friday, 01-Jan-10 00:00:00 GMT", ts(2080, 1, 1), 2110, id="9110-5.6.7-next-century"),
        pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", None, 1994, id="no-now-posix-pivot-94"),
        pytest.param("Sunday, 01-Jan-68 00:00:00 GMT", None, 2068, id="no-now-posix-pivot-68"),
        pytest.param("Tuesday, 01-Jan-69 00:00:00 GMT", None, 1969, id="no-now-posix-pivot-69"),
    ],
)
def test_rfc850_two_digit_year(value: str, now: float | None, expected_year: int) -> None:
    parsed = parse_http_date(value, now=now)
    assert parsed is not None
    assert datetime.fromtimestamp(parsed, UTC).year == expected_year


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        pytest.param(SUN_06_NOV_1994, "Sun, 06 Nov 1994 08:49:37 GMT", id="9110-5.6.7-imf-fixdate"),
        pytest.param(SUN_06_NOV_1994 + 0.999, "Sun, 06 Nov 1994 08:49:37 GMT", id="fraction-floored"),
        pytest.param(0.0, "Thu, 01 Jan 1970 00:00:00 GMT", id="epoch"),
        pytest.param(-0.5, "Wed, 31 Dec 1969 23:59:59 GMT", id="negative-fraction-floored"),
        pytest.param(ts(2024, 2, 29, 1, 2, 3), "Thu, 29 Feb 2024 01:02:03 GMT", id="leap-day"),
        pytest.param(1e20, "Fri, 31 Dec 9999 23:59:59 GMT", id="clamp-high"),
        pytest.param(-1e20, "Mon, 01 Jan 0001 00:00:00 GMT", id="clamp-low"),
        pytest.param(math.inf, "Fri, 31 Dec 9999 23:59:59 GMT", id="inf"),
        pytest.param(math.nan, "Thu, 01 Jan 1970 00:00:00 GMT", id="nan"),
    ],
)
def test_format(timestamp: float, expected: str) -> None:
    assert format_http_date(timestamp) == expected


@given(st.text())
def test_parse_never_raises(text: str) -> None:
    """Property: any text parses to a float or None (RFC 9111 §5.3: invalid → caller's choice)."""
    result = parse_http_date(text)
    assert result is None or isinstance(result, float)


@given(st.integers(min_value=-62135596800, max_value=253402300799))
def test_format_parse_round_trip(seconds: int) -> None:
    """Property: IMF-fixdate output parses back to the same second."""
    assert parse_http_date(format_http_date(seconds)) == seconds


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_format_never_raises_and_normalises(value: float) -> None:
    """Property: formatting never raises; re-parsing and re-formatting is a fixed point."""
    text = format_http_date(value)
    parsed = parse_http_date(text)
    assert parsed is not None
    assert format_http_date(parsed) == text


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2060, 12, 31)))
def test_three_formats_agree(moment: datetime) -> None:
    """Property (RFC 9110 §5.6.7): the same instant in all three formats parses identically."""
    moment = moment.replace(microsecond=0, tzinfo=UTC)
    expected = moment.timestamp()
    day, long_day = DAYS[moment.weekday()], LONG_DAYS[moment.weekday()]
    month, clock = MONTHS[moment.month - 1], f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    imf = f"{day}, {moment.day:02d} {month} {moment.year} {clock} GMT"
    rfc850 = f"{long_day}, {moment.day:02d}-{month}-{moment.year % 100:02d} {clock} GMT"
    asctime = f"{day} {month} {moment.day:2d} {clock} {moment.year}"
    assert parse_http_date(imf, now=expected) == expected
    assert parse_http_date(rfc850, now=expected) == expected
    assert parse_http_date(asctime, now=expected) == expected
