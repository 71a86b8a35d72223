"""A sending domain's reputation (SPEC §8, issue 18): its state, the signals its mail brings back, the figures
they add up to, and the verdict on them. Pure: plain values in, a decision out.

A domain is `active` or `paused`. Every outcome that says something about the domain is a `Signal`: a send
(accepted or hard-bounced at SMTP time), a hard bounce, a spam complaint, a policy rejection (5.7.x, a spam
block), or a failure to connect or to log in. The database keeps running totals per domain and a log of them
(`shared/db/domain_health.py`), from which the figures of a window are one subtraction: over the last 24 h,
over the last 100 sends, and the policy rejections of the last hour. A window never reaches back before the
domain's last resume, so a resumed domain is judged on what it does from then on.

`judge` pauses a domain when, by default:
- hard bounces are over 5 % of at least 20 sends (in either window);
- complaints are over 0.3 % of the sends (in either window; a complaint with no send in the window counts as
  over);
- 3 policy rejections came within an hour;
- 5 logins in a row were refused;
- 10 connections in a row failed;
- 20 answers in a row were deferrals (a 421 or 4.7.x "slow down", from whichever provider): a storm that
  adaptive pacing towards one provider does not calm.
Each threshold can be set per workspace and per domain (`Thresholds.layered`). Rates are compared exactly,
to a millionth.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, TypeVar


class DomainState(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"


class InvalidDomainTransition(ValueError):
    pass


# The domain's state machine: an action, the states it leaves and the state it reaches.
RULES: dict[str, tuple[frozenset[DomainState], DomainState]] = {
    "pause": (frozenset({DomainState.ACTIVE}), DomainState.PAUSED),
    "resume": (frozenset({DomainState.PAUSED}), DomainState.ACTIVE),
}


def transition(current: DomainState, action: str) -> DomainState:
    """The state after `action`, or InvalidDomainTransition (answered 409, changing nothing)."""
    sources, target = RULES[action]
    if current not in sources:
        raise InvalidDomainTransition(f"cannot {action} a sending domain that is {current.value}")
    return target


class Stated(Protocol):
    @property
    def state(self) -> str: ...


S = TypeVar("S", bound=Stated)


def planned_on(domains: Sequence[S], reassign: bool) -> list[S]:
    """The domains a campaign's audience is spread over when it starts: all of them (a paused one's messages
    wait for it); or, for a campaign that moves mail off paused domains, the active ones (all, if none is)."""
    active = [domain for domain in domains if domain.state == DomainState.ACTIVE]
    return active if reassign and active else list(domains)


class Cause(enum.StrEnum):
    """Why a domain was paused."""

    HARD_BOUNCES = "hard_bounces"
    COMPLAINTS = "complaints"
    POLICY_REJECTIONS = "policy_rejections"
    AUTHENTICATION_FAILURES = "authentication_failures"
    CONNECTION_FAILURES = "connection_failures"
    DEFERRALS = "deferrals"
    NEEDS_REAUTH = "needs_reauth"  # the OAuth2 provider refused the domain's grant (shared/oauth_tokens.py)


# Causes that pass by themselves: after the cool-down one probe send tries again, and its success resumes the
# domain. The others wait for a person (`POST /domains/{id}/resume`).
TRANSIENT = frozenset({Cause.CONNECTION_FAILURES, Cause.DEFERRALS})

DAY = timedelta(hours=24)
HOUR = timedelta(hours=1)
LAST_SENDS = 100


@dataclass(frozen=True)
class Counts:
    """What a window holds (or a running total since the domain was created)."""

    sends: int = 0  # SMTP transactions the recipient's server gave a verdict on: accepted or hard-bounced
    hard_bounces: int = 0  # at SMTP time or by a later delivery status notification
    complaints: int = 0
    policy_rejections: int = 0

    def __sub__(self, other: Counts) -> Counts:
        return Counts(*(a - b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.sends, self.hard_bounces, self.complaints, self.policy_rejections)


class Streak(enum.StrEnum):
    """What a signal does to a run of failures in a row."""

    ADD = "add"
    RESET = "reset"
    KEEP = "keep"


@dataclass(frozen=True)
class Effect:
    counts: Counts
    connection: Streak  # consecutive connection failures
    authentication: Streak  # consecutive refused logins
    deferral: Streak  # consecutive deferrals


class Signal(enum.StrEnum):
    SENT = "sent"  # the server accepted the e-mail
    HARD_BOUNCE = "hard_bounce"  # a 5xx for the recipient at SMTP time
    DSN_BOUNCE = "dsn_bounce"  # a 5.x.x delivery status notification later (its send counted when it went)
    COMPLAINT = "complaint"  # the lead reported the e-mail as spam
    POLICY_REJECTION = "policy_rejection"  # 5.7.x, or a spam block behind a bare 550/554: our problem
    ANSWERED = "answered"  # any other answer of the server (a 4xx, a refused MAIL FROM): it was reached
    DEFERRAL = "deferral"  # a 421 or 4.7.x: the receiving provider asks us to slow down
    CONNECTION_FAILURE = "connection_failure"  # no SMTP session (refused, timed out, dropped)
    AUTHENTICATION_FAILURE = "authentication_failure"  # the server refused our login


_ONE_SEND = Counts(sends=1)
EFFECTS: dict[Signal, Effect] = {
    Signal.SENT: Effect(_ONE_SEND, Streak.RESET, Streak.RESET, Streak.RESET),
    Signal.HARD_BOUNCE: Effect(Counts(sends=1, hard_bounces=1), Streak.RESET, Streak.RESET, Streak.RESET),
    Signal.DSN_BOUNCE: Effect(Counts(hard_bounces=1), Streak.KEEP, Streak.KEEP, Streak.KEEP),
    Signal.COMPLAINT: Effect(Counts(complaints=1), Streak.KEEP, Streak.KEEP, Streak.KEEP),
    Signal.POLICY_REJECTION: Effect(Counts(policy_rejections=1), Streak.RESET, Streak.RESET, Streak.RESET),
    Signal.ANSWERED: Effect(Counts(), Streak.RESET, Streak.RESET, Streak.RESET),
    Signal.DEFERRAL: Effect(Counts(), Streak.RESET, Streak.RESET, Streak.ADD),
    Signal.CONNECTION_FAILURE: Effect(Counts(), Streak.ADD, Streak.KEEP, Streak.KEEP),
    Signal.AUTHENTICATION_FAILURE: Effect(Counts(), Streak.RESET, Streak.ADD, Streak.KEEP),
}
# The signals that are sends: what the window of the last 100 sends counts.
SENDS = frozenset(signal for signal, effect in EFFECTS.items() if effect.counts.sends)


# What a probe send of a domain paused for a transient cause fails with: the same trouble again. Anything else
# shows the server can be reached again (connection failures), or takes our mail again (a deferral storm).
_PROBE_FAILS = {
    Cause.CONNECTION_FAILURES: frozenset({Signal.CONNECTION_FAILURE}),
    Cause.DEFERRALS: frozenset({Signal.CONNECTION_FAILURE, Signal.DEFERRAL}),
}
assert set(_PROBE_FAILS) == TRANSIENT


def probe_passed(cause: Cause, signal: Signal) -> bool:
    """Whether the probe send of a domain paused for transient `cause`, ending with `signal`, resumes it."""
    return signal not in _PROBE_FAILS[cause]


@dataclass(frozen=True)
class Thresholds:
    """When a domain is paused. Rates are fractions (0.05 is 5 %); the counts are "at least"."""

    bounce_rate: float = 0.05  # hard bounces over this share of the sends …
    bounce_min_sends: int = 20  # … once the window holds at least this many sends
    complaint_rate: float = 0.003
    policy_rejections_per_hour: int = 3
    authentication_failures: int = 5  # in a row
    connection_failures: int = 10  # in a row
    deferrals: int = 20  # in a row, from whichever provider

    @classmethod
    def layered(cls, *overrides: Mapping[str, Any] | None) -> Thresholds:
        """The defaults, overridden by each layer in turn (the workspace's, then the domain's); a key a layer
        leaves out, or sets to null, keeps the value below it. Unknown keys are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for layer in overrides:
            values.update({k: v for k, v in (layer or {}).items() if k in known and v is not None})
        return cls(**values)


@dataclass(frozen=True)
class Figures:
    """A domain's figures now, each counted from the later of its window's start and the last resume."""

    last_24h: Counts
    last_100_sends: Counts
    policy_rejections_last_hour: int
    consecutive_connection_failures: int
    consecutive_authentication_failures: int
    consecutive_deferrals: int

    @classmethod
    def from_totals(
        cls,
        now: Counts,
        day_start: Counts,
        sends_start: Counts,
        hour_start: Counts,
        connection_failures: int,
        authentication_failures: int,
        deferrals: int,
    ) -> Figures:
        """From the running totals now and as they stood when each window began."""
        return cls(
            now - day_start,
            now - sends_start,
            (now - hour_start).policy_rejections,
            connection_failures,
            authentication_failures,
            deferrals,
        )


@dataclass(frozen=True)
class Verdict:
    """Pause the domain, for this cause; `reason` says it to people."""

    cause: Cause
    reason: str


PPM = 1_000_000


def _over(count: int, rate: float, base: int) -> bool:
    """count / base > rate, exactly, with the rate taken to a millionth (count > 0 over no base is over)."""
    return count * PPM > round(rate * PPM) * base


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.3g} %"


def _window_over(
    figures: Figures, count: Callable[[Counts], int], rate: float, min_sends: int = 0
) -> tuple[str, Counts] | None:
    """The first window (its name, its counts) with at least `min_sends` sends whose `count` is over `rate`
    of them."""
    for name, window in (("the last 24 h", figures.last_24h), ("the last 100 sends", figures.last_100_sends)):
        if count(window) and window.sends >= min_sends and _over(count(window), rate, window.sends):
            return name, window
    return None


def judge(figures: Figures, thresholds: Thresholds) -> Verdict | None:
    """Whether the figures pause the domain, and why; None: it stays active. Causes are tried in a fixed
    order (bounces, complaints, policy rejections, logins, connections, deferrals) and the first that holds is
    given."""
    t = thresholds
    if found := _window_over(figures, lambda w: w.hard_bounces, t.bounce_rate, t.bounce_min_sends):
        name, window = found
        return Verdict(
            Cause.HARD_BOUNCES,
            f"hard bounces: {window.hard_bounces} of {window.sends} sends in {name}, over "
            f"{_percent(t.bounce_rate)} (judged from {t.bounce_min_sends} sends on)",
        )
    if found := _window_over(figures, lambda w: w.complaints, t.complaint_rate):
        name, window = found
        return Verdict(
            Cause.COMPLAINTS,
            f"spam complaints: {window.complaints} for {window.sends} sends in {name}, over "
            f"{_percent(t.complaint_rate)}",
        )
    f = figures
    counted = (
        (Cause.POLICY_REJECTIONS, f.policy_rejections_last_hour, t.policy_rejections_per_hour,
         "policy rejections: {n} in the last hour (receiving servers refused our mail as spam or by "
         "policy; the limit is {limit})"),
        (Cause.AUTHENTICATION_FAILURES, f.consecutive_authentication_failures, t.authentication_failures,
         "the SMTP server refused our login {n} times in a row (the limit is {limit}): check the domain's "
         "SMTP username and password"),
        (Cause.CONNECTION_FAILURES, f.consecutive_connection_failures, t.connection_failures,
         "the SMTP server could not be reached {n} times in a row (the limit is {limit}); one probe send "
         "tries again after the cool-down"),
        (Cause.DEFERRALS, f.consecutive_deferrals, t.deferrals,
         "receiving servers deferred our mail {n} times in a row (421 or 4.7.x, the limit is {limit}); one "
         "probe send tries again after the cool-down"),
    )  # fmt: skip
    for cause, seen, limit, reason in counted:
        if seen >= limit:
            return Verdict(cause, reason.format(n=seen, limit=limit))
    return None
