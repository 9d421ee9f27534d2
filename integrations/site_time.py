"""Source times (HL7 v2 DTM, FHIR date/dateTime/instant) → timezone-aware UTC, the site zone filling the gaps.

Outside systems write times the way their standard allows, not the way our store keeps them:
an HL7 v2 DTM usually has no UTC offset (``20261120031400``: the sender's local time), a FHIR
``dateTime`` may be a bare date (``2026-11-20``) or a month (``2026-11``), and some servers send a
time of day without an offset although R4 requires one. Each parser returns a :class:`SourceTime`:
the instant in UTC, the text verbatim, the precision it was written at, and whether the site zone
had to place it.

Rules, in the order they apply:

* **An offset in the text wins** (``+0100``, ``-05:00``, ``Z``); the site zone is not consulted.
* **No offset**: the wall time is read in the site zone (an IANA zone such as ``America/New_York``).
* **Partial values** (year, month, day, or a time to the hour or minute) are placed at the *start* of
  the period they name: ``2026-11`` is 2026-11-01 00:00 local; ``2026112003`` is 03:00:00.
* **Daylight-saving gap** (a wall time that does not exist, e.g. 02:30 on the spring-forward night):
  read with the offset in force *before* the transition, so the instant lands *after* the gap, shifted
  forward by its length (02:30 EST = 03:30 EDT in New York). This is what ``zoneinfo`` gives with
  ``fold=0``; a device whose clock has not jumped yet writes exactly that.
* **Daylight-saving overlap** (a wall time that occurs twice, e.g. 01:30 on the fall-back night): the
  *first* occurrence (``fold=0``, the daylight-time offset). Nothing in the text says which one was
  meant; the first one is at most one hour early and keeps a night's ECGs in the order they were taken.
* **Leap second** (``:60``, allowed by both standards): the start of the next minute.
* Fractions beyond microseconds are truncated.

Text that is none of these raises :class:`~integrations.errors.InvalidTimeError` (the text and why);
decoders turn it into a per-record rejection whose reason starts with ``invalid-time:``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Literal

from integrations.errors import InvalidTimeError

Precision = Literal["year", "month", "day", "hour", "minute", "second", "fraction"]

#: Number of digits an HL7 DTM has at each precision (before any fraction).
_HL7_PRECISION_BY_DIGITS: dict[int, Precision] = {
    4: "year",
    6: "month",
    8: "day",
    10: "hour",
    12: "minute",
    14: "second",
}
#: HL7 allows four fraction digits; senders write up to six (microseconds), which we take too.
_HL7_DTM = re.compile(r"(?P<digits>\d{4,14})(?:\.(?P<fraction>\d{1,6}))?(?P<offset>[+-]\d{4})?")
_FHIR_DATETIME = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    r"(?P<offset>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
#: UTC offsets in use span −12:00 to +14:00.
_MAX_OFFSET = timedelta(hours=14)


@dataclass(frozen=True, slots=True)
class SourceTime:
    """A source's time: ``utc`` is timezone-aware UTC, ``text`` the original verbatim."""

    utc: datetime
    text: str
    precision: Precision
    zone_assumed: bool


def parse_hl7_dtm(text: str, site_tz: tzinfo) -> SourceTime:
    """An HL7 v2 DTM ``YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]`` (or the old TS ``DTM^precision``) in UTC."""
    value = text.split("^", 1)[0].strip()  # TS: the degree-of-precision component is redundant with the digits
    match = _HL7_DTM.fullmatch(value)
    if match is None or len(match["digits"]) not in _HL7_PRECISION_BY_DIGITS:
        raise InvalidTimeError(text, "not an HL7 DTM (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])")
    digits, fraction = match["digits"], match["fraction"]
    if fraction is not None and len(digits) != 14:
        raise InvalidTimeError(text, "a fraction of a second needs the seconds before it")
    parts = [int(digits[0:4]), *(int(digits[i : i + 2]) for i in range(4, len(digits), 2))]
    precision = "fraction" if fraction else _HL7_PRECISION_BY_DIGITS[len(digits)]
    offset = _hl7_offset(text, match["offset"]) if match["offset"] else None
    return _source_time(text, parts, fraction, offset, precision, site_tz)


def parse_fhir_datetime(text: str, site_tz: tzinfo) -> SourceTime:
    """A FHIR ``date``, ``dateTime`` or ``instant`` at any precision, in UTC.

    Beyond R4, a time of day without an offset (``2026-11-20T03:14:00``) and one without seconds
    (``2026-11-20T03:14``) are accepted, as real servers send them, and placed with the site zone.
    """
    match = _FHIR_DATETIME.fullmatch(text.strip())
    if match is None:
        raise InvalidTimeError(text, "not a FHIR date, dateTime or instant (YYYY[-MM[-DD[Thh:mm:ss[.s][Z|±hh:mm]]]])")
    names = ("year", "month", "day", "hour", "minute", "second")
    parts = [int(match[name]) for name in names if match[name] is not None]
    fraction = match["fraction"]
    precision: Precision = "fraction" if fraction else names[len(parts) - 1]  # type: ignore[assignment]
    offset = _fhir_offset(text, match["offset"]) if match["offset"] else None
    return _source_time(text, parts, fraction, offset, precision, site_tz)


def place_wall_time(wall: datetime, text: str, site_tz: tzinfo) -> SourceTime:
    """A naive wall-clock time another parser already read (a WFDB header's base time), placed in ``site_tz``."""
    precision: Precision = "fraction" if wall.microsecond else "second"
    local = wall.replace(tzinfo=site_tz, fold=0)
    return SourceTime(utc=local.astimezone(UTC), text=text, precision=precision, zone_assumed=True)


def _source_time(
    text: str, parts: list[int], fraction: str | None, offset: tzinfo | None, precision: Precision, site_tz: tzinfo
) -> SourceTime:
    year, month, day, hour, minute, second = [*parts, *[1, 1, 0, 0, 0][len(parts) - 1 :]]
    leap_second = second == 60
    microsecond = int(fraction[:6].ljust(6, "0")) if fraction else 0
    try:
        wall = datetime(year, month, day, hour, minute, 59 if leap_second else second, microsecond)
    except ValueError as exc:
        raise InvalidTimeError(text, str(exc)) from exc
    if leap_second:
        wall = wall.replace(microsecond=0) + timedelta(seconds=1)
    # fold=0: a gap time is read with the pre-transition offset, an overlap time as its first occurrence.
    local = wall.replace(tzinfo=offset or site_tz, fold=0)
    return SourceTime(utc=local.astimezone(UTC), text=text, precision=precision, zone_assumed=offset is None)


def _hl7_offset(text: str, offset_text: str) -> timezone:
    return _offset(text, offset_text[0], int(offset_text[1:3]), int(offset_text[3:5]))


def _fhir_offset(text: str, offset_text: str) -> timezone:
    if offset_text == "Z":
        return UTC
    return _offset(text, offset_text[0], int(offset_text[1:3]), int(offset_text[4:6]))


def _offset(text: str, sign: str, hours: int, minutes: int) -> timezone:
    delta = timedelta(hours=hours, minutes=minutes)
    if minutes >= 60 or delta > _MAX_OFFSET:
        raise InvalidTimeError(text, f"UTC offset {sign}{hours:02d}{minutes:02d} is out of range")
    return timezone(-delta if sign == "-" else delta)
