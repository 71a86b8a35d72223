import time as time_module
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from shared.planning import DomainSchedule, Window

AMS = ZoneInfo("Europe/Amsterdam")
ALL_DAY = Window(days=frozenset(range(7)), start=time(0), end=time(0), ends_at_midnight=True, holidays=None)


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=AMS)


def first_slot(window: Window, at: datetime, interval: int = 1200) -> datetime:
    return DomainSchedule(window, interval).earliest_free(at).astimezone(window.zone)


def test_friday_after_the_last_slot_moves_to_monday_morning() -> None:
    assert first_slot(Window(), local(2026, 11, 27, 16, 50)) == local(2026, 11, 30, 8, 0)


def test_start_at_17_sharp_is_outside_the_window() -> None:
    assert first_slot(Window(), local(2026, 11, 25, 17, 0)) == local(2026, 11, 26, 8, 0)


def test_first_slot_is_the_next_grid_point() -> None:
    assert first_slot(Window(), local(2026, 11, 25, 9, 1)) == local(2026, 11, 25, 9, 20)
    assert first_slot(Window(), local(2026, 11, 25, 9, 20)) == local(2026, 11, 25, 9, 20)


def test_a_default_day_has_27_slots_ending_at_16_40() -> None:
    grid = Window().day_grid(date(2026, 11, 25), 1200)
    assert len(grid) == 27
    assert grid[0].astimezone(AMS).time() == time(8, 0)
    assert grid[-1].astimezone(AMS).time() == time(16, 40)


@pytest.mark.parametrize(
    ("holiday", "next_open"),
    [
        (date(2026, 4, 27), date(2026, 4, 28)),  # King's Day
        (date(2026, 4, 6), date(2026, 4, 7)),  # Easter Monday
        (date(2026, 12, 25), date(2026, 12, 28)),  # Christmas, Boxing Day, then the weekend
    ],
)
def test_dutch_holidays_are_skipped(holiday: date, next_open: date) -> None:
    assert not Window().is_open_day(holiday)
    assert first_slot(Window(), local(holiday.year, holiday.month, holiday.day, 7, 0)).date() == next_open


def test_window_stays_wall_clock_across_both_2026_clock_changes() -> None:
    for day in (date(2026, 3, 30), date(2026, 10, 26)):  # the Mondays after the changes
        grid = Window().day_grid(day, 1200)
        assert [g.astimezone(AMS).time() for g in (grid[0], grid[-1])] == [time(8, 0), time(16, 40)]


def test_nonexistent_local_times_are_skipped_on_spring_forward() -> None:
    grid = ALL_DAY.day_grid(date(2026, 3, 29), 1200)
    local_times = [g.astimezone(AMS).time() for g in grid]
    assert time(2, 0) not in local_times
    assert time(2, 40) not in local_times
    assert len(grid) == 72 - 3


def test_repeated_local_times_are_used_once_on_fall_back() -> None:
    grid = ALL_DAY.day_grid(date(2026, 10, 25), 1200)
    assert len(grid) == 72
    two_am = [g for g in grid if g.astimezone(AMS).time() == time(2, 0)]
    assert two_am == [datetime(2026, 10, 25, 0, 0, tzinfo=UTC)]  # the first (summer-time) occurrence


def test_a_window_in_another_timezone() -> None:
    new_york = Window(timezone="America/New_York", holidays="US")
    # 13:30 UTC on a Wednesday is 08:30 in New York: next slot 08:40 local.
    slot = DomainSchedule(new_york, 1200).earliest_free(datetime(2026, 11, 25, 13, 30, tzinfo=UTC))
    assert slot == datetime(2026, 11, 25, 13, 40, tzinfo=UTC)
    assert not new_york.is_open_day(date(2026, 11, 26))  # Thanksgiving


def test_window_ending_at_midnight_includes_the_last_evening_slot() -> None:
    grid = ALL_DAY.day_grid(date(2026, 11, 25), 1200)
    assert grid[-1].astimezone(AMS).time() == time(23, 40)


def test_interval_zero_means_due_at_once_inside_the_window() -> None:
    moment = local(2026, 11, 25, 10, 7)
    assert DomainSchedule(Window(), 0).earliest_free(moment) == moment
    assert first_slot(Window(), local(2026, 11, 25, 18, 0), interval=0) == local(2026, 11, 26, 8, 0)


def test_open_hours_between_counts_only_window_time() -> None:
    # Friday 16:00 to Monday 09:00: one hour on Friday, one on Monday.
    assert Window().open_hours_between(local(2026, 11, 27, 16, 0), local(2026, 11, 30, 9, 0)) == 2.0


def test_window_from_its_stored_form() -> None:
    stored = {"timezone": "UTC", "days": [5, 6], "start": "10:00", "end": "24:00", "holidays": None}
    window = Window.from_dict(stored)
    assert window.ends_at_midnight
    assert window.is_open_day(date(2026, 11, 28))
    assert not window.is_open_day(date(2026, 11, 27))


@pytest.mark.parametrize(
    "names",
    [
        {"holidays": "__class__"},
        {"holidays": "country_holidays"},
        {"holidays": "Netherlands"},  # a class of the package, not a country code
        {"timezone": "../../etc/passwd"},
        {"timezone": "Europe/../UTC"},
    ],
)
def test_a_name_outside_the_packages_lists_is_refused(names: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="unknown"):
        Window(**names)


def test_alpha_3_country_codes_name_the_same_calendars() -> None:
    assert not Window(holidays="NLD").is_open_day(date(2026, 4, 27))  # King's Day
    assert not Window(holidays="USA", timezone="America/New_York").is_open_day(date(2026, 11, 26))


def test_a_daily_cap_of_one_on_a_one_second_grid_plans_a_day_per_lead_at_once() -> None:
    schedule = DomainSchedule(ALL_DAY, 1, daily_cap=1)
    started = time_module.perf_counter()
    slots = [schedule.take(local(2027, 1, 1, 0, 0)).start for _ in range(400)]
    # Each day needs the first of its 86,400 grid points: computing them all took 0.3 s a day.
    assert time_module.perf_counter() - started < 2
    assert [s.astimezone(AMS).time() for s in slots] == [time(0, 0)] * 400
    assert len({s.astimezone(AMS).date() for s in slots}) == 400
