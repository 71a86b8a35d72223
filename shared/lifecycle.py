"""The campaign state machine (SPEC §2.7): one function decides every transition."""

from __future__ import annotations

from typing import Literal

from shared.db.models import CampaignStatus as S

Action = Literal["start", "pause", "resume", "stop"]


class InvalidTransition(ValueError):
    pass


FINAL = frozenset({S.COMPLETED, S.STOPPED})


def transition(current: S, action: Action, anything_sent: bool = False) -> S:
    """The status after `action`, or InvalidTransition (answered 409, changing nothing)."""
    if action == "start" and current == S.DRAFT:
        return S.SCHEDULED
    if action == "pause" and current in (S.SCHEDULED, S.RUNNING):
        return S.PAUSED
    if action == "resume" and current == S.PAUSED:
        return S.RUNNING if anything_sent else S.SCHEDULED
    if action == "stop" and current not in FINAL:
        return S.STOPPED
    raise InvalidTransition(f"cannot {action} a campaign that is {current.value}")
