"""Slots: the per-domain throttle, the daily cap (and warm-up), provider pacing and round-robin assignment.

A reservation is the half-open span [start, start + interval) a message holds on its sending domain. A slot is
free when its span overlaps no reservation of that domain (across every campaign) and its local day is under
the domain's daily cap and its warm-up's cap of that day. The database enforces the same overlap rule with an
exclusion constraint.

A message to a receiving provider that slowed the domain down (`shared.planning.pacing`) also keeps that
provider's interval from the domain's other slots to the same provider: two such slots t1 < t2 are at least
the provider's interval at t2 apart (the interval only shrinks as time goes on, so this is the nearest
neighbours' rule). The slots it skips stay free for the domain's other messages.

A lead may have a window of its own (`shared.planning.zones`: the campaign's hours in the lead's zone): its
candidate slots are that window's grid, while what is counted per day (the daily cap, the warm-up's day) stays
on the local days of the schedule's own window, the campaign's. Reservations are UTC spans, so the throttle
holds across zones as it is.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

from shared.planning.pacing import Slowdown
from shared.planning.warmup import Warmup
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
        warmup: Warmup | None = None,
        slowdowns: Mapping[str, Slowdown] | None = None,
        provider_sends: Mapping[str, Iterable[datetime]] | None = None,
    ) -> None:
        """`slowdowns`: the providers that slowed this domain down; `provider_sends`: the domain's reserved
        slots (and last attempts) towards each of them."""
        self.window = window
        self.interval = timedelta(seconds=interval_seconds)
        self.daily_cap = daily_cap
        self.warmup = warmup
        spans = sorted((r.start, r.end) for r in reservations if r.end > r.start)
        self._starts = [s for s, _ in spans]
        self._ends = [e for _, e in spans]
        # A reservation's start: the first free moment after it found so far (`_free_from`).
        self._free_after: dict[datetime, datetime] = {}
        self._per_day = Counter(window.local_date(r.start) for r in reservations)
        self._caps: dict[date, int | None] = {}
        self._slowdowns = dict(slowdowns or {})
        self._provider_sends: defaultdict[str, list[datetime]] = defaultdict(list)
        for provider, sends in (provider_sends or {}).items():
            if provider in self._slowdowns:
                self._provider_sends[provider] = sorted(sends)

    def _is_free(self, slot: datetime) -> bool:
        # Reservations never overlap each other, so ends are sorted too: the last span starting before this
        # slot's end is the only one that can reach into it.
        i = bisect.bisect_left(self._starts, slot + self.interval) - 1
        return i < 0 or self._ends[i] <= slot

    def _cap(self, day: date) -> int | None:
        if day not in self._caps:
            caps = [self.daily_cap, self.warmup.cap_on(day) if self.warmup else None]
            self._caps[day] = min((cap for cap in caps if cap is not None), default=None)
        return self._caps[day]

    def _under_cap(self, day: date) -> bool:
        cap = self._cap(day)
        return cap is None or self._per_day[day] < cap

    def is_paced(self, provider: str | None) -> bool:
        """Whether messages to `provider` keep a pace of their own on this domain."""
        return provider is not None and provider in self._slowdowns

    def _pace_blocks_until(self, slot: datetime, provider: str) -> datetime | None:
        """None when `slot` keeps the provider's pace from the nearest slots to it on both sides; else the
        earliest moment worth trying next (nothing between `slot` and it can keep the pace)."""
        slowdown = self._slowdowns[provider]
        sends = self._provider_sends[provider]
        i = bisect.bisect_right(sends, slot)  # sends[i-1] <= slot < sends[i]
        if i and slot - sends[i - 1] < slowdown.gap_at(slot):
            # The pace may ease before the gap it has at `slot` has passed.
            eased = slowdown.next_change(slot)
            kept = sends[i - 1] + slowdown.gap_at(slot)
            return kept if eased is None else min(kept, eased)
        if i < len(sends) and sends[i] - slot < slowdown.gap_at(sends[i]):
            return sends[i]  # anything before the next send is too close to it
        return None

    def _candidates(self, earliest: datetime, window: Window | None = None) -> Iterator[datetime]:
        """Grid points at or after `earliest`, in order, on days still under the cap; on `window`'s grid when
        it is a lead's own window."""
        if window is not None and window != self.window:
            yield from self._candidates_in(window, earliest)
            return
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

    def _candidates_in(self, window: Window, earliest: datetime) -> Iterator[datetime]:
        """`_candidates` on a lead's own window. Its days are not the days the cap counts (the schedule's
        window's): a slot whose counted day is full moves the search to where that day ends. A slot that
        other messages hold moves it past them, to the first gap wide enough for a span (`_free_from`). Both
        jumps step over the lead's grid points between by arithmetic (`Window.slots_after`): neither a small
        cap on a fine grid nor the slots a plan's passes in other zones took are walked point by point."""
        interval = int(self.interval.total_seconds())
        last_day = window.local_date(earliest) + timedelta(days=HORIZON_DAYS)
        counted = _CountedDay(self.window)
        moment = earliest
        while True:
            resume = None
            if not self.interval and window.open_until(moment) is not None:
                while self._under_cap(counted.of(moment)):
                    yield moment
            for slot in self._grid_from(window, moment, interval, last_day):
                day = counted.of(slot)
                if not self._under_cap(day):
                    resume = counted.ends
                    break
                if not self._is_free(slot):
                    free = self._free_from(slot)
                    if free > slot + self.interval:  # beyond the next grid point: worth a jump
                        resume = free
                        break
                    continue
                yield slot
                if not self.interval:
                    while self._under_cap(day):
                        yield slot  # no throttle: everyone is due at the window start
                    # The day is full: the next candidate is where it ends, as a fresh search finds it.
                    resume = counted.ends
                    break
            if resume is None:
                return  # the horizon's end
            moment = resume

    def _free_from(self, moment: datetime) -> datetime:
        """The earliest moment at or after `moment` whose span overlaps no reservation: past the run of
        reservations, and of gaps between them too narrow for a span, that holds `moment`.

        Each reservation a search passes remembers where that search ended (reservations are only ever
        added, so the first free moment after one only moves later): a later search that meets it goes on
        from there, and the passes of a plan in many zones do not walk the same runs again and again."""
        free, passed = moment, []
        while True:
            i = bisect.bisect_left(self._starts, free + self.interval) - 1
            if i < 0 or self._ends[i] <= free:
                break
            passed.append(self._starts[i])
            free = self._free_after.get(self._starts[i], self._ends[i])
        for start in passed:
            self._free_after[start] = free
        return free

    @staticmethod
    def _grid_from(window: Window, moment: datetime, interval: int, last_day: date) -> Iterator[datetime]:
        """`window`'s grid points at or after `moment`, on its local days up to `last_day`."""
        days = window.days_from(moment)
        if next(days) > last_day:
            return
        yield from window.slots_after(moment, interval)
        for day in days:
            if day > last_day:
                return
            yield from window.slots_on(day, interval)

    def earliest_free(
        self, earliest: datetime, provider: str | None = None, window: Window | None = None
    ) -> datetime:
        """The earliest free slot at or after `earliest`; for a slowed `provider`, one that keeps its pace; on
        `window`'s grid when the lead has a window of its own."""
        moment = earliest
        while True:
            slot = next((s for s in self._candidates(moment, window) if self._is_free(s)), None)
            if slot is None:
                raise NoSlotError(unplanned_reason(earliest))
            if not self.is_paced(provider):
                return slot
            assert provider is not None
            blocked_until = self._pace_blocks_until(slot, provider)
            if blocked_until is None:
                return slot
            moment = blocked_until  # later than `slot`: the search always moves on

    def free_slots(self, earliest: datetime, window: Window | None = None) -> Iterator[Reservation]:
        """Reserve and yield successive free slots from `earliest` on: planning n messages costs one pass.
        Ends where the horizon does (HORIZON_DAYS)."""
        for slot in self._candidates(earliest, window):
            if self._is_free(slot):
                yield self.reserve(slot)

    def reserve(self, slot: datetime, provider: str | None = None) -> Reservation:
        reservation = Reservation(slot, slot + self.interval)
        if self.interval:
            i = bisect.bisect_left(self._starts, slot)
            self._starts.insert(i, slot)
            self._ends.insert(i, reservation.end)
        self._per_day[self.window.local_date(slot)] += 1
        if self.is_paced(provider):
            assert provider is not None
            bisect.insort(self._provider_sends[provider], slot)
        return reservation

    def take(
        self, earliest: datetime, provider: str | None = None, window: Window | None = None
    ) -> Reservation:
        return self.reserve(self.earliest_free(earliest, provider, window), provider)


class _CountedDay:
    """The local day of the schedule's window a moment falls on, looked up once per day for a run of
    moments in order: the moments of a lead's grid, whose own days are not the ones the cap counts."""

    def __init__(self, window: Window) -> None:
        self._window = window
        self._day: date | None = None
        self.begins = self.ends = datetime.min.replace(tzinfo=UTC)

    def of(self, moment: datetime) -> date:
        if self._day is None or not self.begins <= moment < self.ends:
            self._day = self._window.local_date(moment)
            self.begins = self._window.begins(self._day)
            self.ends = self._window.begins(self._day + timedelta(days=1))
        return self._day


Lead = TypeVar("Lead")
Domain = TypeVar("Domain", bound=Hashable)


class _Cursor:
    """One plan's pass over one domain's free slots. Leads to providers without a pace of their own take the
    next free slot in time; a lead to a slowed provider searches from where the pass stands (every earlier
    candidate is taken) or from the provider's previous slot in this plan, whichever is later."""

    def __init__(self, schedule: DomainSchedule, earliest: datetime, window: Window | None = None) -> None:
        self._schedule = schedule
        self._window = window
        self._free = schedule.free_slots(earliest, window)
        self._passed = earliest
        self._paced_from: dict[str, datetime | None] = {}  # None: nothing left within the horizon

    def next(self, provider: str | None) -> Reservation | None:
        if not self._schedule.is_paced(provider):
            slot = next(self._free, None)
            if slot is not None:
                self._passed = slot.start
            return slot
        assert provider is not None
        start = self._paced_from.get(provider, self._passed)
        if start is None:
            return None  # slots are only ever taken: a later search cannot find what this one did not
        try:
            taken = self._schedule.take(max(start, self._passed), provider, self._window)
        except NoSlotError:
            self._paced_from[provider] = None
            return None
        self._paced_from[provider] = taken.start
        return taken


def plan_round_robin(
    leads: Sequence[Lead],
    domains: Sequence[Domain],
    schedules: dict[Domain, DomainSchedule],
    earliest: datetime,
    providers: Mapping[Lead, str] | None = None,
    windows: Mapping[Lead, Window] | None = None,
) -> list[tuple[Lead, Domain, Reservation | None]]:
    """Lead i goes to domains[i mod D] and takes that domain's earliest free slot at or after `earliest` (that
    keeps its provider's pace, where `providers` names a provider that slowed the domain down; in its own
    window, where `windows` gives it one); None where its domain has no free slot left within the horizon (a
    daily cap too small for its leads).

    One pass per (domain, window): reservations are only ever added during a plan, so a pass's candidates
    behind it stay taken, and each lead still gets the earliest slot free for it when its turn comes."""
    found = providers or {}
    own = windows or {}
    cursors: dict[tuple[Domain, Window | None], _Cursor] = {}

    def cursor(domain: Domain, window: Window | None) -> _Cursor:
        if (domain, window) not in cursors:
            cursors[domain, window] = _Cursor(schedules[domain], earliest, window)
        return cursors[domain, window]

    planned: list[tuple[Lead, Domain, Reservation | None]] = []
    for i, lead in enumerate(leads):
        domain = domains[i % len(domains)]
        planned.append((lead, domain, cursor(domain, own.get(lead)).next(found.get(lead))))
    return planned


def unplanned_reason(earliest: datetime) -> str:
    """Why a message got no slot: what the planner and the scheduler report alike."""
    return f"no open slot within {HORIZON_DAYS} days of {earliest.isoformat()}"


def followup_due(window: Window, sent_at: datetime, days: int) -> datetime:
    """`days` calendar days after the send, at the same local wall-clock time (across clock changes too), in
    the window the lead's messages go in (the lead's own, in `recipient` mode).

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
