"""A sending domain's health (`shared.reputation`): the thresholds, their layers, the verdict, the state
machine. The verdict is checked against an independent statement of the rules in exact fractions."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.reputation import (
    EFFECTS,
    SENDS,
    Cause,
    Counts,
    DomainState,
    Effect,
    Figures,
    InvalidDomainTransition,
    Signal,
    Streak,
    Thresholds,
    judge,
    planned_on,
    probe_passed,
    transition,
)

DEFAULTS = Thresholds()
NOTHING = Counts()


def figures(
    day: Counts = NOTHING,
    last: Counts = NOTHING,
    policy: int = 0,
    connection: int = 0,
    authentication: int = 0,
    deferrals: int = 0,
) -> Figures:
    return Figures(day, last, policy, connection, authentication, deferrals)


@pytest.mark.parametrize(
    ("seen", "cause"),
    [
        (figures(), None),
        # hard bounces over 5 % of at least 20 sends, in either window
        (figures(Counts(sends=20, hard_bounces=1)), None),
        (figures(Counts(sends=20, hard_bounces=2)), Cause.HARD_BOUNCES),
        (figures(Counts(sends=19, hard_bounces=5)), None),  # too few sends to judge
        (figures(Counts(sends=100, hard_bounces=5)), None),  # 5 % is not over 5 %
        (figures(Counts(sends=100, hard_bounces=6)), Cause.HARD_BOUNCES),
        (figures(last=Counts(sends=100, hard_bounces=6)), Cause.HARD_BOUNCES),
        # complaints over 0.3 %, a complaint without a send counts as over
        (figures(Counts(sends=1000, complaints=3)), None),
        (figures(Counts(sends=1000, complaints=4)), Cause.COMPLAINTS),
        (figures(Counts(sends=334, complaints=1)), None),
        (figures(Counts(sends=333, complaints=1)), Cause.COMPLAINTS),
        (figures(Counts(complaints=1)), Cause.COMPLAINTS),
        (figures(last=Counts(sends=100, complaints=1)), Cause.COMPLAINTS),
        # 3 policy rejections in an hour
        (figures(policy=2), None),
        (figures(policy=3), Cause.POLICY_REJECTIONS),
        # refused logins and failed connections in a row
        (figures(authentication=4), None),
        (figures(authentication=5), Cause.AUTHENTICATION_FAILURES),
        (figures(connection=9), None),
        (figures(connection=10), Cause.CONNECTION_FAILURES),
        (figures(deferrals=19), None),
        (figures(deferrals=20), Cause.DEFERRALS),
        (figures(connection=10, deferrals=20), Cause.CONNECTION_FAILURES),
        # several at once: the first in the documented order
        (
            figures(Counts(sends=20, hard_bounces=20, complaints=1), policy=5, connection=99),
            Cause.HARD_BOUNCES,
        ),
        (figures(policy=3, authentication=5, connection=10), Cause.POLICY_REJECTIONS),
    ],
)
def test_the_default_thresholds_pause_as_the_issue_states_them(seen: Figures, cause: Cause | None) -> None:
    verdict = judge(seen, DEFAULTS)
    assert (verdict and verdict.cause) == cause
    if verdict is not None:
        assert verdict.reason  # said to people


def test_a_reason_names_the_figures_and_the_threshold() -> None:
    verdict = judge(figures(Counts(sends=40, hard_bounces=3)), DEFAULTS)
    assert verdict is not None
    assert verdict.reason == (
        "hard bounces: 3 of 40 sends in the last 24 h, over 5 % (judged from 20 sends on)"
    )


def test_a_domain_overrides_its_workspace_which_overrides_the_defaults() -> None:
    workspace = {"bounce_rate": 0.1, "policy_rejections_per_hour": 5, "connection_failures": None}
    domain = {"policy_rejections_per_hour": 1, "unknown": 7, "complaint_rate": None}
    layered = Thresholds.layered(workspace, domain)
    assert layered == dataclasses.replace(DEFAULTS, bounce_rate=0.1, policy_rejections_per_hour=1)
    assert Thresholds.layered(None, {}) == DEFAULTS
    assert judge(figures(Counts(sends=20, hard_bounces=2)), layered) is None  # 10 % is not over 10 %
    assert judge(figures(policy=1), layered) is not None


RATES = st.integers(1, 1_000_000).map(lambda ppm: ppm / 1_000_000)
COUNTS = st.builds(Counts, *(st.integers(0, 400) for _ in range(4)))
THRESHOLDS = st.builds(
    Thresholds,
    bounce_rate=RATES,
    bounce_min_sends=st.integers(1, 200),
    complaint_rate=RATES,
    policy_rejections_per_hour=st.integers(1, 10),
    authentication_failures=st.integers(1, 10),
    connection_failures=st.integers(1, 20),
    deferrals=st.integers(1, 30),
)
FIGURES = st.builds(
    Figures, COUNTS, COUNTS, st.integers(0, 12), st.integers(0, 25), st.integers(0, 12), st.integers(0, 40)
)


def reference(seen: Figures, t: Thresholds) -> Cause | None:
    """The rules as the issue states them, in exact fractions, written apart from `judge`."""
    rate = {
        name: Fraction(round(getattr(t, name) * 1_000_000), 1_000_000)
        for name in ("bounce_rate", "complaint_rate")
    }
    windows = [seen.last_24h, seen.last_100_sends]
    holding = []
    if any(
        w.sends >= t.bounce_min_sends and Fraction(w.hard_bounces, w.sends) > rate["bounce_rate"]
        for w in windows
    ):
        holding.append(Cause.HARD_BOUNCES)
    if any(
        w.complaints > 0 and (w.sends == 0 or Fraction(w.complaints, w.sends) > rate["complaint_rate"])
        for w in windows
    ):
        holding.append(Cause.COMPLAINTS)
    if seen.policy_rejections_last_hour >= t.policy_rejections_per_hour:
        holding.append(Cause.POLICY_REJECTIONS)
    if seen.consecutive_authentication_failures >= t.authentication_failures:
        holding.append(Cause.AUTHENTICATION_FAILURES)
    if seen.consecutive_connection_failures >= t.connection_failures:
        holding.append(Cause.CONNECTION_FAILURES)
    if seen.consecutive_deferrals >= t.deferrals:
        holding.append(Cause.DEFERRALS)
    return holding[0] if holding else None


@given(seen=FIGURES, thresholds=THRESHOLDS)
def test_the_verdict_is_the_first_rule_that_holds(seen: Figures, thresholds: Thresholds) -> None:
    verdict = judge(seen, thresholds)
    assert (verdict and verdict.cause) == reference(seen, thresholds)


@given(seen=FIGURES, thresholds=THRESHOLDS)
def test_more_trouble_never_lifts_a_pause(seen: Figures, thresholds: Thresholds) -> None:
    """One more bounce, complaint, policy rejection or failure in a row never turns a pause into a stay."""
    if judge(seen, thresholds) is None:
        return
    worse = Figures(
        dataclasses.replace(seen.last_24h, hard_bounces=seen.last_24h.hard_bounces + 1),
        dataclasses.replace(seen.last_100_sends, complaints=seen.last_100_sends.complaints + 1),
        seen.policy_rejections_last_hour + 1,
        seen.consecutive_connection_failures + 1,
        seen.consecutive_authentication_failures + 1,
        seen.consecutive_deferrals + 1,
    )
    assert judge(worse, thresholds) is not None


def test_figures_are_the_totals_now_less_the_totals_when_each_window_began() -> None:
    now = Counts(sends=150, hard_bounces=9, complaints=2, policy_rejections=7)
    seen = Figures.from_totals(
        now, Counts(100, 5, 1, 3), Counts(50, 2, 0, 1), Counts(149, 9, 2, 4), connection_failures=0,
        authentication_failures=2, deferrals=5,
    )  # fmt: skip
    assert seen == Figures(Counts(50, 4, 1, 4), Counts(100, 7, 2, 6), 3, 0, 2, 5)


def test_sends_are_what_a_server_judged_and_failures_in_a_row_end_with_an_answer() -> None:
    assert {Signal.SENT, Signal.HARD_BOUNCE} == SENDS
    assert EFFECTS[Signal.DSN_BOUNCE].counts == Counts(hard_bounces=1)  # its send counted when it went
    for signal in (Signal.SENT, Signal.HARD_BOUNCE, Signal.POLICY_REJECTION, Signal.ANSWERED):
        effect = EFFECTS[signal]
        assert (effect.connection, effect.authentication, effect.deferral) == (Streak.RESET,) * 3
    assert EFFECTS[Signal.CONNECTION_FAILURE].connection is Streak.ADD
    assert EFFECTS[Signal.AUTHENTICATION_FAILURE] == Effect(
        Counts(), Streak.RESET, Streak.ADD, Streak.KEEP
    )  # it connected
    assert EFFECTS[Signal.DEFERRAL] == Effect(Counts(), Streak.RESET, Streak.RESET, Streak.ADD)  # it answered
    assert EFFECTS[Signal.COMPLAINT].connection is Streak.KEEP  # says nothing about SMTP
    assert set(EFFECTS) == set(Signal)


def test_a_probe_passes_unless_it_meets_the_trouble_of_its_pause_again() -> None:
    unreachable, storm = Cause.CONNECTION_FAILURES, Cause.DEFERRALS
    assert not probe_passed(unreachable, Signal.CONNECTION_FAILURE)
    assert all(probe_passed(unreachable, s) for s in Signal if s != Signal.CONNECTION_FAILURE)
    assert not any(probe_passed(storm, s) for s in (Signal.DEFERRAL, Signal.CONNECTION_FAILURE))
    assert probe_passed(storm, Signal.SENT)
    assert probe_passed(storm, Signal.HARD_BOUNCE)  # the server judged the mail: the storm is over


def test_only_a_paused_domain_resumes_and_only_an_active_one_pauses() -> None:
    assert transition(DomainState.ACTIVE, "pause") == DomainState.PAUSED
    assert transition(DomainState.PAUSED, "resume") == DomainState.ACTIVE
    with pytest.raises(InvalidDomainTransition, match="cannot resume a sending domain that is active"):
        transition(DomainState.ACTIVE, "resume")
    with pytest.raises(InvalidDomainTransition):
        transition(DomainState.PAUSED, "pause")


@dataclasses.dataclass
class Named:
    name: str
    state: str


def test_a_campaign_that_reassigns_starts_on_its_active_domains_only() -> None:
    a, b, c = Named("a", "active"), Named("b", "paused"), Named("c", "active")
    assert planned_on([a, b, c], reassign=False) == [a, b, c]  # b's messages wait for it
    assert planned_on([a, b, c], reassign=True) == [a, c]
    assert planned_on([b], reassign=True) == [b]  # none active: they wait
