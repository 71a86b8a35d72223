"""Warm-up (issue 18): a new sending domain's daily cap grows day by day. Pure.

Day 1 is the plan's start date; the cap of day n is
    min(max_per_day, floor(start_per_day × (1 + growth_percent/100) ^ (n − 1))),
computed exactly (integers, no floating point) and rounded down, so a day never allows more than the plan's
growth. The growth compounds on the exact value, not on the rounded caps: 10/day at +5 % gives 10, 10, 11,
11, 12 … Days are local dates of the window the planner plans in; a day before the start date has the first
day's cap. The planner takes the smaller of this cap and the domain's own `daily_cap`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date


@functools.lru_cache(maxsize=1024)
def _growing_caps(start: int, growth_percent: int, maximum: int) -> tuple[int, ...]:
    """The caps of day 1, 2, … while they are below `maximum` (every later day has `maximum`)."""
    caps: list[int] = []
    numerator, denominator = start, 1
    while numerator // denominator < maximum:
        caps.append(numerator // denominator)
        if growth_percent == 0:
            break  # flat: the start volume for ever
        numerator, denominator = numerator * (100 + growth_percent), denominator * 100
    return tuple(caps)


@dataclass(frozen=True)
class Warmup:
    start_per_day: int
    growth_percent: int
    max_per_day: int
    start_date: date

    def day_number(self, day: date) -> int:
        """1 on the start date; 0 or less before it."""
        return (day - self.start_date).days + 1

    def cap_on(self, day: date) -> int:
        caps = _growing_caps(self.start_per_day, self.growth_percent, self.max_per_day)
        n = max(1, self.day_number(day))
        if n <= len(caps):
            return caps[n - 1]
        return self.start_per_day if self.growth_percent == 0 else self.max_per_day
