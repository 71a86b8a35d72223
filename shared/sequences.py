"""Sequences (issue 19): the steps a lead gets after a campaign's first e-mail, and the rules that stop or
skip them. Pure: the scheduler gathers what the lead did, this module decides.

- Step n (1, 2 …) of a lead is planned when its step n − 1 is sent (step 0: the first e-mail), `delay_days`
  calendar days later at the same local time (`shared.planning.slots.followup_due`), at its sending domain's
  first free slot: the domain of the lead's thread, always.
- At dispatch, a due step is checked again: a stop rule ends the lead's sequence (the step is cancelled, no
  later step is planned); a condition that does not hold skips the step (cancelled, counted as skipped) and
  the sequence goes on with the next step, due `delay_days` after the skipped step's slot.
- A reply, an unsubscribe, a bounce or a complaint always ends it (the lead's status,
  `shared.message_states`); an automatic reply, a click and a reply from the lead's company domain end it
  where the campaign says so.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

MAX_STEPS = 12  # after the first e-mail (Woodpecker's ceiling)
SKIPPED = "skipped: "  # the start of a skipped step's `last_error`: cancelled, and counted as skipped
STOPPED = "stopped: "
# Mailbox providers anyone may have an address at: a reply from one of them is no colleague's. The company
# reply rule leaves leads at these domains alone.
FREE_MAIL = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com", "yahoo.com",
    "ymail.com", "icloud.com", "me.com", "mac.com", "aol.com", "proton.me", "protonmail.com", "gmx.com",
    "gmx.net", "gmx.de", "web.de", "mail.com", "yandex.ru", "zoho.com", "fastmail.com", "hey.com",
    "outlook.nl", "hotmail.nl", "live.nl", "ziggo.nl", "kpnmail.nl", "hetnet.nl", "planet.nl", "home.nl",
    "xs4all.nl", "telenet.be", "skynet.be",
})  # fmt: skip


class Condition(enum.StrEnum):
    ALWAYS = "always"
    NOT_OPENED = "not_opened"  # no human open of the lead's earlier steps
    NOT_CLICKED = "not_clicked"  # no click in the lead's earlier steps


@dataclass(frozen=True)
class StopRules:
    """The optional stop rules of a campaign (reply, unsubscribe, bounce and complaint always stop)."""

    auto_reply: bool = False
    click: bool = False
    company_reply: bool = False


@dataclass(frozen=True)
class Evidence:
    """What the lead (and its company) did in this campaign by the time a step falls due."""

    opened_human: bool = False  # a human open of one of its earlier steps
    clicked: bool = False  # a click in one of its earlier steps
    auto_replied: bool = False  # an automatic reply to one of its messages
    company_replied: bool = False  # another lead of its e-mail domain replied in this campaign


@dataclass(frozen=True)
class Verdict:
    action: Literal["send", "skip", "stop"]
    reason: str | None = None

    @property
    def last_error(self) -> str | None:
        """What the cancelled message says: `skipped: …` or `stopped: …`."""
        if self.reason is None:
            return None
        return (SKIPPED if self.action == "skip" else STOPPED) + self.reason


SEND = Verdict("send")


def at_dispatch(condition: Condition, rules: StopRules, evidence: Evidence) -> Verdict:
    """Whether a due step goes: stop rules first (they end the sequence), then the step's condition."""
    if rules.click and evidence.clicked:
        return Verdict("stop", "the lead clicked")
    if rules.auto_reply and evidence.auto_replied:
        return Verdict("stop", "the lead sent an automatic reply")
    if rules.company_reply and evidence.company_replied:
        return Verdict("stop", "someone at the lead's company domain replied")
    if condition == Condition.NOT_OPENED and evidence.opened_human:
        return Verdict("skip", "condition not_opened: the lead opened an earlier step")
    if condition == Condition.NOT_CLICKED and evidence.clicked:
        return Verdict("skip", "condition not_clicked: the lead clicked an earlier step")
    return SEND


@dataclass(frozen=True)
class Step:
    position: int  # 1 for the first step after the first e-mail
    template_id: str
    delay_days: int
    attach_report: bool = False
    condition: Condition = Condition.ALWAYS


def editable(steps: Sequence[Step], planned_up_to: int) -> int:
    """The first position an edit of a running campaign may change: steps up to `planned_up_to` (the highest
    step any lead has a message of) are planned already and stay as they are."""
    return min(planned_up_to, len(steps)) + 1


def apply_edit(current: Sequence[Step], wanted: Sequence[Step], planned_up_to: int) -> list[Step]:
    """The steps after an edit: the planned ones kept, then `wanted` from the first editable position."""
    first = editable(current, planned_up_to)
    kept = [step for step in current if step.position < first]
    return kept + [step for step in wanted if step.position >= first]
