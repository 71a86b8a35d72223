"""Adaptive pacing per receiving provider (issue 18, SPEC §8): how far apart one sending domain's e-mails to
one receiving provider must be after the provider said "slow down". Pure: stored state and `now` in.

- A deferral (421, or a 4.7.x status, at connect, MAIL FROM, RCPT or DATA) doubles the domain's interval
  towards that provider, from the domain's own interval (`normal`, at least `floor_seconds`), up to
  `cap_seconds`. The deferral of an attempt that began before the last slowing counts once: it answers an
  e-mail that was on its way before the provider's first "slow down" came back.
- After a quiet period without a deferral the interval halves (rounded down); once it is down to the domain's
  own interval, or below the floor, the provider is back to normal. A quiet period lasts `quiet_seconds`, and
  at least two of the intervals it ends, so at least one e-mail went through at the slower pace before it
  eases.
- The pace is an extra constraint on top of the domain's throttle, never a loosening: the interval in force is
  never below `normal`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class PaceRules:
    cap_seconds: int = 14400  # the slowest pace
    floor_seconds: int = 60  # the first slowing of a domain that has no interval of its own
    quiet_seconds: int = 3600  # without a deferral for this long, the interval halves


@dataclass(frozen=True)
class Pace:
    """What is stored per (sending domain, provider): the interval set by the last slowing, and when."""

    interval_seconds: int
    slowed_at: datetime


@dataclass(frozen=True)
class Slowdown:
    """One provider's pace for one sending domain, aged by the rules: what the planner and the sender read."""

    pace: Pace
    normal_seconds: int  # the domain's own interval
    rules: PaceRules

    def _steps(self) -> Iterator[tuple[datetime, int]]:
        """(from when, interval) of each step of the recovery, the last one at the domain's own pace (0)."""
        at, interval = self.pace.slowed_at, self.pace.interval_seconds
        while self._slower(interval):
            yield at, interval
            at += timedelta(seconds=max(self.rules.quiet_seconds, 2 * interval))
            interval //= 2
        yield at, 0

    def _slower(self, interval: int) -> bool:
        return interval > self.normal_seconds and interval >= self.rules.floor_seconds

    def _step_at(self, at: datetime) -> tuple[int, datetime | None]:
        """The interval of the step `at` falls in (0: recovered), and when the next step begins."""
        current = 0
        for begins, interval in self._steps():
            if begins > at:
                return current, begins
            current = interval
        return current, None

    def interval_at(self, at: datetime) -> int:
        """Seconds between two sends to the provider at `at`: never below the domain's own interval."""
        return max(self.normal_seconds, self._step_at(at)[0])

    def is_slowed(self, at: datetime) -> bool:
        return self._step_at(at)[0] > 0

    def gap_at(self, at: datetime) -> timedelta:
        return timedelta(seconds=self.interval_at(at))

    def next_change(self, after: datetime) -> datetime | None:
        """The first moment after `after` when the interval is smaller (None: it is the domain's own)."""
        return self._step_at(after)[1]

    def turn_at(self, last_send_at: datetime | None, now: datetime, grace: timedelta) -> datetime | None:
        """None when a send towards the provider may start at `now`; else the earliest moment it may. A send
        may start up to `grace` after its slot, so two real sends may be `grace` closer than the pace, as for
        the domain's own throttle (SPEC §2.3)."""
        if last_send_at is None or not self.is_slowed(now):
            return None
        ready = last_send_at + self.gap_at(now) - grace
        return ready if ready > now else None

    def recovered_at(self) -> datetime:
        """When the provider is back to the domain's own pace, if no deferral comes before."""
        return list(self._steps())[-1][0]


def after_deferral(
    pace: Pace | None, normal_seconds: int, rules: PaceRules, at: datetime, began: datetime
) -> Pace:
    """The pace once the provider deferred, at `at`, an attempt that began at `began`."""
    if pace is None:
        return Pace(min(rules.cap_seconds, max(rules.floor_seconds, 2 * normal_seconds)), at)
    current = Slowdown(pace, normal_seconds, rules)
    interval = current.interval_at(at)
    if current.is_slowed(at) and began < pace.slowed_at:
        return Pace(interval, at)  # the same slowdown, heard again: the quiet period starts anew
    return Pace(min(rules.cap_seconds, max(rules.floor_seconds, 2 * interval)), at)
