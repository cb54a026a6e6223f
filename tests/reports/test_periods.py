"""Calendar buckets in a time zone: DST-correct days, ISO weeks, months, clipping, limits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from worker.errors import ValidationFailed
from worker.reports.periods import MAX_BUCKETS, buckets, local_iso, period, zone


def test_a_day_of_spring_forward_lasts_23_hours_in_new_york() -> None:
    p = period(date(2026, 3, 7), date(2026, 3, 10), "America/New_York")
    days = buckets(p, "day")
    assert [b.end - b.start for b in days] == [
        timedelta(hours=24),
        timedelta(hours=23),
        timedelta(hours=24),
    ]
    tz = zone("America/New_York")
    assert [local_iso(b.start, tz) for b in days] == [
        "2026-03-07T00:00:00-05:00",
        "2026-03-08T00:00:00-05:00",
        "2026-03-09T00:00:00-04:00",
    ]


def test_a_day_of_fall_back_lasts_25_hours_in_berlin() -> None:
    p = period(date(2026, 10, 25), date(2026, 10, 26), "Europe/Berlin")
    (day,) = buckets(p, "day")
    assert day.end - day.start == timedelta(hours=25)
    assert day.start == datetime(2026, 10, 24, 22, tzinfo=UTC)


def test_a_midnight_gap_starts_the_day_at_the_jump() -> None:
    # Santiago springs forward at 24:00 on 2026-09-05: 2026-09-06 00:00 does not exist and
    # the day begins at 01:00 -03 (04:00 UTC).
    p = period(date(2026, 9, 5), date(2026, 9, 7), "America/Santiago")
    days = buckets(p, "day")
    assert days[1].start == datetime(2026, 9, 6, 4, tzinfo=UTC)
    assert days[0].end == days[1].start
    assert days[0].end - days[0].start == timedelta(hours=24)
    assert days[1].end - days[1].start == timedelta(hours=23)


def test_weeks_start_on_monday_and_the_first_is_clipped_to_from() -> None:
    p = period(date(2026, 3, 4), date(2026, 3, 20), "UTC")  # a Wednesday to a Friday
    weeks = buckets(p, "week")
    assert [(b.start.date(), b.end.date()) for b in weeks] == [
        (date(2026, 3, 4), date(2026, 3, 9)),
        (date(2026, 3, 9), date(2026, 3, 16)),
        (date(2026, 3, 16), date(2026, 3, 20)),
    ]


def test_months_cross_the_year() -> None:
    p = period(date(2026, 11, 15), date(2027, 2, 1), "Asia/Kolkata")
    starts = [local_iso(b.start, p.tz) for b in buckets(p, "month")]
    assert starts == [
        "2026-11-15T00:00:00+05:30",
        "2026-12-01T00:00:00+05:30",
        "2027-01-01T00:00:00+05:30",
    ]


def test_an_empty_period_has_no_buckets() -> None:
    moment = datetime(2026, 3, 1, tzinfo=UTC)
    assert buckets(period(moment, moment), "day") == []


def test_366_days_are_allowed_and_367_refused_naming_to() -> None:
    assert len(buckets(period(date(2028, 1, 1), date(2029, 1, 1)), "day")) == MAX_BUCKETS
    with pytest.raises(ValidationFailed) as refused:
        buckets(period(date(2028, 1, 1), date(2029, 1, 2)), "day")
    assert refused.value.field == "to"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"start": date(2026, 3, 2), "end": date(2026, 3, 1)}, "from"),
        ({"start": date(2026, 3, 1), "end": date(2026, 3, 2), "tz_name": "Mars/Olympus"}, "tz"),
        ({"start": date(2026, 3, 1), "end": date(2026, 3, 2), "tz_name": "../../etc/passwd"}, "tz"),
        ({"start": datetime(2026, 3, 1), "end": date(2026, 3, 2)}, "from"),
    ],
)
def test_a_bad_period_names_its_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        period(**kwargs)
    assert refused.value.field == field


def test_an_unknown_interval_names_it() -> None:
    with pytest.raises(ValidationFailed) as refused:
        buckets(period(date(2026, 3, 1), date(2026, 3, 2)), "hour")  # type: ignore[arg-type]
    assert refused.value.field == "interval"
