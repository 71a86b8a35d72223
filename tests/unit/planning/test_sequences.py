"""Sequences planned step by step through the planner's building blocks, as the scheduler runs them (each step
planned when the previous one is sent or skipped, checked at dispatch), against an independent reference."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.planning import DomainSchedule, Reservation, Window, plan_round_robin
from shared.planning.slots import followup_due
from shared.planning.zones import recipient_window
from shared.sequences import Condition, Evidence, Step, StopRules, apply_edit, at_dispatch, editable
from tests.unit.planning.test_mixed_zones import CHANGES
from tests.unit.planning.test_slots import moments, reference_first_grid_point, reference_in_window


@dataclass
class Lead:
    domain: str
    window: Window  # its own (recipient mode, a zone known), else the campaign's
    opens_after: int | None  # the step whose e-mail the lead opens (a person), if any
    clicks_after: int | None
    replies_after: int | None
    slots: dict[int, Reservation] = field(default_factory=dict)  # every planned step's slot
    sent: dict[int, datetime] = field(default_factory=dict)
    skipped: set[int] = field(default_factory=set)
    stopped: int | None = None
    dues: dict[int, datetime] = field(default_factory=dict)


def reference_due(window: Window, basis: datetime, days: int) -> datetime:
    """Calendar days at the same wall-clock time, written with zoneinfo alone."""
    local = basis.astimezone(ZoneInfo(window.timezone))
    naive = datetime.combine(local.date() + timedelta(days=days), local.time())
    return naive.replace(tzinfo=ZoneInfo(window.timezone))


conditions = st.sampled_from(list(Condition))
sequences = st.lists(st.tuples(st.integers(1, 9), conditions), min_size=1, max_size=5)
behaviours = st.tuples(
    st.one_of(st.none(), st.integers(0, 4)),
    st.one_of(st.none(), st.integers(0, 4)),
    st.one_of(st.none(), st.integers(0, 4)),
)


# Half the examples start within ten days before a clock change of one of the zones (2026), where a step's
# same local time is a different UTC time in one zone than in another.
before_a_change = st.builds(
    lambda day, seconds: datetime.combine(day, time(0), UTC) - timedelta(seconds=seconds),
    st.sampled_from(CHANGES),
    st.integers(0, 10 * 86400),
)
# Recipient mode: the leads' zones (None: no zone known, the campaign window), a :30 one and a southern one.
lead_zones = st.sampled_from(
    [None, "Europe/Amsterdam", "America/New_York", "Asia/Kolkata", "Australia/Sydney"]
)


@settings(max_examples=120, deadline=None)
@given(
    steps=sequences,
    leads=st.lists(st.tuples(behaviours, lead_zones), min_size=1, max_size=8),
    earliest=st.one_of(moments, before_a_change),
    interval=st.sampled_from([1800, 3600]),
    domains=st.integers(1, 3),
    timezone=st.sampled_from(["Europe/Amsterdam", "America/New_York"]),
    stop_on_click=st.booleans(),
    recipient=st.booleans(),
)
def test_random_sequences_keep_the_throttle_the_window_the_domain_and_the_rules(
    steps: list[tuple[int, Condition]],
    leads: list[tuple[tuple[int | None, int | None, int | None], str | None]],
    earliest: datetime,
    interval: int,
    domains: int,
    timezone: str,
    stop_on_click: bool,
    recipient: bool,
) -> None:
    window = Window(timezone, frozenset(range(5)), time(8), time(17), "NL")
    names = [f"d{i}.example" for i in range(domains)]
    schedules = {name: DomainSchedule(window, interval) for name in names}
    rules = StopRules(click=stop_on_click)
    own = {
        i: found
        for i, (_, zone) in enumerate(leads)
        if recipient and (found := recipient_window(window, zone, None, earliest.year)) is not None
    }
    plan = plan_round_robin(list(range(len(leads))), names, schedules, earliest, windows=own)
    state = [
        Lead(domain, own.get(i, window), *behaviour)
        for (i, domain, _), (behaviour, _) in zip(plan, leads, strict=True)
    ]
    # Every planned step, in slot order: what the dispatcher meets as time goes by.
    queue: list[tuple[datetime, int, int]] = []
    for lead, (_, _, slot) in enumerate(plan):
        assert slot is not None
        state[lead].slots[0] = slot
        heapq.heappush(queue, (slot.start, lead, 0))
    while queue:
        at, index, position = heapq.heappop(queue)
        lead = state[index]
        done = [p for p in lead.sent if p < position]
        if lead.replies_after is not None and lead.replies_after in done:
            lead.stopped = position  # a reply cancels what is planned, at once
            continue
        evidence = Evidence(opened_human=lead.opens_after in done, clicked=lead.clicks_after in done)
        condition = steps[position - 1][1] if position else Condition.ALWAYS
        verdict = at_dispatch(condition, rules, evidence)
        if verdict.action == "stop":
            lead.stopped = position
            continue
        if verdict.action == "skip":
            lead.skipped.add(position)
        else:
            lead.sent[position] = at
        if position == len(steps):
            continue
        delay = steps[position][0]
        due = followup_due(lead.window, at, delay)
        lead.dues[position + 1] = due
        slot = schedules[lead.domain].take(due, window=own.get(index))
        lead.slots[position + 1] = slot
        heapq.heappush(queue, (slot.start, index, position + 1))

    every_slot = {name: sorted(s.start for lead in state if lead.domain == name for s in lead.slots.values())
                  for name in names}  # fmt: skip
    for name, starts in every_slot.items():
        assert all(b - a >= timedelta(seconds=interval) for a, b in pairwise(starts)), name
    for lead in state:
        for position, due in lead.dues.items():
            previous = position - 1
            basis = lead.slots[previous].start  # sent or skipped at its slot
            assert due == reference_due(lead.window, basis, steps[previous][0])
            slot = lead.slots[position].start
            assert slot >= due
            assert reference_in_window(slot, lead.window)
            # Every earlier grid point from the due moment on was taken by another slot of the domain.
            point = reference_first_grid_point(lead.window, due, interval)
            others = [s for s in every_slot[lead.domain] if s != slot]
            while point < slot:
                assert any(abs(point - other) < timedelta(seconds=interval) for other in others)
                point = reference_first_grid_point(lead.window, point + timedelta(minutes=1), interval)
        # Nothing after a reply, a stop, or the last step; a skipped step is never sent.
        planned = sorted(lead.slots)
        assert planned == list(range(len(planned)))
        assert not lead.skipped & set(lead.sent)
        if lead.replies_after is not None and lead.replies_after in lead.sent:
            assert max(planned) <= lead.replies_after + 1
        if lead.stopped is not None:
            assert max(planned) == lead.stopped
        for position in lead.skipped:
            condition = steps[position - 1][1]
            seen = {p for p in lead.sent if p < position}
            if condition == Condition.NOT_OPENED:
                assert lead.opens_after in seen
            else:
                assert condition == Condition.NOT_CLICKED
                assert lead.clicks_after in seen


@given(
    current=st.integers(0, 6),
    wanted=st.integers(0, 6),
    reached=st.integers(0, 6),
)
def test_an_edit_keeps_every_step_some_lead_reached_and_replaces_the_rest(
    current: int, wanted: int, reached: int
) -> None:
    old = [Step(p, "old", p) for p in range(1, current + 1)]
    new = [Step(p, "new", 10 + p) for p in range(1, wanted + 1)]
    edited = apply_edit(old, new, reached)
    first = editable(old, reached)
    assert [s.position for s in edited] == list(range(1, len(edited) + 1))
    assert all(s.template_id == "old" for s in edited if s.position < first)
    assert all(s.template_id == "new" for s in edited if s.position >= first)
    assert len([s for s in edited if s.position < first]) == min(current, reached)
