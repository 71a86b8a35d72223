"""What a dry-run reports about a plan (SPEC §3, §7). Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from shared.planning.slots import Reservation
from shared.planning.window import Window
from shared.planning.zones import WindowMode, ZonelessWindow

MAX_SLOTS = 1000
STEPS_NOTE = (
    "Expected if no lead replies, bounces, unsubscribes or meets a stop rule or a step's condition, which a"
    " dry-run cannot know: each step counted on the first open window day at or after its delay, before the"
    " sending domains' throttle, which may move it later."
)


def summarize(
    planned: Sequence[tuple[Any, str, Reservation]],
    window: Window,
    delays: Sequence[int],
    mode: str = WindowMode.CAMPAIGN,
    windows: Mapping[Any, Window] | None = None,
) -> dict[str, Any]:
    """`planned` is (lead id, domain name, slot) in audience order; `delays` the sequence's steps'; `mode` the
    campaign's window mode and `windows` the leads' own windows in `recipient` mode, where they have one
    (`leads_without_zone`: how many had none, and got the campaign window)."""
    starts = [slot.start for _, _, slot in planned]
    # Leads share slot times (one on each domain), and in recipient mode windows: what follows is worked out
    # once per slot time, or per (lead's window, slot time), not per lead.
    per_start = Counter(starts)
    per_day: Counter[date] = Counter()
    for start, n in per_start.items():
        per_day[window.local_date(start)] += n
    without_zone = None
    if mode == WindowMode.RECIPIENT:
        own = windows or {}
        moments = Counter(zip(map(own.get, (lead for lead, _, _ in planned)), starts, strict=True))
        steps = expected_steps_of_leads(moments, window, delays)
        without_zone = sum(
            n
            for (own_window, _), n in moments.items()
            if own_window is None or isinstance(own_window, ZonelessWindow)
        )
    else:
        steps = expected_steps(per_day, window, delays)
    return {
        "window_mode": mode,
        "leads_without_zone": without_zone,
        "total_messages": len(planned),
        "first_send_at": min(per_start, default=None),
        "last_send_at": max(per_start, default=None),
        "per_domain": dict(Counter(domain for _, domain, _ in planned)),
        "per_day": _days(per_day),
        "slots": [
            {"lead_id": str(lead), "domain": domain, "scheduled_at": slot.start}
            for lead, domain, slot in planned[:MAX_SLOTS]
        ],
        "followups_expected": steps[0]["count"] if steps else 0,
        "steps_expected": steps,
        "steps_note": STEPS_NOTE,
    }


def expected_steps(
    per_day: Mapping[date, int], window: Window, delays: Sequence[int]
) -> list[dict[str, Any]]:
    """Each step's messages per local day, were every lead to get every step: a step falls `delay` calendar
    days after the previous one at the same local time (inside the window's hours, as the previous was), on
    the next open day of the window when that day is closed."""
    steps, days = [], dict(per_day)
    for position, delay in enumerate(delays, 1):
        moved: Counter[date] = Counter()
        for day, n in days.items():
            moved[_open_from(window, day + timedelta(days=delay))] += n
        steps.append({"step": position, "count": sum(moved.values()), "per_day": _days(moved)})
        days = moved
    return steps


def expected_steps_of_leads(
    moments: Mapping[tuple[Window | None, datetime], int], window: Window, delays: Sequence[int]
) -> list[dict[str, Any]]:
    """`expected_steps` lead by lead, each in its own window (the campaign's where it has none), counted per
    local day of the campaign window: a step at a lead's local time may fall on another day there.
    `moments`: how many leads of each window (None: the campaign's) have their first message at each moment;
    the result is that of counting each lead on its own."""
    counts: list[Counter[date]] = [Counter() for _ in delays]
    # A lead's steps' days follow from its window and local day alone: worked out once for each.
    step_days: dict[tuple[Window, date], list[date]] = {}
    for (lead_window, start), n in moments.items():
        own = lead_window or window
        local = start.astimezone(own.zone)
        first = local.date()
        days = step_days.get((own, first))
        if days is None:
            days = step_days[own, first] = _step_days(own, first, delays)
        at = local.timetz()  # its zone, and which of a repeated hour's two runs it is in
        for counted, day in zip(counts, days, strict=True):
            counted[window.local_date(datetime.combine(day, at))] += n
    return [
        {"step": position, "count": sum(counted.values()), "per_day": _days(counted)}
        for position, counted in enumerate(counts, 1)
    ]


def _step_days(window: Window, first: date, delays: Sequence[int]) -> list[date]:
    """The local day of each step after a first message on `first`: `delay` days after the previous step,
    on the window's next open day when that day is closed."""
    days, day = [], first
    for delay in delays:
        day = _open_from(window, day + timedelta(days=delay))
        days.append(day)
    return days


def _open_from(window: Window, day: date) -> date:
    """The first open day of the window at or after `day` (a window has at least one open weekday)."""
    for _ in range(366 * 2):
        if window.is_open_day(day):
            return day
        day += timedelta(days=1)
    return day  # a window shut for two years by holidays alone: the throttle's planner will say so


def _days(per_day: Mapping[date, int]) -> list[dict[str, Any]]:
    return [{"date": day, "count": n} for day, n in sorted(per_day.items())]
