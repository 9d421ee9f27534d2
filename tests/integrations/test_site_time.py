"""Source times → UTC: every precision of HL7 DTM and FHIR dateTime, offsets, the site zone and its DST rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from integrations.errors import IntegrationError, InvalidTimeError
from integrations.site_time import parse_fhir_datetime, parse_hl7_dtm

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("text", "utc", "precision"),
    [
        ("2026", datetime(2026, 1, 1, 5, tzinfo=UTC), "year"),
        ("202611", datetime(2026, 11, 1, 4, tzinfo=UTC), "month"),  # 1 Nov is still daylight time (EDT)
        ("20261120", datetime(2026, 11, 20, 5, tzinfo=UTC), "day"),
        ("2026112003", datetime(2026, 11, 20, 8, tzinfo=UTC), "hour"),
        ("202611200314", datetime(2026, 11, 20, 8, 14, tzinfo=UTC), "minute"),
        ("20261120031400", datetime(2026, 11, 20, 8, 14, tzinfo=UTC), "second"),
        ("20261120031400.1234", datetime(2026, 11, 20, 8, 14, 0, 123400, tzinfo=UTC), "fraction"),
        ("20261120031400^S", datetime(2026, 11, 20, 8, 14, tzinfo=UTC), "second"),  # old TS with precision
    ],
)
def test_an_hl7_time_without_offset_is_site_local_time_at_any_precision(text, utc, precision):
    parsed = parse_hl7_dtm(text, NEW_YORK)
    assert (parsed.utc, parsed.precision, parsed.zone_assumed, parsed.text) == (utc, precision, True, text)
    assert parsed.utc.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("20261120031400+0100", datetime(2026, 11, 20, 2, 14, tzinfo=UTC)),
        ("20261120031400.5-0500", datetime(2026, 11, 20, 8, 14, 0, 500000, tzinfo=UTC)),
        ("20261120+0000", datetime(2026, 11, 20, tzinfo=UTC)),
        ("202611200314+0530", datetime(2026, 11, 19, 21, 44, tzinfo=UTC)),
    ],
)
def test_an_hl7_offset_wins_over_the_site_zone(text, utc):
    parsed = parse_hl7_dtm(text, NEW_YORK)
    assert (parsed.utc, parsed.zone_assumed) == (utc, False)


@pytest.mark.parametrize(
    ("text", "utc", "precision", "zone_assumed"),
    [
        ("2026", datetime(2025, 12, 31, 23, tzinfo=UTC), "year", True),
        ("2026-11", datetime(2026, 10, 31, 23, tzinfo=UTC), "month", True),
        ("2026-11-20", datetime(2026, 11, 19, 23, tzinfo=UTC), "day", True),
        ("2026-11-20T03:14", datetime(2026, 11, 20, 2, 14, tzinfo=UTC), "minute", True),
        ("2026-11-20T03:14:00", datetime(2026, 11, 20, 2, 14, tzinfo=UTC), "second", True),
        ("2026-11-20T03:14:00+01:00", datetime(2026, 11, 20, 2, 14, tzinfo=UTC), "second", False),
        ("2026-11-20T03:14:00Z", datetime(2026, 11, 20, 3, 14, tzinfo=UTC), "second", False),
        (
            "2026-11-20T03:14:00.123456789-05:00",
            datetime(2026, 11, 20, 8, 14, 0, 123456, tzinfo=UTC),
            "fraction",
            False,
        ),
        ("2026-06-30T23:59:60Z", datetime(2026, 7, 1, tzinfo=UTC), "second", False),  # leap second
    ],
)
def test_fhir_dates_and_datetimes_of_every_precision(text, utc, precision, zone_assumed):
    parsed = parse_fhir_datetime(text, BERLIN)
    assert (parsed.utc, parsed.precision, parsed.zone_assumed) == (utc, precision, zone_assumed)


# 2026 transitions: New York springs forward 8 March 02:00 → 03:00 and falls back 1 November 02:00 → 01:00;
# Berlin springs forward 29 March 02:00 → 03:00 and falls back 25 October 03:00 → 02:00.
@pytest.mark.parametrize(
    ("zone", "hl7", "fhir", "utc"),
    [
        pytest.param(NEW_YORK, "20260308023000", "2026-03-08T02:30:00", datetime(2026, 3, 8, 7, 30, tzinfo=UTC),
                     id="new-york-gap-is-read-as-EST-so-03:30-EDT"),
        pytest.param(NEW_YORK, "20261101013000", "2026-11-01T01:30:00", datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
                     id="new-york-overlap-is-the-first-01:30-EDT"),
        pytest.param(BERLIN, "20260329023000", "2026-03-29T02:30:00", datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
                     id="berlin-gap-is-read-as-CET-so-03:30-CEST"),
        pytest.param(BERLIN, "20261025023000", "2026-10-25T02:30:00", datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
                     id="berlin-overlap-is-the-first-02:30-CEST"),
    ],
)  # fmt: skip
def test_daylight_saving_gap_and_overlap_follow_the_documented_rule(zone, hl7, fhir, utc):
    assert parse_hl7_dtm(hl7, zone).utc == utc
    assert parse_fhir_datetime(fhir, zone).utc == utc


def test_a_gap_time_is_shifted_forward_by_the_gap():
    just_before = parse_hl7_dtm("20260308015900", NEW_YORK).utc
    in_gap = parse_hl7_dtm("20260308023000", NEW_YORK).utc
    after = parse_hl7_dtm("20260308033000", NEW_YORK).utc
    assert in_gap - just_before == timedelta(minutes=31)
    assert in_gap == after  # 02:30 that never happened is the same instant as 03:30


def test_the_overlap_keeps_a_night_in_order():
    """01:30 read as the first occurrence comes before 01:59 (first) and before 02:00 standard time."""
    times = [parse_hl7_dtm(text, NEW_YORK).utc for text in ("20261101013000", "20261101015900", "20261101020000")]
    assert times == sorted(times)
    assert times[2] - times[1] == timedelta(hours=1, minutes=1)


def test_a_fixed_offset_site_zone_works_too():
    parsed = parse_fhir_datetime("2026-11-20", timezone(timedelta(hours=9)))
    assert parsed.utc == datetime(2026, 11, 19, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    ["", "2026-11-20", "20261320", "20260230", "2026112", "20261120031400.", "20261120.5", "20261120031400+2500",
     "20261120031400+0160", "202611200314000", "noon", "20261120 0314", "2026112003140012345"],
)  # fmt: skip
def test_invalid_hl7_text_raises_an_invalid_time_error(text):
    with pytest.raises(InvalidTimeError) as info:
        parse_hl7_dtm(text, NEW_YORK)
    assert str(info.value).startswith(f"invalid-time: {text!r}: ")
    assert isinstance(info.value, IntegrationError)


@pytest.mark.parametrize(
    "text",
    ["", "20261120", "2026-13", "2026-02-30", "2026-11-20T25:00:00Z", "2026-11-20T03", "2026-11-20 03:14:00Z",
     "2026-11-20T03:14:00+15:00", "2026-1-2", "26-11-20", "2026-11-20T03:14:00.Z"],
)  # fmt: skip
def test_invalid_fhir_text_raises_an_invalid_time_error(text):
    with pytest.raises(InvalidTimeError, match=r"^invalid-time: "):
        parse_fhir_datetime(text, NEW_YORK)
