"""The dry-run's summary, worked out once per slot time and lead window, against the straightforward count
lead by lead: each lead's first message counted on its campaign day, and each of its steps `delay` days
after the previous one at the same local time in the lead's own window (the next open day there when that
day is closed), counted on the campaign day that moment falls on."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.planning.slots import Reservation
from shared.planning.summary import summarize
from shared.planning.window import Window
from shared.planning.zones import ZonelessWindow

ZONES = ["Europe/Amsterdam", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "Pacific/Chatham", "UTC"]
# Around the clock changes of 2026 in Europe, North America and Australia (a repeated or missing hour).
BASES = [datetime(2026, m, d, tzinfo=UTC) for m, d in ((3, 7), (3, 28), (10, 3), (10, 24), (10, 31))]


@st.composite
def windows(draw: st.DrawFn) -> Window:
    start = draw(st.integers(0, 22))
    end = draw(st.one_of(st.none(), st.integers(start + 1, 23)))  # None: until midnight
    kind = draw(st.sampled_from([Window, ZonelessWindow]))  # a lead's own zone, or the campaign's hours
    return kind(
        timezone=draw(st.sampled_from(ZONES)),
        days=frozenset(draw(st.sets(st.integers(0, 6), min_size=1))),
        start=time(start),
        end=time(0) if end is None else time(end),
        holidays=draw(st.sampled_from([None, "NL", "US", "AU"])),
        ends_at_midnight=end is None,
    )


@st.composite
def plans(draw: st.DrawFn) -> tuple[list[tuple[int, str, Reservation]], dict[int, Window]]:
    """Leads at a few shared moments (as a plan puts several domains' leads at one slot time) and some of
    their own, some with a window of their own, drawn from a few."""
    base = draw(st.sampled_from(BASES))
    offsets = st.integers(0, 3 * 24 * 3600 // 60).map(lambda minutes: base + timedelta(minutes=minutes))
    moments = draw(st.lists(offsets, min_size=1, max_size=6))
    own = draw(st.lists(windows(), min_size=1, max_size=3))
    planned, lead_windows = [], {}
    for lead in range(draw(st.integers(0, 40))):
        start = draw(st.one_of(st.sampled_from(moments), offsets))
        planned.append((lead, draw(st.sampled_from(["a.example", "b.example"])), Reservation(start, start)))
        if (window := draw(st.one_of(st.none(), st.sampled_from(own)))) is not None:
            lead_windows[lead] = window
    return planned, lead_windows


def lead_by_lead(
    planned: list[tuple[int, str, Reservation]],
    window: Window,
    delays: list[int],
    mode: str,
    lead_windows: dict[int, Window],
) -> dict[str, Any]:
    per_day: Counter[date] = Counter()
    steps: list[Counter[date]] = [Counter() for _ in delays]
    for lead, _, slot in planned:
        per_day[window.local_date(slot.start)] += 1
        own = lead_windows.get(lead, window) if mode == "recipient" else window
        local = slot.start.astimezone(own.zone)
        day = local.date()
        for counted, delay in zip(steps, delays, strict=True):
            day += timedelta(days=delay)
            while not own.is_open_day(day):
                day += timedelta(days=1)
            counted[window.local_date(datetime.combine(day, local.timetz()))] += 1

    def days(counted: Counter[date]) -> list[dict[str, Any]]:
        return [{"date": day, "count": n} for day, n in sorted(counted.items())]

    starts = [slot.start for _, _, slot in planned]
    return {
        "leads_without_zone": sum(type(lead_windows.get(lead)) is not Window for lead, _, _ in planned)
        if mode == "recipient"
        else None,
        "first_send_at": min(starts, default=None),
        "last_send_at": max(starts, default=None),
        "per_day": days(per_day),
        "steps_expected": [
            {"step": position, "count": sum(counted.values()), "per_day": days(counted)}
            for position, counted in enumerate(steps, 1)
        ],
    }


@settings(max_examples=300, deadline=None)
@given(
    window=windows(),
    plan=plans(),
    delays=st.lists(st.integers(0, 200), max_size=4),
    mode=st.sampled_from(["campaign", "recipient"]),
)
def test_the_summary_counts_as_lead_by_lead(
    window: Window,
    plan: tuple[list[tuple[int, str, Reservation]], dict[int, Window]],
    delays: list[int],
    mode: str,
) -> None:
    planned, lead_windows = plan
    summary = summarize(planned, window, delays, mode, lead_windows)
    assert {key: summary[key] for key in lead_by_lead(planned, window, delays, mode, lead_windows)} == (
        lead_by_lead(planned, window, delays, mode, lead_windows)
    )
