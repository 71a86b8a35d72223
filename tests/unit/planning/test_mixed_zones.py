"""Recipient-mode plans (leads in their own zones) against an independent reference written here from the
rules alone: the grid of each lead's local window, its country's holidays, the domain's interval, the daily
cap counted on the campaign's days, and greedy order (each lead the earliest slot free when its turn came)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import holidays
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.planning import DomainSchedule, Window, plan_round_robin
from shared.planning.zones import recipient_window

# Zone → its country: a :30 zone, a southern-hemisphere DST zone, the two zones of the whole-stack test.
PLACES = {
    "Europe/Amsterdam": "NL",
    "America/New_York": "US",
    "Asia/Kolkata": "IN",
    "Australia/Sydney": "AU",
}
# The days clocks change here in 2026, where a plan is most likely to slip.
CHANGES = [date(2026, 3, 8), date(2026, 3, 29), date(2026, 4, 5), date(2026, 10, 4), date(2026, 10, 25),
           date(2026, 11, 1)]  # fmt: skip


@functools.cache
def calendar(country: str) -> holidays.HolidayBase:
    return holidays.country_holidays(country)


def grid(
    zone: str,
    days: frozenset[int],
    hours: tuple[time, time | None],
    country: str | None,
    interval: int,
    earliest: datetime,
) -> Iterator[datetime]:
    """The local grid, as the spec says it: start + k × interval before end (None: midnight), on open local
    days, a missing local time skipped, a repeated one at its first occurrence; from `earliest` on."""
    tz = ZoneInfo(zone)
    start, end = hours
    span = (24 * 60 if end is None else end.hour * 60 + end.minute) - (start.hour * 60 + start.minute)
    day = earliest.astimezone(tz).date() - timedelta(days=1)
    while True:
        closed = day.weekday() not in days or (country is not None and day in calendar(country))
        if not closed:
            for k in range(0, span * 60, interval):
                wall = datetime.combine(day, start) + timedelta(seconds=k)
                moment = wall.replace(tzinfo=tz).astimezone(UTC)
                if moment.astimezone(tz).replace(tzinfo=None) != wall:
                    continue  # a local time the clocks jumped over
                if moment >= earliest:
                    yield moment
        day += timedelta(days=1)


def reference_slot(
    place: tuple[str, str | None],
    days: frozenset[int],
    hours: tuple[time, time | None],
    interval: int,
    cap: int | None,
    campaign_zone: str,
    taken: list[datetime],
    earliest: datetime,
) -> datetime:
    """The first point of the lead's grid that no slot of its domain is within the interval of, on a campaign
    day (in the campaign's zone) with fewer than `cap` slots."""
    campaign_tz = ZoneInfo(campaign_zone)
    for point in grid(place[0], days, hours, place[1], interval, earliest):
        if any(abs(point - other) < timedelta(seconds=interval) for other in taken):
            continue
        day = point.astimezone(campaign_tz).date()
        if cap is not None and sum(other.astimezone(campaign_tz).date() == day for other in taken) >= cap:
            continue
        return point
    raise AssertionError("unreachable: the grid is endless")


near_a_change = st.builds(
    lambda day, seconds: datetime.combine(day, time(0), UTC) + timedelta(seconds=seconds),
    st.sampled_from(CHANGES),
    st.integers(-3 * 86400, 86400),
)
anywhere = st.datetimes(datetime(2026, 1, 1), datetime(2027, 6, 30), timezones=st.just(UTC))
moments = st.one_of(near_a_change, anywhere).map(lambda d: d.replace(microsecond=0))
lead_zones = st.sampled_from([*PLACES, None])  # None: no zone known, the campaign window


@settings(max_examples=400, deadline=None)
@given(
    campaign_zone=st.sampled_from([*PLACES, "UTC"]),
    campaign_holidays=st.sampled_from(["NL", None]),
    days=st.sets(st.integers(0, 6), min_size=1).map(frozenset),
    hours=st.sampled_from([(time(8), time(17)), (time(0), None), (time(1, 30), time(3)),
                           (time(9, 15), time(23, 30))]),
    interval=st.sampled_from([600, 1200, 1800, 3600]),
    cap=st.sampled_from([None, None, 1, 2, 5]),
    leads=st.lists(lead_zones, min_size=1, max_size=16),
    domains=st.integers(1, 3),
    earliest=moments,
)  # fmt: skip
def test_recipient_plans_in_mixed_zones_match_the_reference(
    campaign_zone: str,
    campaign_holidays: str | None,
    days: frozenset[int],
    hours: tuple[time, time | None],
    interval: int,
    cap: int | None,
    leads: list[str | None],
    domains: int,
    earliest: datetime,
) -> None:
    start, end = hours
    campaign = Window(
        campaign_zone, days, start, end or time(0), campaign_holidays, ends_at_midnight=end is None
    )
    windows = {
        i: window
        for i, zone in enumerate(leads)
        if (window := recipient_window(campaign, zone, None, earliest.year)) is not None
    }
    names = [f"d{n}.example" for n in range(domains)]
    schedules = {name: DomainSchedule(campaign, interval, daily_cap=cap) for name in names}
    plan = plan_round_robin(list(range(len(leads))), names, schedules, earliest, windows=windows)

    taken: dict[str, list[datetime]] = {name: [] for name in names}
    campaign_tz = ZoneInfo(campaign_zone)
    for (lead, domain, slot), zone in zip(plan, leads, strict=True):
        assert slot is not None
        # A campaign that skips no holidays skips none of its leads' either.
        place = (
            (zone, PLACES[zone] if campaign_holidays else None)
            if zone
            else (campaign_zone, campaign_holidays)
        )
        # Inside its lead's local window, on an open local day of its lead's calendar.
        local = slot.start.astimezone(ZoneInfo(place[0]))
        assert local.weekday() in days
        assert place[1] is None or local.date() not in calendar(place[1])
        assert start <= local.time() < (end or time.max)
        # The earliest slot free for it, given the slots taken before it.
        expected = reference_slot(place, days, hours, interval, cap, campaign_zone, taken[domain], earliest)
        assert slot.start == expected, (lead, zone)
        taken[domain].append(slot.start)
    for name, starts in taken.items():
        ordered = sorted(starts)
        assert all(b - a >= timedelta(seconds=interval) for a, b in pairwise(ordered)), name
        per_day = [s.astimezone(campaign_tz).date() for s in ordered]
        assert cap is None or all(per_day.count(day) <= cap for day in per_day), name
