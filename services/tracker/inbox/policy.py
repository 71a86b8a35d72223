"""Pure decisions of the mailbox reader."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, datetime, timedelta


def backoff(failures: int, schedule: Sequence[float]) -> float:
    """Seconds to wait before connecting again after `failures` failures in a row (0: none yet); the last
    step of the schedule repeats."""
    if failures <= 0 or not schedule:
        return 0.0
    return float(schedule[min(failures, len(schedule)) - 1])


def fair_share(accounts: int, readers: int, ceiling: int) -> int:
    """How many accounts one of `readers` live reader processes should hold, so that they share them out."""
    return min(ceiling, math.ceil(accounts / max(1, readers)))


def first_day(created_at: datetime, lookback_days: int) -> date:
    """A folder seen for the first time is read from mail received since this day (IMAP SEARCH SINCE has day
    granularity): replies to campaigns sent shortly before the mailbox was connected still count."""
    return (created_at - timedelta(days=lookback_days)).date()
