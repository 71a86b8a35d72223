"""Pure decisions of the mailbox reader."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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


def runs(uids: Sequence[int], sizes: Mapping[int, int], most_mails: int, most_bytes: int) -> list[list[int]]:
    """The UIDs in order, cut into runs of at most `most_mails` mails and `most_bytes` bytes, each fetched in
    one command and recorded in one transaction; a mail larger than `most_bytes` is a run of its own. `sizes`
    holds the mails to fetch: one it lacks (too large, expunged) weighs nothing."""
    cut: list[list[int]] = []
    run: list[int] = []
    held = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if run and (len(run) >= most_mails or held + size > most_bytes):
            cut.append(run)
            run, held = [], 0
        run.append(uid)
        held += size
    return [*cut, run] if run else cut
