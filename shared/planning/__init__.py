"""Pure planning rules (SPEC §2.2–2.4): no IO, no clock; plain values and `now` in, slots out."""

from shared.planning.slots import DomainSchedule, Reservation, plan_round_robin
from shared.planning.window import Window

__all__ = ["DomainSchedule", "Reservation", "Window", "plan_round_robin"]
