"""Adaptive pacing per receiving provider: the pace rules, and the planner keeping them, against an
independent reference written from the issue's words."""

from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.planning import DomainSchedule, Window, plan_round_robin
from shared.planning.pacing import Pace, PaceRules, Slowdown, after_deferral
from shared.planning.warmup import Warmup

RULES = PaceRules(cap_seconds=14400, floor_seconds=60, quiet_seconds=3600)
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ALWAYS = Window(timezone="UTC", days=frozenset(range(7)), start=Window().start.replace(hour=0), holidays=None)


def reference_interval(pace: Pace, normal: int, rules: PaceRules, at: datetime) -> int:
    """From the slowing on, the interval halves at the end of each quiet period (quiet_seconds, and at least
    two of the intervals it ends); back to the domain's own interval once the pace is no slower than it, or
    under the floor. Before the slowing there is none."""
    if at < pace.slowed_at:
        return normal
    interval, ends = pace.interval_seconds, pace.slowed_at
    while True:
        if interval <= normal or interval < rules.floor_seconds:
            return normal
        ends += timedelta(seconds=max(rules.quiet_seconds, 2 * interval))
        if at < ends:
            return interval
        interval //= 2


def test_a_first_deferral_doubles_the_domains_own_interval() -> None:
    assert after_deferral(None, 1200, RULES, T0, T0) == Pace(2400, T0)


def test_a_domain_without_interval_is_slowed_to_the_floor_first() -> None:
    assert after_deferral(None, 0, RULES, T0, T0) == Pace(60, T0)


@pytest.mark.parametrize(
    ("normal", "deferrals", "expected"),
    [(1200, 1, 2400), (1200, 2, 4800), (1200, 3, 9600), (1200, 4, 14400), (1200, 9, 14400), (0, 3, 240)],
)
def test_each_deferral_after_the_interval_doubles_up_to_the_cap(
    normal: int, deferrals: int, expected: int
) -> None:
    pace, at = None, T0
    for _ in range(deferrals):
        pace = after_deferral(pace, normal, RULES, at + timedelta(seconds=1), at)
        # The next send to the provider keeps the pace, less a quarter (a send may start late by that).
        at += timedelta(seconds=pace.interval_seconds * 3 / 4)
    assert pace is not None
    assert pace.interval_seconds == expected


def test_deferrals_of_attempts_begun_before_the_slowing_count_once() -> None:
    began = T0 - timedelta(seconds=2)
    first = after_deferral(None, 0, RULES, T0, began)
    # Seven more answers to e-mails that were on their way together with the first.
    pace = first
    for second in range(1, 8):
        pace = after_deferral(pace, 0, RULES, T0 + timedelta(seconds=second), began)
    assert pace.interval_seconds == first.interval_seconds == 60
    assert pace.slowed_at == T0 + timedelta(seconds=7)  # but the quiet period starts anew
    # An attempt begun after the slowing (at its pace) that is deferred again slows it down further.
    assert after_deferral(pace, 0, RULES, T0 + timedelta(seconds=50), T0 + timedelta(seconds=49)) == Pace(
        120, T0 + timedelta(seconds=50)
    )


def test_the_pace_halves_after_each_quiet_period_down_to_the_domains_own_interval() -> None:
    slowdown = Slowdown(Pace(4800, T0), 1200, PaceRules(14400, 60, quiet_seconds=3 * 3600))
    hours = [slowdown.interval_at(T0 + timedelta(hours=h)) for h in range(0, 10)]
    assert hours == [4800] * 3 + [2400] * 3 + [1200] * 4
    assert slowdown.recovered_at() == T0 + timedelta(hours=6)
    assert not slowdown.is_slowed(T0 + timedelta(hours=6))
    assert slowdown.next_change(T0 + timedelta(minutes=5)) == T0 + timedelta(hours=3)


def test_a_quiet_period_lasts_at_least_two_intervals() -> None:
    # An hour of quiet, but at 4800 s one e-mail could hardly have gone through: the pace eases after 9600 s.
    slowdown = Slowdown(Pace(4800, T0), 1200, RULES)
    assert slowdown.interval_at(T0 + timedelta(seconds=9599)) == 4800
    assert slowdown.interval_at(T0 + timedelta(seconds=9600)) == 2400
    assert slowdown.recovered_at() == T0 + timedelta(seconds=9600 + 4800)


def test_the_pace_never_loosens_the_domains_throttle() -> None:
    # The domain's interval was raised above the provider's pace since: the domain's own interval holds.
    assert Slowdown(Pace(2400, T0), 3600, RULES).interval_at(T0) == 3600
    later = T0 + timedelta(hours=2)
    assert after_deferral(Pace(2400, T0), 3600, RULES, later, later).interval_seconds == 7200


@settings(max_examples=300, deadline=None)
@given(
    interval=st.integers(1, 20000),
    normal=st.sampled_from([0, 60, 300, 1200, 3600]),
    quiet=st.sampled_from([60, 600, 3600]),
    later=st.integers(-3600, 200000),
)
def test_the_pace_in_force_matches_the_reference(interval: int, normal: int, quiet: int, later: int) -> None:
    rules = PaceRules(14400, 60, quiet)
    pace = Pace(interval, T0)
    at = T0 + timedelta(seconds=later)
    assert Slowdown(pace, normal, rules).interval_at(at) == reference_interval(pace, normal, rules, at)


# The planner keeps the pace: two slots of one domain to one slowed provider are never closer than the
# provider's interval at the later one, and the domain's throttle and daily caps still hold.
providers = st.sampled_from(["google.com", "outlook.com", "fastmail.com"])  # the last is never slowed


@settings(max_examples=200, deadline=None)
@given(
    interval=st.sampled_from([0, 60, 300, 1200]),
    paces=st.lists(st.tuples(st.integers(60, 14400), st.integers(-7200, 3600)), min_size=2, max_size=2),
    quiet=st.sampled_from([600, 3600, 86400]),
    sent_before=st.lists(st.integers(-14400, 14400), max_size=4),
    leads=st.lists(providers, min_size=1, max_size=40),
    cap=st.one_of(st.none(), st.integers(3, 30)),
    split=st.integers(0, 40),
)
def test_slots_to_a_slowed_provider_keep_its_pace_and_the_domain_throttle_holds(
    interval: int,
    paces: list[tuple[int, int]],
    quiet: int,
    sent_before: list[int],
    leads: list[str],
    cap: int | None,
    split: int,
) -> None:
    split = min(split, len(leads))
    rules = PaceRules(14400, 60, quiet)
    stored = {
        name: Pace(seconds, T0 + timedelta(seconds=offset))
        for name, (seconds, offset) in zip(["google.com", "outlook.com"], paces, strict=True)
    }
    slowdowns = {name: Slowdown(pace, interval, rules) for name, pace in stored.items()}
    existing = {"google.com": [T0 + timedelta(seconds=s) for s in sent_before]}
    schedule = DomainSchedule(ALWAYS, interval, daily_cap=cap, slowdowns=slowdowns, provider_sends=existing)
    # A campaign, then single re-plans (a retry, a resend) as the scheduler makes them.
    first = plan_round_robin(
        list(range(split)), ["d"], {"d": schedule}, T0, providers=dict(enumerate(leads[:split]))
    )
    planned = [(leads[i], slot.start) for i, _, slot in first if slot is not None]
    planned += [(p, schedule.take(T0 + timedelta(minutes=7), p).start) for p in leads[split:]]
    assert len(planned) == len(leads)  # all-day window: a day always has room

    starts = sorted(start for _, start in planned)
    assert all(b - a >= timedelta(seconds=interval) for a, b in pairwise(starts))
    assert all(start >= T0 for start in starts)
    if cap is not None:
        assert max(Counter(start.date() for start in starts).values()) <= cap
    for name, pace in stored.items():
        ours = {start for provider, start in planned if provider == name}
        every = sorted(ours | set(existing.get(name, [])))
        for a, b in pairwise(every):
            if a in ours or b in ours:
                assert (b - a).total_seconds() >= reference_interval(pace, interval, rules, b), (name, a, b)


def test_a_slowed_provider_waits_while_the_others_keep_the_domains_pace() -> None:
    slowdown = Slowdown(Pace(3600, T0), 600, PaceRules(14400, 60, 86400))
    schedule = DomainSchedule(ALWAYS, 600, slowdowns={"google.com": slowdown})
    leads = ["google.com", "google.com", "other.example", "other.example", "other.example"]
    plan = plan_round_robin(list(range(5)), ["d"], {"d": schedule}, T0, providers=dict(enumerate(leads)))
    minutes = [int((slot.start - T0).total_seconds() // 60) for _, _, slot in plan if slot is not None]
    # The second google.com lead waits an hour; the skipped slots go to the next leads, in order.
    assert minutes == [0, 60, 10, 20, 30]


def test_warmup_caps_each_day_and_the_domains_daily_cap_still_holds() -> None:
    warmup = Warmup(start_per_day=2, growth_percent=50, max_per_day=10, start_date=T0.date())
    schedule = DomainSchedule(ALWAYS, 60, daily_cap=4, warmup=warmup)
    plan = plan_round_robin(list(range(20)), ["d"], {"d": schedule}, T0)
    per_day = Counter(slot.start.date() for _, _, slot in plan if slot is not None)
    assert [per_day[T0.date() + timedelta(days=n)] for n in range(6)] == [2, 3, 4, 4, 4, 3]


def test_a_sender_takes_a_slowed_providers_turn_only_once_its_pace_less_the_grace_has_passed() -> None:
    slowdown = Slowdown(Pace(400, T0), 100, RULES)
    grace = timedelta(seconds=60)
    last = T0 + timedelta(seconds=10)
    assert slowdown.turn_at(last, T0 + timedelta(seconds=300), grace) == last + timedelta(seconds=340)
    assert slowdown.turn_at(last, last + timedelta(seconds=340), grace) is None
    assert slowdown.turn_at(None, T0, grace) is None  # nothing sent towards it since the slowing
    assert slowdown.turn_at(last, slowdown.recovered_at(), grace) is None  # eased back: the domain's turn
