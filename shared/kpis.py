"""KPI arithmetic (SPEC §2.6, §7): rates and tempo from the stored counters. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from shared.planning.window import Window
from shared.planning.zones import WindowMode

# The timeline's columns, per local day.
DAY_COLUMNS = ("planned", "sent", "opened", "bounced", "replied", "clicked", "complained")


@dataclass(frozen=True)
class Counters:
    planned: int = 0
    cancelled: int = 0
    sent: int = 0
    opened: int = 0
    opened_human: int = 0
    bounced: int = 0
    bounced_at_smtp: int = 0
    failed: int = 0
    unsubscribed: int = 0
    replied: int = 0  # messages with a human reply
    clicked: int = 0  # messages with a click
    complained: int = 0  # leads that complained about a message of the campaign
    first_sent_at: datetime | None = None
    last_sent_at: datetime | None = None


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _hours_on_sending_days(
    window: Window, days: Mapping[date, Mapping[str, int]], first: datetime, last: datetime
) -> float:
    """Hours between two moments on the window's local days that had a send."""
    total = timedelta()
    for day, row in days.items():
        if row.get("sent"):
            begins, ends = window.begins(day), window.begins(day + timedelta(days=1))
            total += max(timedelta(), min(ends, last) - max(begins, first))
    return total / timedelta(hours=1)


def kpis(
    counters: Counters,
    window: Window,
    mode: str = WindowMode.CAMPAIGN,
    days: Mapping[date, Mapping[str, int]] | None = None,
) -> dict[str, Any]:
    """The campaign's figures. The tempo is messages sent per hour of sending, at least one hour: in campaign
    mode the hours the campaign `window` was open between the first and the last send; in recipient mode,
    whose sends fall in the leads' own windows (many, and spread around the clock), the hours between them
    on the window's local days that had a send (`days`: the timeline's): idle days (weekends, holidays) do
    not count, the hours of a sending day outside every lead's window do."""
    hours = 1.0
    first, last = counters.first_sent_at, counters.last_sent_at
    if first and last:
        if mode == WindowMode.RECIPIENT:
            hours = max(1.0, _hours_on_sending_days(window, days or {}, first, last))
        else:
            hours = max(1.0, window.open_hours_between(first, last))
    return {
        "total_planned": counters.planned,
        "total_cancelled": counters.cancelled,
        "total_sent": counters.sent,
        "total_opened": counters.opened,
        "total_opened_human": counters.opened_human,
        "open_rate": _rate(counters.opened, counters.sent),
        "open_rate_human": _rate(counters.opened_human, counters.sent),
        "total_bounced": counters.bounced,
        "bounce_rate": _rate(counters.bounced, counters.sent + counters.bounced_at_smtp),
        "total_failed": counters.failed,
        "total_unsubscribed": counters.unsubscribed,
        "total_replied": counters.replied,
        "reply_rate": _rate(counters.replied, counters.sent),
        "total_clicked": counters.clicked,
        "click_rate": _rate(counters.clicked, counters.sent),
        "total_complained": counters.complained,
        "complaint_rate": _rate(counters.complained, counters.sent),
        "avg_tempo_per_hour": counters.sent / hours,
    }


def timeline(days: dict[date, dict[str, int]], today: date) -> list[dict[str, Any]]:
    """Every local day from the first to the last planned day (or today, if earlier), zeros included."""
    planned_days = [d for d, row in days.items() if row.get("planned")] or list(days)
    if not planned_days:
        return []
    first, last = min(planned_days), max(planned_days)
    last = min(last, max(today, first))
    zero = dict.fromkeys(DAY_COLUMNS, 0)
    return [
        {"date": first + timedelta(days=i), **zero, **days.get(first + timedelta(days=i), {})}
        for i in range((last - first).days + 1)
    ]
