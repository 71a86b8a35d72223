"""A clock a test can move forward: real time plus an offset, shared by the services it is given to."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.clock import utcnow


class MovableClock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta
