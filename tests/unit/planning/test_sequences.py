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
from shared.sequences import (
    FREE_MAIL,
    Condition,
    Evidence,
    Step,
    StopRules,
    apply_edit,
    at_dispatch,
    editable,
)
from tests.unit.planning.test_mixed_zones import CHANGES
from tests.unit.planning.test_slots import moments, reference_first_grid_point, reference_in_window

# A lead opens, clicks or replies this long after an e-mail: before its next step falls due (a day on at
# least, 23 hours over a clock change), and never at a slot's moment (slots are on the window's :00/:30 grid).
LAG = timedelta(minutes=17)


@dataclass
class Lead:
    domain: str  # the sending domain of its thread
    company: str  # its own e-mail domain
    window: Window  # its own (recipient mode, a zone known), else the campaign's
    # The step whose e-mail the lead reacts to (opens as a person, clicks, replies, auto-replies), if any.
    opens_after: int | None
    clicks_after: int | None
    replies_after: int | None
    auto_replies_after: int | None
    slots: dict[int, Reservation] = field(default_factory=dict)  # every planned step's slot
    sent: dict[int, datetime] = field(default_factory=dict)
    dues: dict[int, datetime] = field(default_factory=dict)
    # What became of each planned step: "send", "skip" or "stop" (`at_dispatch`), "replied" (a reply cancels).
    outcome: dict[int, str] = field(default_factory=dict)

    def reacted(self, after: int | None, by: datetime) -> bool:
        """Whether the lead reacted to its step `after` before `by`: only a sent e-mail draws a reaction."""
        return after in self.sent and self.sent[after] + LAG < by


def reference_due(window: Window, basis: datetime, days: int) -> datetime:
    """Calendar days at the same wall-clock time, written with zoneinfo alone."""
    local = basis.astimezone(ZoneInfo(window.timezone))
    naive = datetime.combine(local.date() + timedelta(days=days), local.time())
    return naive.replace(tzinfo=ZoneInfo(window.timezone))


def reference_course(
    lead: Lead, colleagues: list[Lead], steps: list[tuple[int, Condition]], rules: StopRules
) -> dict[int, str]:
    """What must become of each step of the lead, from the rules as the README states them and not through
    `at_dispatch`: the first e-mail goes; a reply cancels the next step and ends the sequence; at a due step
    the stop rules come first (a click, an automatic reply, or a reply by a colleague at a company domain
    before the step's slot) and end the sequence; then a condition that fails (a human open, a click of a step
    that went) skips the step, and the sequence goes on."""
    course: dict[int, str] = {}
    for position in range(len(steps) + 1):
        if position not in lead.slots:
            course[position] = "never planned"
            break
        went = {p for p, action in course.items() if action == "send"}
        if position == 0:
            course[position] = "send"
            continue
        if lead.replies_after in went:
            course[position] = "replied"
            break
        slot = lead.slots[position].start
        company = lead.company not in FREE_MAIL and any(c.reacted(c.replies_after, slot) for c in colleagues)
        if (
            (rules.click and lead.clicks_after in went)
            or (rules.auto_reply and lead.auto_replies_after in went)
            or (rules.company_reply and company)
        ):
            course[position] = "stop"
            break
        condition = steps[position - 1][1]
        if (condition == Condition.NOT_OPENED and lead.opens_after in went) or (
            condition == Condition.NOT_CLICKED and lead.clicks_after in went
        ):
            course[position] = "skip"
        else:
            course[position] = "send"
    return course


conditions = st.sampled_from(list(Condition))
sequences = st.lists(st.tuples(st.integers(1, 9), conditions), min_size=1, max_size=5)
reaction = st.one_of(st.none(), st.integers(0, 4))
behaviours = st.tuples(reaction, reaction, reaction, reaction)
# Two company domains (colleagues) and a free-mail one, where two leads are no colleagues.
companies = st.sampled_from(["acme.example", "globex.example", "gmail.com"])
stop_rules = st.builds(StopRules, auto_reply=st.booleans(), click=st.booleans(), company_reply=st.booleans())


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
    leads=st.lists(st.tuples(behaviours, lead_zones, companies), min_size=1, max_size=8),
    earliest=st.one_of(moments, before_a_change),
    interval=st.sampled_from([1800, 3600]),
    domains=st.integers(1, 3),
    timezone=st.sampled_from(["Europe/Amsterdam", "America/New_York"]),
    rules=stop_rules,
    recipient=st.booleans(),
)
def test_random_sequences_keep_the_throttle_the_window_the_domain_and_the_rules(
    steps: list[tuple[int, Condition]],
    leads: list[tuple[tuple[int | None, int | None, int | None, int | None], str | None, str]],
    earliest: datetime,
    interval: int,
    domains: int,
    timezone: str,
    rules: StopRules,
    recipient: bool,
) -> None:
    window = Window(timezone, frozenset(range(5)), time(8), time(17), "NL")
    names = [f"d{i}.example" for i in range(domains)]
    schedules = {name: DomainSchedule(window, interval) for name in names}
    own = {
        i: found
        for i, (_, zone, _) in enumerate(leads)
        if recipient and (found := recipient_window(window, zone, None, earliest.year)) is not None
    }
    plan = plan_round_robin(list(range(len(leads))), names, schedules, earliest, windows=own)
    state = [
        Lead(domain, company, own.get(i, window), *behaviour)
        for (i, domain, _), (behaviour, _, company) in zip(plan, leads, strict=True)
    ]
    # Every planned step, in slot order: what the dispatcher meets as time goes by.
    queue: list[tuple[datetime, int, int]] = []
    for index, (_, _, first) in enumerate(plan):
        assert first is not None
        state[index].slots[0] = first
        heapq.heappush(queue, (first.start, index, 0))
    while queue:
        at, index, position = heapq.heappop(queue)
        lead = state[index]
        if lead.reacted(lead.replies_after, at):
            lead.outcome[position] = "replied"  # a reply cancels what is planned, at once
            continue
        action = "send"  # the first e-mail is not checked at dispatch
        if position:
            # What the scheduler's query gathers by the step's slot (services/scheduler/repository.py).
            colleague_replied = any(
                o.reacted(o.replies_after, at) for o in state if o is not lead and o.company == lead.company
            )
            evidence = Evidence(
                opened_human=lead.reacted(lead.opens_after, at),
                clicked=lead.reacted(lead.clicks_after, at),
                auto_replied=lead.reacted(lead.auto_replies_after, at),
                company_replied=colleague_replied and lead.company not in FREE_MAIL,
            )
            verdict = at_dispatch(steps[position - 1][1], rules, evidence)
            action = verdict.action
            assert (verdict.reason is None) == (action == "send")  # a cancelled step says why
        lead.outcome[position] = action
        if action == "stop":
            continue
        if action == "send":
            lead.sent[position] = at
        if position == len(steps):
            continue
        delay = steps[position][0]
        due = followup_due(lead.window, at, delay)
        lead.dues[position + 1] = due
        slot = schedules[lead.domain].take(due, window=own.get(index))
        lead.slots[position + 1] = slot
        heapq.heappush(queue, (slot.start, index, position + 1))

    # Every step met the fate the rules give it, and nothing was planned after a sequence ended. Checked
    # before the slots, whose minute-by-minute reference is slow, so that a failure shrinks quickly.
    for lead in state:
        colleagues = [o for o in state if o is not lead and o.company == lead.company]
        assert lead.outcome == reference_course(lead, colleagues, steps, rules)

    every_slot = {name: sorted(s.start for lead in state if lead.domain == name for s in lead.slots.values())
                  for name in names}  # fmt: skip
    for name, starts in every_slot.items():
        assert all(b - a >= timedelta(seconds=interval) for a, b in pairwise(starts)), name
    for lead in state:
        for position, due in lead.dues.items():
            previous = position - 1
            basis = lead.slots[previous].start  # sent or skipped at its slot
            assert due == reference_due(lead.window, basis, steps[previous][0])
            start = lead.slots[position].start
            assert start >= due
            assert reference_in_window(start, lead.window)
            # Every earlier grid point from the due moment on was taken by another slot of the domain.
            point = reference_first_grid_point(lead.window, due, interval)
            others = [s for s in every_slot[lead.domain] if s != start]
            while point < start:
                assert any(abs(point - other) < timedelta(seconds=interval) for other in others)
                point = reference_first_grid_point(lead.window, point + timedelta(minutes=1), interval)


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
