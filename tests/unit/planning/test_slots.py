"""The slot rules against a deliberately simple, independent reference check."""

import functools
from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import holidays
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.planning import DomainSchedule, Reservation, Window, plan_round_robin
from shared.planning.slots import HORIZON_DAYS, followup_due, retry_not_before, send_grace


@functools.cache
def calendar(country: str) -> holidays.HolidayBase:
    return holidays.country_holidays(country)


def reference_in_window(moment: datetime, window: Window) -> bool:
    """Written from the spec, not from the planner: local weekday, holiday and wall-clock hours."""
    local = moment.astimezone(ZoneInfo(window.timezone))
    if local.weekday() not in window.days:
        return False
    if window.holidays is not None and local.date() in calendar(window.holidays):
        return False
    minutes = local.hour * 60 + local.minute
    end = 24 * 60 if window.ends_at_midnight else window.end.hour * 60 + window.end.minute
    return window.start.hour * 60 + window.start.minute <= minutes < end


def reference_first_grid_point(window: Window, earliest: datetime, interval: int) -> datetime:
    """Walk forward minute by minute until a point on the wall-clock grid inside the window."""
    zone = ZoneInfo(window.timezone)
    moment = earliest.replace(second=0, microsecond=0)
    if moment < earliest:
        moment += timedelta(minutes=1)
    while True:
        local = moment.astimezone(zone)
        offset = (local.hour * 60 + local.minute) - (window.start.hour * 60 + window.start.minute)
        if reference_in_window(moment, window) and offset % (interval // 60) == 0 and local.fold == 0:
            return moment
        moment += timedelta(minutes=1)


any_moment = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))
# Half the examples start within a day before a Dutch holiday, where the rules are most likely to slip.
holiday_eve = st.builds(
    lambda day, seconds: datetime.combine(day, time(0), UTC) - timedelta(seconds=seconds),
    st.sampled_from(sorted(d for d in holidays.country_holidays("NL", years=[2026, 2027]))),
    st.integers(0, 86400),
)
moments = st.one_of(any_moment, holiday_eve)
intervals = st.sampled_from([300, 600, 1200, 1800, 3600])
windows = st.builds(
    Window,
    timezone=st.sampled_from(["Europe/Amsterdam", "America/New_York", "Asia/Tokyo"]),
    days=st.sets(st.integers(0, 6), min_size=1).map(frozenset),
    start=st.sampled_from([time(0), time(1, 30), time(8), time(9, 15)]),
    end=st.sampled_from([time(3), time(12), time(17), time(23, 30)]),
    holidays=st.sampled_from(["NL", None]),
)


@settings(max_examples=150, deadline=None)
@given(
    window=windows,
    earliest=moments,
    interval=intervals,
    leads=st.integers(1, 60),
    domains=st.integers(1, 4),
    second_campaign=st.integers(0, 30),
)
def test_round_robin_plans_respect_window_spacing_and_order(
    window: Window, earliest: datetime, interval: int, leads: int, domains: int, second_campaign: int
) -> None:
    if window.end <= window.start:
        window = Window(
            window.timezone, window.days, window.start, time(0), window.holidays, ends_at_midnight=True
        )
    names = [f"d{i}.example" for i in range(domains)]
    schedules = {name: DomainSchedule(window, interval) for name in names}
    first = plan_round_robin(list(range(leads)), names, schedules, earliest)
    later = earliest + timedelta(hours=1)
    second = plan_round_robin(list(range(second_campaign)), names, schedules, later)

    # Nothing lost: every lead planned exactly once, on domains[i mod D].
    assert [lead for lead, _, _ in first] == list(range(leads))
    assert all(slot is not None for _, _, slot in first + second)
    assert all(domain == names[i % domains] for i, (_, domain, _) in enumerate(first))
    for plan, start in ((first, earliest), (second, later)):
        for _, _, slot in plan:
            assert slot.start >= start
            assert reference_in_window(slot.start, window)
            assert slot.end - slot.start == timedelta(seconds=interval)
    # Per domain, across both campaigns: never two slots closer than the interval.
    for name in names:
        starts = sorted(s.start for _, d, s in first + second if d == name)
        assert all(b - a >= timedelta(seconds=interval) for a, b in pairwise(starts))
    # The first lead of each domain takes the first grid point at or after the start.
    for i in range(min(leads, domains)):
        assert first[i][2].start == reference_first_grid_point(window, earliest, interval)


@settings(max_examples=100, deadline=None)
@given(earliest=moments, cap=st.integers(1, 5), leads=st.integers(1, 25))
def test_daily_cap_moves_a_full_day_to_the_next_window_day(earliest: datetime, cap: int, leads: int) -> None:
    window = Window()
    schedule = DomainSchedule(window, 1200, daily_cap=cap)
    slots = [schedule.take(earliest).start for _ in range(leads)]
    per_day: dict[object, int] = {}
    for slot in slots:
        per_day[window.local_date(slot)] = per_day.get(window.local_date(slot), 0) + 1
    assert max(per_day.values()) <= cap


def test_leads_beyond_the_horizon_get_no_slot_and_the_others_keep_theirs() -> None:
    mondays = Window(timezone="UTC", days=frozenset({0}), holidays=None)
    schedules = {"d.example": DomainSchedule(mondays, 60, daily_cap=1)}
    earliest = datetime(2026, 11, 30, 18, tzinfo=UTC)  # a Monday after its window: the next Monday is first
    plan = plan_round_robin(list(range(600)), ["d.example"], schedules, earliest)
    fitting = [slot for _, _, slot in plan if slot is not None]
    assert len(fitting) == HORIZON_DAYS // 7  # one a Monday, up to the horizon
    assert all(slot is None for _, _, slot in plan[len(fitting) :])  # the last leads, in order
    assert [s.start.date() for s in fitting] == [
        (earliest + timedelta(days=7 * (i + 1))).date() for i in range(len(fitting))
    ]


def test_existing_reservations_of_other_campaigns_are_respected_off_grid() -> None:
    window = Window(timezone="UTC", days=frozenset(range(7)), holidays=None)
    taken = Reservation(datetime(2026, 11, 25, 8, 10, tzinfo=UTC), datetime(2026, 11, 25, 8, 30, tzinfo=UTC))
    schedule = DomainSchedule(window, 1200, [taken])
    # 08:00 would overlap [08:10, 08:30), 08:20 too; 08:40 is the first free grid point.
    assert schedule.earliest_free(datetime(2026, 11, 25, 8, 0, tzinfo=UTC)) == datetime(
        2026, 11, 25, 8, 40, tzinfo=UTC
    )


def test_grace_is_a_quarter_interval_capped_at_a_minute() -> None:
    assert send_grace(1200) == timedelta(seconds=60)
    assert send_grace(120) == timedelta(seconds=30)
    assert send_grace(0) == timedelta(seconds=60)
    assert send_grace(1200, configured=5) == timedelta(seconds=5)


def test_without_throttle_everyone_is_due_at_the_next_window_start_up_to_the_cap() -> None:
    window = Window()
    evening = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)  # Wednesday, after hours
    schedule = DomainSchedule(window, 0, daily_cap=3)
    slots = [schedule.take(evening).start.astimezone(window.zone) for _ in range(4)]
    thursday_eight = datetime(2026, 11, 26, 8, 0, tzinfo=window.zone)
    friday_eight = datetime(2026, 11, 27, 8, 0, tzinfo=window.zone)
    assert slots == [thursday_eight] * 3 + [friday_eight]


def test_retry_backoff_counts_from_the_failure_and_runs_out() -> None:
    failed = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    assert retry_not_before(0, failed, [300, 600]) == failed + timedelta(minutes=5)
    assert retry_not_before(1, failed, [300, 600]) == failed + timedelta(minutes=10)
    assert retry_not_before(2, failed, [300, 600]) is None


def test_a_followup_due_on_a_saturday_goes_out_on_monday_morning() -> None:
    window = Window()
    sent = datetime(2026, 11, 25, 14, 20, tzinfo=window.zone)  # Wednesday 14:20 local
    due = followup_due(window, sent, 3)  # Saturday 14:20
    assert due == datetime(2026, 11, 28, 14, 20, tzinfo=window.zone)
    slot = DomainSchedule(window, 1200).earliest_free(due)
    assert slot == datetime(2026, 11, 30, 8, 0, tzinfo=window.zone)


def test_followup_days_are_calendar_days_across_a_clock_change() -> None:
    window = Window()
    sent = datetime(2026, 10, 23, 10, 0, tzinfo=window.zone)  # Friday, summer time
    assert (
        followup_due(window, sent, 3).astimezone(window.zone).hour == 10
    )  # Monday, winter time, still 10:00
