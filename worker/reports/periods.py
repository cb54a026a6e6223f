"""Time zones, periods and the calendar buckets between ``from`` and ``to``.

Bucket boundaries are computed here, in Python with ``zoneinfo``, for both backends: a day,
an ISO week (from Monday) or a month starts at local midnight, converted to the instant it is
(DST-correct: a day around a change lasts 23 or 25 hours). PostgreSQL then assigns entries to
the boundaries with ``width_bucket`` and SQLite in Python with ``bisect``: the same instants
either way, so both backends give identical buckets. (PostgreSQL's own ``date_trunc(...,
created_at AT TIME ZONE tz)`` would use the server's time-zone database, which may not be the
same release as Python's; it is the benchmark's raw-SQL reference.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, available_timezones

from worker.errors import ValidationFailed

Interval = Literal["day", "week", "month"]
INTERVALS: tuple[Interval, ...] = ("day", "week", "month")
# At most this many buckets in one report (a year of days, with a leap day).
MAX_BUCKETS = 366

Moment = date | datetime


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


def zone(name: str | None, field: str = "tz") -> ZoneInfo:
    """The IANA time zone ``name`` (UTC when None); anything else is a 422 naming ``field``."""
    if name is None:
        return ZoneInfo("UTC")
    # Only the database's own names: ZoneInfo would also open any relative path it is given.
    if not isinstance(name, str) or name not in _zone_names():
        raise ValidationFailed(
            field, f"unknown time zone {name!r}; use an IANA name like Europe/Paris"
        )
    return ZoneInfo(name)


def instant(local: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of a local wall time. In a gap (clocks jump forward at midnight) the
    earlier offset applies, which gives the instant of the jump: the day starts then. For a
    wall time that happens twice, the first."""
    return local.replace(tzinfo=tz, fold=0).astimezone(UTC)


def resolve(value: Moment, tz: ZoneInfo, field: str) -> datetime:
    """A date is its local midnight in ``tz``; a timestamp must carry its offset."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValidationFailed(field, "must include a UTC offset, e.g. Z or +05:30")
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValidationFailed(field, "is out of range") from None
    return instant(datetime(value.year, value.month, value.day), tz)


@dataclass(frozen=True)
class Period:
    """``[start, end)`` in UTC, and the time zone its calendar is read in."""

    start: datetime
    end: datetime
    tz: ZoneInfo

    @property
    def tz_name(self) -> str:
        return self.tz.key


def period(start: Moment, end: Moment, tz_name: str | None = None) -> Period:
    """Validate a report's range: ``from`` at or before ``to``, a known time zone."""
    tz = zone(tz_name)
    begins, ends = resolve(start, tz, "from"), resolve(end, tz, "to")
    if begins > ends:
        raise ValidationFailed("from", "must not be after to")
    return Period(begins, ends, tz)


def _floor(local: datetime, interval: Interval) -> datetime:
    day = datetime(local.year, local.month, local.day)
    if interval == "day":
        return day
    if interval == "week":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    return day.replace(day=1)


def _next(local: datetime, interval: Interval) -> datetime:
    if interval == "day":
        return local + timedelta(days=1)
    if interval == "week":
        return local + timedelta(days=7)
    year, month = divmod(local.month, 12)
    return local.replace(year=local.year + year, month=month + 1)


@dataclass(frozen=True)
class Bucket:
    """One calendar bucket, clipped to the period: ``[start, end)`` in UTC."""

    start: datetime
    end: datetime


def buckets(p: Period, interval: Interval) -> list[Bucket]:
    """The calendar buckets that overlap ``p``, clipped to it (the first and last may be
    partial); none for an empty period. More than ``MAX_BUCKETS`` is a 422 naming ``to``."""
    if interval not in INTERVALS:
        raise ValidationFailed("interval", f"must be one of {', '.join(INTERVALS)}")
    if p.start >= p.end:
        return []
    local = _floor(p.start.astimezone(p.tz).replace(tzinfo=None), interval)
    out: list[Bucket] = []
    begins = p.start
    while begins < p.end:
        if len(out) == MAX_BUCKETS:
            raise ValidationFailed(
                "to", f"the range holds more than {MAX_BUCKETS} {interval} buckets; shorten it"
            )
        local = _next(local, interval)
        ends = min(instant(local, p.tz), p.end)
        if ends > begins:  # a boundary inside a DST gap can coincide with the previous one
            out.append(Bucket(begins, ends))
        begins = ends
    return out


def local_iso(moment: datetime, tz: ZoneInfo) -> str:
    """RFC 3339 in ``tz``'s local time with its offset (``Z`` for UTC)."""
    text = moment.astimezone(tz).isoformat()
    return text.replace("+00:00", "Z") if tz.key == "UTC" else text
