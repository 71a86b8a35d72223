"""What a dry-run reports about a plan (SPEC §3, §7). Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from shared.planning.slots import Reservation
from shared.planning.window import Window

MAX_SLOTS = 1000


def summarize(
    planned: Sequence[tuple[Any, str, Reservation]], window: Window, followups: bool
) -> dict[str, Any]:
    """`planned` is (lead id, domain name, slot) in audience order."""
    starts = [slot.start for _, _, slot in planned]
    per_day = Counter(window.local_date(start) for start in starts)
    return {
        "total_messages": len(planned),
        "first_send_at": min(starts, default=None),
        "last_send_at": max(starts, default=None),
        "per_domain": dict(Counter(domain for _, domain, _ in planned)),
        "per_day": [{"date": day, "count": n} for day, n in sorted(per_day.items())],
        "slots": [
            {"lead_id": str(lead), "domain": domain, "scheduled_at": slot.start}
            for lead, domain, slot in planned[:MAX_SLOTS]
        ],
        "followups_expected": len(planned) if followups else 0,
    }
