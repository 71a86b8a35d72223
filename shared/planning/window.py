"""The sending window: which local days are open and the wall-clock grid of slots on each of them."""

from __future__ import annotations

import bisect
import functools
import math
import zoneinfo
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import holidays


@functools.cache
def _supported_countries() -> frozenset[str]:
    return frozenset(holidays.list_supported_countries())


@functools.cache
def _known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_known_country(country: str) -> bool:
    """A country code of the `holidays` package (alpha-2 or alpha-3), from its own list: a name is never
    looked up on the module, where `__class__` and friends would be found too."""
    return country in _supported_countries()


def is_known_timezone(name: str) -> bool:
    """An IANA zone of this system's tz database: a name never becomes a file path of its own."""
    return name in _known_timezones()


@functools.cache
def _holiday_calendar(country: str) -> holidays.HolidayBase:
    if not is_known_country(country):
        raise ValueError(f"unknown holiday calendar {country!r}")
    return holidays.country_holidays(country)


class _DayGrid:
    """One local day's slot times (UTC), computed only as far as a planner has looked: a daily cap of one
    on a one-second grid needs the first few of 86,400 points, not all of them."""

    def __init__(self, window: Window, day: date, interval_seconds: int, first_point: int = 0) -> None:
        self._zone = window.zone
        self._first = datetime.combine(day, window.start)
        span = window._span_seconds()
        step = interval_seconds or span or 1
        self._offsets = iter(range(first_point * step, span, step))
        self._slots: list[datetime] = []

    def __iter__(self) -> Iterator[datetime]:
        yield from self._slots  # what earlier readers computed, at list speed
        seen = len(self._slots)
        while seen < len(self._slots) or self._extend():
            yield self._slots[seen]
            seen += 1

    def at_or_after(self, moment: datetime) -> Iterator[datetime]:
        """The points at or after `moment`: those already computed found by bisection."""
        seen = bisect.bisect_left(self._slots, moment)
        while seen < len(self._slots) or self._extend():
            if self._slots[seen] >= moment:
                yield self._slots[seen]
            seen += 1

    def _extend(self) -> bool:
        for offset in self._offsets:
            local = self._first + timedelta(seconds=offset)
            moment = local.replace(tzinfo=self._zone, fold=0).astimezone(UTC)
            if moment.astimezone(self._zone).replace(tzinfo=None) == local:  # exists on this day
                self._slots.append(moment)
                return True
        return False


# Up to this many grid points before a moment are read from the day's remembered grid, not stepped over:
# comparing a computed point costs a small fraction of computing one.
_REMEMBERED_SKIP = 256


@functools.lru_cache(maxsize=65536)
def _day_grid(window: Window, day: date, interval_seconds: int) -> _DayGrid:
    return _DayGrid(window, day, interval_seconds)


@dataclass(frozen=True)
class Window:
    """Open days and hours in local wall-clock time. `end` 24:00 is `time(0)` with `ends_at_midnight`.

    Its defaults are the default sending window (Mon–Fri 08:00–17:00 Europe/Amsterdam, Dutch holidays
    skipped), stated here only: the settings (MAILDASH_WINDOW_*) and the api's wizard read `DEFAULT_WINDOW`.
    """

    timezone: str = "Europe/Amsterdam"
    days: frozenset[int] = field(default_factory=lambda: frozenset({0, 1, 2, 3, 4}))
    start: time = time(8, 0)
    end: time = time(17, 0)
    holidays: str | None = "NL"
    ends_at_midnight: bool = False

    def __post_init__(self) -> None:
        # Names that reach the tz database and the holidays package: refused here too, for stored windows.
        if not is_known_timezone(self.timezone):
            raise ValueError(f"unknown timezone {self.timezone!r}")
        if self.holidays is not None and not is_known_country(self.holidays):
            raise ValueError(f"unknown holiday calendar {self.holidays!r}")

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

    def to_dict(self) -> dict[str, Any]:
        """The stored form that `from_dict` reads."""
        return {
            "timezone": self.timezone,
            "days": sorted(self.days),
            "start": self.start.strftime("%H:%M"),
            "end": "24:00" if self.ends_at_midnight else self.end.strftime("%H:%M"),
            "holidays": self.holidays,
        }

    @functools.cached_property
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
        """UTC slot times of one local day: start + k·interval, strictly before end, in wall-clock time.

        Local times that do not exist (spring forward) are skipped; a repeated local time (fall back) is used
        once, at its first occurrence. With interval 0 the only slot is the window start.
        """
        return tuple(self.slots_on(day, interval_seconds))

    def slots_on(self, day: date, interval_seconds: int) -> Iterator[datetime]:
        """The day grid, in order, computed as far as it is read (and remembered for the next reader)."""
        if not self.is_open_day(day):
            return iter(())
        return iter(_day_grid(self, day, interval_seconds))

    def slots_after(self, moment: datetime, interval_seconds: int) -> Iterator[datetime]:
        """The grid points of `moment`'s local day at or after it. Many points before its wall-clock time are
        stepped over by arithmetic, not computed: a planner resuming late in a day of a fine grid. A few are
        read from the day's remembered grid: a planner jumping from slot to slot of a coarse one."""
        local = moment.astimezone(self.zone)
        if not self.is_open_day(local.date()):
            return iter(())
        step = interval_seconds or self._span_seconds() or 1
        elapsed = (local.replace(tzinfo=None) - datetime.combine(local.date(), self.start)).total_seconds()
        # A point whose wall-clock time is before `moment`'s lies before it (a repeated hour counts once, at
        # its first occurrence); one after may not, when `moment` is in the repeated hour's second run.
        first_point = max(0, math.ceil(elapsed / step))
        if first_point <= _REMEMBERED_SKIP:
            return _day_grid(self, local.date(), interval_seconds).at_or_after(moment)
        points = _DayGrid(self, local.date(), interval_seconds, first_point)
        return (slot for slot in points if slot >= moment)

    def begins(self, day: date) -> datetime:
        """The moment (UTC) from which every moment falls on local `day` or later: its midnight, or, where
        the clocks jump over midnight, the jump (`fold=0` of a missing time takes the offset before it)."""
        return datetime.combine(day, time(0), self.zone).astimezone(UTC)

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


DEFAULT_WINDOW = Window()
