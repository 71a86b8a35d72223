"""The sending window: which local days are open and the wall-clock grid of slots on each of them."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import holidays


@functools.cache
def _holiday_calendar(country: str) -> holidays.HolidayBase:
    return holidays.country_holidays(country)


def is_known_country(country: str) -> bool:
    try:
        _holiday_calendar(country)
    except NotImplementedError:
        return False
    return True


@functools.lru_cache(maxsize=65536)
def _day_grid(window: Window, day: date, interval_seconds: int) -> tuple[datetime, ...]:
    return window._compute_day_grid(day, interval_seconds)


@dataclass(frozen=True)
class Window:
    """Open days and hours in local wall-clock time. `end` 24:00 is `time(0)` with `ends_at_midnight`."""

    timezone: str = "Europe/Amsterdam"
    days: frozenset[int] = field(default_factory=lambda: frozenset({0, 1, 2, 3, 4}))
    start: time = time(8, 0)
    end: time = time(17, 0)
    holidays: str | None = "NL"
    ends_at_midnight: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Window:
        """From the stored form: {timezone, days, start "HH:MM", end "HH:MM" or "24:00", holidays}."""
        end = data["end"]
        return cls(
            timezone=data["timezone"],
            days=frozenset(data["days"]),
            start=time.fromisoformat(data["start"]),
            end=time(0) if end == "24:00" else time.fromisoformat(end),
            holidays=data["holidays"],
            ends_at_midnight=end == "24:00",
        )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def is_open_day(self, day: date) -> bool:
        if day.weekday() not in self.days:
            return False
        return self.holidays is None or day not in _holiday_calendar(self.holidays)

    def local_date(self, moment: datetime) -> date:
        return moment.astimezone(self.zone).date()

    def _span_seconds(self) -> int:
        start = self.start.hour * 3600 + self.start.minute * 60
        end = 86400 if self.ends_at_midnight else self.end.hour * 3600 + self.end.minute * 60
        return end - start

    def day_grid(self, day: date, interval_seconds: int) -> tuple[datetime, ...]:
        return _day_grid(self, day, interval_seconds)

    def _compute_day_grid(self, day: date, interval_seconds: int) -> tuple[datetime, ...]:
        """UTC slot times of one local day: start + k·interval, strictly before end, in wall-clock time.

        Local times that do not exist (spring forward) are skipped; a repeated local time (fall back) is used
        once, at its first occurrence. With interval 0 the only slot is the window start.
        """
        if not self.is_open_day(day):
            return ()
        zone = self.zone
        first = datetime.combine(day, self.start)
        span = self._span_seconds()
        step = interval_seconds or span or 1
        slots = []
        for offset in range(0, span, step):
            local = first + timedelta(seconds=offset)
            moment = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
            if moment.astimezone(zone).replace(tzinfo=None) == local:  # exists on this day
                slots.append(moment)
        return tuple(slots)

    def open_until(self, moment: datetime) -> datetime | None:
        """The end of the window period containing `moment`, or None when the window is closed then."""
        local = moment.astimezone(self.zone)
        if not self.is_open_day(local.date()):
            return None
        start = datetime.combine(local.date(), self.start, self.zone)
        end = start + timedelta(seconds=self._span_seconds())
        start_utc, end_utc = start.astimezone(UTC), end.astimezone(UTC)
        return end_utc if start_utc <= moment < end_utc else None

    def open_hours_between(self, first: datetime, last: datetime) -> float:
        """Hours the window was open between two moments (for the sending tempo KPI)."""
        total = 0.0
        day = self.local_date(first)
        while day <= self.local_date(last):
            if self.is_open_day(day):
                start = datetime.combine(day, self.start, self.zone).astimezone(UTC)
                end = start + timedelta(seconds=self._span_seconds())
                total += max(0.0, (min(end, last) - max(start, first)).total_seconds())
            day += timedelta(days=1)
        return total / 3600

    def days_from(self, moment: datetime) -> Iterator[date]:
        day = self.local_date(moment)
        while True:
            yield day
            day += timedelta(days=1)
