"""The campaign state machine (SPEC §2.7): one table of transitions, one function that applies it. Pure.

`start`, `pause`, `resume` and `stop` are asked for; `first_send`, `complete` and `reopen` are caused by the
campaign's messages and run in the same transaction as the message transition (`shared/db/message_store.py`
writes their SQL from this table).
"""

from __future__ import annotations

from typing import Literal

from shared.message_states import CampaignStatus as S

Requested = Literal["start", "pause", "resume", "stop"]  # through the api, each a route of its own
Caused = Literal["first_send", "complete", "reopen"]  # by the campaign's messages, never by a request
Action = Literal[Requested, Caused]


class InvalidTransition(ValueError):
    pass


FINAL = frozenset({S.COMPLETED, S.STOPPED})
# Campaigns whose messages are dispatched and claimed.
SENDS = frozenset({S.SCHEDULED, S.RUNNING})

RULES: dict[Action, tuple[frozenset[S], S]] = {
    "start": (frozenset({S.DRAFT}), S.SCHEDULED),
    "pause": (SENDS, S.PAUSED),
    "resume": (frozenset({S.PAUSED}), S.SCHEDULED),  # running once anything was sent
    "stop": (frozenset(S) - FINAL, S.STOPPED),
    # `running` begins with the first SMTP transaction.
    "first_send": (frozenset({S.SCHEDULED}), S.RUNNING),
    # Nothing is left to send (the scheduler checks that).
    "complete": (frozenset({S.RUNNING}), S.COMPLETED),
    # A failed message was resent: there is something to send again.
    "reopen": (frozenset({S.COMPLETED}), S.RUNNING),
}


def transition(current: S, action: Action, anything_sent: bool = False) -> S:
    """The status after `action`, or InvalidTransition (answered 409, changing nothing)."""
    sources, target = RULES[action]
    if current not in sources:
        raise InvalidTransition(f"cannot {action} a campaign that is {current.value}")
    if action == "resume" and anything_sent:
        return S.RUNNING
    return target
