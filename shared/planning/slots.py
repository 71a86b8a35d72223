"""Slots: the per-domain throttle, the daily cap and round-robin assignment.

A reservation is the half-open span [start, start + interval) a message holds on its sending domain. A slot is
free when its span overlaps no reservation of that domain (across every campaign) and its local day is under
the domain's daily cap. The database enforces the same overlap rule with an exclusion constraint.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TypeVar

from shared.planning.window import Window

# Far enough to cover any real campaign; a planner that finds nothing in this horizon reports it.
HORIZON_DAYS = 3660


class NoSlotError(ValueError):
    """No free slot within the horizon: the window never opens, or the domain's daily cap is taken."""


@dataclass(frozen=True)
class Reservation:
    start: datetime
    end: datetime


class DomainSchedule:
    """The reservations of one sending domain, and the earliest free slot at or after a moment."""

    def __init__(
        self,
        window: Window,
        interval_seconds: int,
        reservations: Iterable[Reservation] = (),
        daily_cap: int | None = None,
    ) -> None:
        self.window = window
        self.interval = timedelta(seconds=interval_seconds)
        self.daily_cap = daily_cap
        spans = sorted((r.start, r.end) for r in reservations if r.end > r.start)
        self._starts = [s for s, _ in spans]
        self._ends = [e for _, e in spans]
        self._per_day = Counter(window.local_date(r.start) for r in reservations)

    def _is_free(self, slot: datetime) -> bool:
        # Reservations never overlap each other, so ends are sorted too: the last span starting before this
        # slot's end is the only one that can reach into it.
        i = bisect.bisect_left(self._starts, slot + self.interval) - 1
        return i < 0 or self._ends[i] <= slot

    def _under_cap(self, day: date) -> bool:
        return self.daily_cap is None or self._per_day[day] < self.daily_cap

    def _candidates(self, earliest: datetime) -> Iterator[datetime]:
        """Grid points at or after `earliest`, in order, on days still under the cap."""
        # Without a throttle there is no grid: a message is due at once while the window is open.
        if not self.interval and self.window.open_until(earliest) is not None:
            while self._under_cap(self.window.local_date(earliest)):
                yield earliest
        first_day = self.window.local_date(earliest)
        for day in self.window.days_from(earliest):
            if (day - first_day).days > HORIZON_DAYS:
                return
            for slot in self.window.slots_on(day, int(self.interval.total_seconds())):
                if not self._under_cap(day):
                    break  # before the rest of a day's grid is computed: a small cap skips a fine grid
                if slot >= earliest:
                    yield slot
                    while not self.interval and self._under_cap(day):
                        yield slot  # no throttle: everyone is due at the window start

    def earliest_free(self, earliest: datetime) -> datetime:
        for slot in self._candidates(earliest):
            if self._is_free(slot):
                return slot
        raise NoSlotError(unplanned_reason(earliest))

    def free_slots(self, earliest: datetime) -> Iterator[Reservation]:
        """Reserve and yield successive free slots from `earliest` on: planning n messages costs one pass.
        Ends where the horizon does (HORIZON_DAYS)."""
        for slot in self._candidates(earliest):
            if self._is_free(slot):
                yield self.reserve(slot)

    def reserve(self, slot: datetime) -> Reservation:
        reservation = Reservation(slot, slot + self.interval)
        if self.interval:
            i = bisect.bisect_left(self._starts, slot)
            self._starts.insert(i, slot)
            self._ends.insert(i, reservation.end)
        self._per_day[self.window.local_date(slot)] += 1
        return reservation

    def take(self, earliest: datetime) -> Reservation:
        return self.reserve(self.earliest_free(earliest))


Lead = TypeVar("Lead")
Domain = TypeVar("Domain", bound=Hashable)


def plan_round_robin(
    leads: Sequence[Lead],
    domains: Sequence[Domain],
    schedules: dict[Domain, DomainSchedule],
    earliest: datetime,
) -> list[tuple[Lead, Domain, Reservation | None]]:
    """Lead i goes to domains[i mod D] and takes that domain's earliest free slot at or after `earliest`;
    None where its domain has no free slot left within the horizon (a daily cap too small for its leads)."""
    cursors = {domain: schedules[domain].free_slots(earliest) for domain in domains}
    return [
        (lead, domains[i % len(domains)], next(cursors[domains[i % len(domains)]], None))
        for i, lead in enumerate(leads)
    ]


def unplanned_reason(earliest: datetime) -> str:
    """Why a message got no slot: what the planner and the scheduler report alike."""
    return f"no open slot within {HORIZON_DAYS} days of {earliest.isoformat()}"


def followup_due(window: Window, sent_at: datetime, days: int) -> datetime:
    """`days` calendar days after the send, at the same local wall-clock time (across clock changes too).

    The follow-up then takes its domain's first free slot at or after this moment, inside the window."""
    local = sent_at.astimezone(window.zone).replace(tzinfo=None) + timedelta(days=days)
    return local.replace(tzinfo=window.zone).astimezone(sent_at.tzinfo)


def retry_not_before(
    retry_count: int, failed_at: datetime, backoff_seconds: Sequence[int]
) -> datetime | None:
    """When the next try may go after a temporary failure (backoff from the failure); None: no tries left."""
    if retry_count >= len(backoff_seconds):
        return None
    return failed_at + timedelta(seconds=backoff_seconds[retry_count])


def rejection_not_before(rejected_at: datetime, backoff_seconds: Sequence[int]) -> datetime:
    """When a message refused by policy (SPEC §8) may go again: after the first retry's backoff, without
    spending a try. Its domain's health, not its tries, stops a run of them (the domain pauses)."""
    return rejected_at + timedelta(seconds=backoff_seconds[0] if backoff_seconds else 0)


def send_grace(interval_seconds: int, configured: int | None = None) -> timedelta:
    """How late after its slot a message may still start: min(60 s, interval / 4) unless configured.

    Without a throttle (interval 0) nothing can burst, so the grace is the 60 s ceiling.
    """
    if configured is not None:
        return timedelta(seconds=configured)
    return timedelta(seconds=min(60, interval_seconds / 4) if interval_seconds else 60)
