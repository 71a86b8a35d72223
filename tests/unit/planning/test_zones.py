"""A lead's zone and country, each from the other, and the window its messages go in (recipient mode)."""

from __future__ import annotations

import dataclasses
import zoneinfo
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from shared.planning import DomainSchedule, Window, plan_round_robin, zones
from shared.planning.slots import Reservation
from shared.planning.summary import summarize
from shared.planning.zones import (
    ZonelessWindow,
    country_code,
    country_of_zone,
    recipient_window,
    same_clock,
    transitions,
    zone_of_country,
)

CAMPAIGN = Window("Europe/Amsterdam", frozenset(range(5)), time(8), time(17), "NL")


@pytest.mark.parametrize(
    ("country", "zone"),
    [
        ("NL", "Europe/Amsterdam"),
        ("DE", "Europe/Berlin"),  # and Europe/Busingen, on the same clock: the first listed
        ("AR", "America/Argentina/Buenos_Aires"),  # a dozen zones, one clock today
        ("IN", "Asia/Kolkata"),
        ("US", None),  # New York, Chicago …
        ("AU", None),
        ("ZZ", None),
    ],
)
def test_a_country_gives_its_zone_only_where_its_zones_keep_one_clock(country: str, zone: str | None) -> None:
    assert zone_of_country(country, 2026) == zone


@pytest.mark.parametrize(
    ("zone", "country"),
    [
        ("America/New_York", "US"),
        ("Europe/Amsterdam", "NL"),
        ("Australia/Sydney", "AU"),
        ("Etc/UTC", None),
        ("US/Eastern", "US"),  # aliases, by the links of tzdata.zi
        ("Asia/Calcutta", "IN"),
        ("Europe/Kiev", "UA"),
        ("America/Virgin", None),  # links to Puerto Rico's zone, which a dozen countries' clocks share
        ("Atlantic/Jan_Mayen", None),  # to Berlin's: DE, DK, NO, SE, SJ
        ("Pacific/Yap", None),  # to Port Moresby's: PG, AQ, FM
    ],
)
def test_a_zone_gives_the_country_the_tz_database_lists_it_under(zone: str, country: str | None) -> None:
    assert country_of_zone(zone) == country


@pytest.mark.parametrize(
    ("given", "code"),
    [
        ("NL", "NL"),
        ("nl", "NL"),
        ("Netherlands", "NL"),  # older CSV files' `country` custom field
        ("united states", "US"),
        ("KOREA (SOUTH)", "KR"),
        ("NLD", None),
        ("ZZ", None),
        ("Holland", None),
        ("", None),
    ],
)
def test_a_country_is_its_alpha_2_code_or_its_english_name_in_any_case(given: str, code: str | None) -> None:
    assert country_code(given) == code


def test_the_same_clock_means_the_same_offset_and_the_same_changes_to_the_second() -> None:
    assert same_clock("Europe/Berlin", "Europe/Busingen", 2026)
    assert same_clock("Europe/Amsterdam", "Europe/Berlin", 2026)
    # London changes on the same instants as Berlin, to other offsets.
    assert not same_clock("Europe/London", "Europe/Berlin", 2026)
    # New York and Toronto share clocks; New York and Chicago do not.
    assert same_clock("America/New_York", "America/Toronto", 2026)
    assert not same_clock("America/New_York", "America/Chicago", 2026)
    changes = dict(transitions("America/New_York", 2026))
    assert changes[datetime(2026, 3, 8, 7, tzinfo=UTC)] == timedelta(hours=-4)  # 02:00 EST
    assert changes[datetime(2026, 11, 1, 6, tzinfo=UTC)] == timedelta(hours=-5)  # 02:00 EDT


def test_a_lead_s_window_is_the_campaign_s_hours_in_its_zone_with_its_country_s_holidays() -> None:
    new_york = recipient_window(CAMPAIGN, "America/New_York", None, 2026)
    assert new_york is not None
    assert (new_york.timezone, new_york.holidays) == ("America/New_York", "US")
    assert (new_york.days, new_york.start, new_york.end) == (CAMPAIGN.days, CAMPAIGN.start, CAMPAIGN.end)
    dutch = recipient_window(CAMPAIGN, None, "NL", 2026)
    assert dutch == CAMPAIGN
    # A zone with a country of its own: the zone's hours, the country's holidays.
    assert recipient_window(CAMPAIGN, "Asia/Kolkata", "DE", 2026) == Window(
        "Asia/Kolkata", CAMPAIGN.days, time(8), time(17), "DE"
    )
    # No zone known (the US has many): the campaign window's hours, the country's holidays.
    zoneless_us = ZonelessWindow("Europe/Amsterdam", CAMPAIGN.days, time(8), time(17), "US")
    assert recipient_window(CAMPAIGN, None, "US", 2026) == zoneless_us
    assert recipient_window(CAMPAIGN, None, None, 2026) is None
    # A stored zone this system's tz database no longer has: none known, rather than a planner that fails.
    assert recipient_window(CAMPAIGN, "Mars/Olympus", "US", 2026) == zoneless_us
    # No zone, and the campaign's own calendar, or none known: the campaign window as it is.
    assert recipient_window(CAMPAIGN, "Mars/Olympus", "NL", 2026) is None
    assert recipient_window(dataclasses.replace(CAMPAIGN, holidays=None), None, "US", 2026) is None
    # A zone without a country in zone.tab: its hours, no holidays.
    utc = recipient_window(CAMPAIGN, "Etc/UTC", None, 2026)
    assert utc == Window("Etc/UTC", CAMPAIGN.days, time(8), time(17), None)


def test_thanksgiving_is_skipped_for_a_us_lead_while_a_dutch_lead_is_mailed_that_day() -> None:
    thanksgiving = datetime(2026, 11, 26, 6, tzinfo=UTC)  # a Thursday
    us = recipient_window(CAMPAIGN, "America/New_York", None, 2026)
    nl = recipient_window(CAMPAIGN, None, "NL", 2026)
    assert us is not None
    assert nl is not None
    schedule = DomainSchedule(CAMPAIGN, 1200)
    plan = plan_round_robin(["nl", "us"], ["d"], {"d": schedule}, thanksgiving, windows={"nl": nl, "us": us})
    slots = {lead: slot.start for lead, _, slot in plan if slot is not None}
    assert slots["nl"] == datetime(2026, 11, 26, 8, tzinfo=nl.zone)
    assert slots["us"] == datetime(2026, 11, 27, 8, tzinfo=us.zone)


def test_a_us_lead_without_a_zone_is_mailed_in_the_campaign_s_hours_but_not_on_thanksgiving() -> None:
    """And counts as a lead without a zone in the dry-run, beside a Dutch lead mailed that day."""
    thanksgiving = datetime(2026, 11, 26, 6, tzinfo=UTC)
    us = recipient_window(CAMPAIGN, None, "US", 2026)
    assert us is not None
    plan = plan_round_robin(
        ["nl", "us"], ["d"], {"d": DomainSchedule(CAMPAIGN, 1200)}, thanksgiving, windows={"us": us}
    )
    slots = {lead: slot.start for lead, _, slot in plan if slot is not None}
    assert slots == {
        "nl": datetime(2026, 11, 26, 8, tzinfo=CAMPAIGN.zone),
        "us": datetime(2026, 11, 27, 8, tzinfo=CAMPAIGN.zone),  # Friday 08:00 in Amsterdam
    }
    planned = [(lead, "d", Reservation(at, at + timedelta(minutes=20))) for lead, at in slots.items()]
    assert summarize(planned, CAMPAIGN, [], "recipient", {"us": us})["leads_without_zone"] == 2


def test_a_lead_s_slots_keep_its_local_hours_across_its_clock_change_not_the_campaign_s() -> None:
    """Between the US change (8 March 2026) and the EU one (29 March) New York is 5 hours behind Amsterdam."""
    us = recipient_window(CAMPAIGN, "America/New_York", None, 2026)
    assert us is not None
    friday, monday = datetime(2026, 3, 6, 12, tzinfo=UTC), datetime(2026, 3, 9, 12, tzinfo=UTC)
    for start, utc_hour in ((friday, 13), (monday, 12)):
        slot = DomainSchedule(CAMPAIGN, 1200).earliest_free(start, window=us)
        assert slot == start.replace(hour=utc_hour)  # 08:00 in New York, EST then EDT


def test_the_daily_cap_counts_campaign_days_for_a_lead_in_another_zone() -> None:
    """Sydney's working day (08:00–17:00 AEDT) is 22:00–07:00 in Amsterdam, across two Amsterdam days: a cap
    of 2 a day fills the Amsterdam day and skips the rest of it, to Amsterdam's next midnight."""
    sydney = recipient_window(CAMPAIGN, "Australia/Sydney", None, 2026)
    assert sydney is not None
    schedule = DomainSchedule(CAMPAIGN, 1200, daily_cap=2)
    start = datetime(2026, 2, 2, 20, tzinfo=UTC)  # Tuesday 07:00 in Sydney, Monday 21:00 in Amsterdam
    slots = [schedule.take(start, window=sydney).start for _ in range(5)]
    amsterdam_days = [CAMPAIGN.local_date(s) for s in slots]
    assert amsterdam_days.count(date(2026, 2, 2)) == 2
    assert all(amsterdam_days.count(day) <= 2 for day in amsterdam_days)
    local = [s.astimezone(sydney.zone) for s in slots]
    assert [(t.date(), t.time()) for t in local[:3]] == [
        (date(2026, 2, 3), time(8)),
        (date(2026, 2, 3), time(8, 20)),
        (date(2026, 2, 3), time(10)),  # Amsterdam's Tuesday begins at 10:00 in Sydney
    ]


def test_a_small_cap_on_a_fine_grid_in_a_lead_s_zone_stays_cheap() -> None:
    """A one-second grid and one e-mail a day: each full day is stepped over, not walked through."""
    every_day = Window("UTC", frozenset(range(7)), time(0), time(0), None, ends_at_midnight=True)
    tokyo = Window("Asia/Tokyo", every_day.days, time(0), time(0), None, ends_at_midnight=True)
    schedule = DomainSchedule(every_day, 1, daily_cap=1)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    leads = list(range(400))
    plan = plan_round_robin(leads, ["d"], {"d": schedule}, start, windows=dict.fromkeys(leads, tokyo))
    days = [slot.start.date() for _, _, slot in plan if slot is not None]
    assert days == [date(2026, 1, 1) + timedelta(days=n) for n in range(400)]


def test_the_dry_run_counts_each_step_in_the_lead_s_zone_on_campaign_days() -> None:
    """A New York lead mailed Friday 16:00 local (22:00 in Amsterdam): its step three days later is Monday
    16:00 in New York, which is Monday in Amsterdam too; the Sydney lead's Monday 08:00 is Sunday there."""
    us = recipient_window(CAMPAIGN, "America/New_York", None, 2026)
    au = recipient_window(CAMPAIGN, "Australia/Sydney", None, 2026)
    assert us is not None
    assert au is not None
    friday_us = datetime(2026, 3, 6, 21, tzinfo=UTC)
    friday_au = datetime(2026, 3, 5, 21, tzinfo=UTC)  # Friday 08:00 in Sydney
    planned = [
        ("us", "d", Reservation(friday_us, friday_us + timedelta(minutes=20))),
        ("au", "d", Reservation(friday_au, friday_au + timedelta(minutes=20))),
    ]
    summary = summarize(planned, CAMPAIGN, [3], "recipient", {"us": us, "au": au})
    [step] = summary["steps_expected"]
    assert step["per_day"] == [{"date": date(2026, 3, 8), "count": 1}, {"date": date(2026, 3, 9), "count": 1}]


def test_without_a_throttle_a_plan_and_a_single_take_agree_when_a_cap_fills_the_day_of_a_lead_s_slot() -> (
    None
):
    """Interval 0, a cap of one a campaign day (UTC), two Tokyo leads from Sunday 22:00 UTC (Monday 07:00
    in Tokyo): a gets Tokyo's Monday 08:00, Sunday 23:00 UTC, which fills Sunday; b the moment Monday begins
    in UTC, Monday 09:00 in Tokyo, whether planned after a or taken alone beside a's slot."""
    utc = Window("UTC", frozenset(range(7)), time(8), time(17), None)
    tokyo = Window("Asia/Tokyo", frozenset(range(7)), time(8), time(17), None)
    start = datetime(2026, 3, 1, 22, tzinfo=UTC)
    schedule = DomainSchedule(utc, 0, daily_cap=1)
    plan = plan_round_robin(["a", "b"], ["d"], {"d": schedule}, start, windows={"a": tokyo, "b": tokyo})
    a_slot = datetime(2026, 3, 1, 23, tzinfo=UTC)
    assert [slot.start for _, _, slot in plan if slot is not None] == [
        a_slot,
        datetime(2026, 3, 2, tzinfo=UTC),
    ]
    alone = DomainSchedule(utc, 0, [Reservation(a_slot, a_slot)], daily_cap=1)
    assert alone.take(start, window=tokyo).start == datetime(2026, 3, 2, tzinfo=UTC)


def test_a_lead_s_pass_steps_over_the_runs_other_zones_took_to_the_first_gap_wide_enough() -> None:
    """Other zones' 10-minute slots fill 08:00–09:00, 09:05–10:05 and 10:20–12:00 UTC: the hole at 09:00 is
    too narrow for a span, 10:00 overlaps the run that ends 10:05, 10:10 is free. Two London leads (UTC in
    February) get 10:10 and 12:00, the pass jumping over each run to where a walk over the grid would stop."""
    london = recipient_window(CAMPAIGN, "Europe/London", None, 2026)
    assert london is not None
    monday = datetime(2026, 2, 2, tzinfo=UTC)
    runs = [(8 * 60, 6), (9 * 60 + 5, 6), (10 * 60 + 20, 10)]  # (first start in minutes, slots)
    starts = [monday + timedelta(minutes=first + 10 * k) for first, n in runs for k in range(n)]
    schedule = DomainSchedule(CAMPAIGN, 600, [Reservation(s, s + timedelta(minutes=10)) for s in starts])
    plan = plan_round_robin(["x", "y"], ["d"], {"d": schedule}, monday, windows={"x": london, "y": london})
    assert [slot.start for _, _, slot in plan if slot is not None] == [
        monday.replace(hour=10, minute=10),
        monday.replace(hour=12),
    ]


def test_a_campaign_that_skips_no_holidays_skips_none_for_its_leads_either() -> None:
    """`holidays: null` on the campaign: a US lead is mailed on Thanksgiving, in its own zone."""
    every_day = dataclasses.replace(CAMPAIGN, holidays=None)
    us = recipient_window(every_day, "America/New_York", "US", 2026)
    assert us is not None
    assert us.holidays is None
    thanksgiving = datetime(2026, 11, 26, 13, tzinfo=UTC)  # 08:00 in New York
    assert DomainSchedule(every_day, 600).earliest_free(thanksgiving, window=us) == thanksgiving


def test_a_system_without_the_tz_tables_fails_at_the_check_saying_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No zone.tab or iso3166.tab where zoneinfo looks: the start-up check fails, naming where it looked and
    the package to install, rather than every lead's country being refused without a word."""
    monkeypatch.setattr(zoneinfo, "TZPATH", (str(tmp_path),))
    zones._table.cache_clear()
    try:
        with pytest.raises(zones.MissingTzTablesError) as raised:
            zones.check_tables()
    finally:
        zones._table.cache_clear()
    assert str(raised.value) == (
        f"the tz database's iso3166.tab is in none of {tmp_path} (Python's zoneinfo.TZPATH): install the"
        " system's tzdata package (apt-get install tzdata), or set PYTHONTZPATH to a directory that has it;"
        " leads' countries and zones are read from it"
    )
