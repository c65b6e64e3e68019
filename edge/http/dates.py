"""HTTP-date parsing and formatting (RFC 9110 §5.6.7), as a cache needs it (RFC 9111 §4.2).

Rules implemented here, in the order the RFCs state them:

* RFC 9110 §5.6.7: "A recipient that parses a timestamp value in an HTTP field MUST accept all
  three HTTP-date formats": IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``), the obsolete RFC 850
  form (``Sunday, 06-Nov-94 08:49:37 GMT``) and ANSI C asctime (``Sun Nov  6 08:49:37 1994``).
* RFC 9110 §5.6.7: a two-digit RFC 850 year "that appears to be more than 50 years in the future"
  is the most recent past year with the same last two digits.
* RFC 9111 §4.2: "Although all date formats are specified to be case-sensitive, a cache recipient
  SHOULD match the field value case-insensitively" — we do.
* RFC 9111 §4.2: "A cache recipient SHOULD consider a date with a zone abbreviation other than
  "GMT" to be invalid for calculating expiration" — ``UTC``, ``+0000``, ``EST`` … give ``None``.
* RFC 9111 §4.2: a parsed date is represented "as the nearest time equal to or earlier than the
  received value" — a leap second ``:60`` becomes ``:59``.
* Times are epoch seconds (floats) in UTC; local time zones never take part (RFC 9111 §4.2).

Nothing else: RFC 9110 §5.6.7 allows exactly these three grammars, each with single spaces where
it has ``SP``, a two-digit day (asctime: a space and one digit), long day names only in the RFC 850
form and short ones in the others, a two-digit RFC 850 year.  ``Thu, 18  Aug  2050 02:01:18 GMT``
or ``Thu, 18-Aug-2050 02:01:18 GMT`` is not a date, and an invalid ``Expires`` means "already
expired" (RFC 9111 §5.3).  Only the whitespace around the whole value is ignored (it is not part of
a field value).  The day name is checked to be the right kind of day name but not cross-checked
against the date (many origins get it wrong, and the date fields alone are unambiguous).
"""

from __future__ import annotations

import calendar
import math
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache

_SHORT_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_LONG_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = {
    name: index
    for index, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1
    )
}
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

_SHORT_DAY = r"(?P<dayname>[a-z]{3})"
_LONG_DAY = r"(?P<dayname>[a-z]{6,9})"
_MONTH = r"(?P<month>[a-z]{3})"
_TIME = r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"

# IMF-fixdate = day-name "," SP date1 SP time-of-day SP GMT ; date1 = day SP month SP year
_IMF_FIXDATE = re.compile(
    rf"{_SHORT_DAY}, (?P<day>[0-9]{{2}}) {_MONTH} (?P<year>[0-9]{{4}}) {_TIME} gmt", re.ASCII | re.IGNORECASE
)
# rfc850-date = day-name-l "," SP date2 SP time-of-day SP GMT ; date2 = day "-" month "-" 2DIGIT
_RFC850 = re.compile(
    rf"{_LONG_DAY}, (?P<day>[0-9]{{2}})-{_MONTH}-(?P<year>[0-9]{{2}}) {_TIME} gmt", re.ASCII | re.IGNORECASE
)
# asctime-date = day-name SP date3 SP time-of-day SP year ; date3 = month SP ( 2DIGIT / ( SP DIGIT ) )
_ASCTIME = re.compile(
    rf"{_SHORT_DAY} {_MONTH} (?P<day>[0-9]{{2}}| [0-9]) {_TIME} (?P<year>[0-9]{{4}})", re.ASCII | re.IGNORECASE
)

# datetime's range, in epoch seconds: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
_MIN_TS = -62135596800
_MAX_TS = 253402300799
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _resolve_two_digit_year(yy: int, now: float | None) -> int:
    """RFC 9110 §5.6.7: a two-digit year more than 50 years in the future is in the past century.

    Without ``now`` (this layer never reads the clock) the reference is the POSIX ``%y`` pivot:
    00-68 → 2000-2068, 69-99 → 1969-1999.
    """
    if now is None or not math.isfinite(now):
        return 2000 + yy if yy < 69 else 1900 + yy
    current_year = datetime.fromtimestamp(min(max(now, _MIN_TS), _MAX_TS), UTC).year
    year = (current_year // 100) * 100 + yy
    if year > current_year + 50:
        year -= 100
    elif year <= current_year - 50:
        # Same rule seen from the other side: the most recent year with these digits that is not
        # more than 50 years in the future.
        year += 100
    return year


def parse_http_date(value: str, now: float | None = None) -> float | None:
    """Parse an HTTP-date (RFC 9110 §5.6.7) into epoch seconds, or ``None`` when it is not one.

    Accepts exactly IMF-fixdate, RFC 850 and asctime, as recipients MUST; matches case-insensitively
    and rejects any zone but GMT as RFC 9111 §4.2 asks of caches.  ``now`` (epoch seconds) anchors the
    RFC 850 two-digit-year rule; the caller passes the time the message was received.  Never
    raises: a cache must treat an unparseable Expires as "already expired" (RFC 9111 §5.3), which
    the caller does on ``None``.  Memoised: stored responses repeat the same dates.
    """
    if len(value) > 96:  # far longer than any HTTP-date, even with extra spaces
        return None
    return _parse_http_date_memo(value, now)


@lru_cache(maxsize=2048)
def _parse_http_date_memo(value: str, now: float | None) -> float | None:
    text = value.strip(" \t")
    match = _IMF_FIXDATE.fullmatch(text)
    fmt = "imf"
    if match is None:
        match = _RFC850.fullmatch(text)
        fmt = "rfc850"
    if match is None:
        match = _ASCTIME.fullmatch(text)
        fmt = "asctime"
    if match is None:
        return None

    dayname = match["dayname"].lower()
    if dayname not in (_LONG_DAYS if fmt == "rfc850" else _SHORT_DAYS):
        return None
    month = _MONTHS.get(match["month"].lower())
    if month is None:
        return None
    year_text = match["year"]
    year = int(year_text)
    if fmt == "rfc850":
        year = _resolve_two_digit_year(year, now)
    if year < 1:
        return None
    day = int(match["day"].strip())
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    hour, minute, second = int(match["hour"]), int(match["minute"]), int(match["second"])
    if hour > 23 or minute > 59 or second > 60:
        return None
    # A leap second cannot be represented; "the nearest time equal to or earlier" is :59.
    second = min(second, 59)
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def format_http_date(ts: float) -> str:
    """Format epoch seconds as an IMF-fixdate in GMT (RFC 9110 §5.6.7), e.g. for ``Date``.

    Senders MUST generate the IMF-fixdate form.  Fractions of a second are dropped (the nearest
    earlier whole second); values outside years 1-9999 are clamped, NaN is treated as the epoch.
    Never raises.
    """
    if math.isnan(ts):
        seconds = 0
    elif ts >= _MAX_TS:
        seconds = _MAX_TS
    elif ts <= _MIN_TS:
        seconds = _MIN_TS
    else:
        seconds = math.floor(ts)
    moment = _EPOCH + timedelta(seconds=seconds)
    return (
        f"{_DAY_NAMES[moment.weekday()]}, {moment.day:02d} {_MONTH_NAMES[moment.month - 1]} "
        f"{moment.year:04d} {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} GMT"
    )
