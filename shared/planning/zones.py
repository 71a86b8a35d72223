"""The lead's own working hours (issue 19): a lead's time zone and country, each derived from the other where
the tz database says so, and the window a campaign in `recipient` mode plans that lead's messages in.

The tables are the tz database's own, from the directory Python's `zoneinfo` reads its zones from (the first
of `zoneinfo.TZPATH` that has them), read once:
- `iso3166.tab`: the ISO 3166 alpha-2 codes a lead's `country` may take, and the English names it may be
  given by.
- `zone.tab`, not `zone1970.tab`: it gives every zone exactly one country, and every country its own zones
  (zone1970.tab merges countries whose clocks agree since 1970: NL there is only `Europe/Brussels`).

A zone gives the country zone.tab lists it under. An alias (`US/Eastern`, `Asia/Calcutta`) gives the country
of the zone it links to where that zone is one country's alone: zone1970.tab lists no other country for it.
A link may join places of several countries (`America/Virgin` links to `America/Puerto_Rico`, whose clock the
Virgin Islands and a dozen others share), and then the alias gives none. The links are read from the
compiled source `tzdata.zi`; where it or zone1970.tab is missing, aliases give no country. A country
gives its principal zone (the first zone.tab lists) when every zone of the country keeps the same clock as it
over the planning horizon (`same_clock`); otherwise (US: New York, Chicago …) none. Other zones (`Etc/UTC`)
give no country.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import zoneinfo
from collections.abc import Hashable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

from shared.planning.slots import HORIZON_DAYS
from shared.planning.window import Window, is_known_country, is_known_timezone

Lead = TypeVar("Lead", bound=Hashable)


class WindowMode(enum.StrEnum):
    """Whose working hours a campaign's messages go in: `campaign`, the campaign window for every lead;
    `recipient`, the campaign window's days and hours in each lead's zone, with its country's holidays."""

    CAMPAIGN = "campaign"
    RECIPIENT = "recipient"


Transitions = tuple[tuple[datetime, timedelta], ...]


TABLES = ("iso3166.tab", "zone.tab")


class MissingTzTablesError(RuntimeError):
    """The system has no tz database tables: every lead's country would be refused and no zone derived."""


def read_table(name: str, directories: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """The rows of a tz database table (tab-separated, `#` comments), from the first directory that has it."""
    for directory in directories:
        path = Path(directory) / name
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            return tuple(tuple(line.split("\t")) for line in lines if line and not line.startswith("#"))
    raise MissingTzTablesError(
        f"the tz database's {name} is in none of {', '.join(directories) or 'no directories'}"
        " (Python's zoneinfo.TZPATH): install the system's tzdata package (apt-get install tzdata), or set"
        " PYTHONTZPATH to a directory that has it; leads' countries and zones are read from it"
    )


@functools.cache
def _table(name: str) -> tuple[tuple[str, ...], ...]:
    return read_table(name, zoneinfo.TZPATH)


def check_tables() -> None:
    """At a service's start, not at a lead's first country: raise MissingTzTablesError, saying what to
    install, when the tables are missing."""
    for name in TABLES:
        _table(name)


@functools.cache
def _countries() -> frozenset[str]:
    return frozenset(row[0] for row in _table("iso3166.tab"))


@functools.cache
def _zone_rows() -> tuple[tuple[str, str], ...]:
    """(country, zone) in zone.tab's order, for the zones this system's zoneinfo has."""
    return tuple((row[0], row[2]) for row in _table("zone.tab") if is_known_timezone(row[2]))


@functools.cache
def _codes_by_name() -> dict[str, str]:
    return {row[1].casefold(): row[0] for row in _table("iso3166.tab")}


def country_code(value: str) -> str | None:
    """The ISO 3166 alpha-2 code of the tz database's iso3166.tab that `value` gives, in any case: the code
    itself ('nl'), or the English name the table gives the country ('Netherlands', 'united states': what
    older CSV files carried in a `country` custom field); None for anything else."""
    code = value.upper()
    return code if code in _countries() else _codes_by_name().get(value.casefold())


def _optional_lines(name: str) -> list[str]:
    """The lines of a tz database file that may be missing (then none)."""
    for directory in zoneinfo.TZPATH:
        if (path := Path(directory) / name).is_file():
            return path.read_text(encoding="utf-8").splitlines()
    return []


@functools.cache
def _alias_countries() -> dict[str, str]:
    """Each alias of `tzdata.zi` (its `L target alias` lines) whose target is one country's alone in
    zone1970.tab, and that country."""
    single = {}
    for line in _optional_lines("zone1970.tab"):
        if line and not line.startswith("#") and len(row := line.split("\t")) >= 3 and "," not in row[0]:
            single[row[2]] = row[0]
    lines = _optional_lines("tzdata.zi")
    links = (parts for line in lines if len(parts := line.split()) == 3 and parts[0] == "L")
    return {alias: single[target] for _, target, alias in links if target in single}


@functools.cache
def country_of_zone(zone: str) -> str | None:
    """The country zone.tab lists `zone` under, or the one country of the zone it is an alias of."""
    listed = next((country for country, name in _zone_rows() if name == zone), None)
    return listed or _alias_countries().get(zone)


def _offset(zone: ZoneInfo, moment: datetime) -> timedelta:
    offset = moment.astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset


@functools.cache
def transitions(zone: str, year: int) -> Transitions:
    """The zone's UTC offset on 1 January of `year` (00:00 UTC), then every change of it until the planning
    horizon has passed for a plan starting in that year: (the first second of the new offset, the offset).

    Offsets are read once a day and a change is then found to the second by bisection: a zone changing its
    clock twice within one day and back would go unseen (no zone of the tz database does).
    """
    tz = ZoneInfo(zone)
    moment = datetime(year, 1, 1, tzinfo=UTC)
    end = moment + timedelta(days=HORIZON_DAYS + 366)
    current = _offset(tz, moment)
    found = [(moment, current)]
    while moment < end:
        before, after = moment, moment + timedelta(days=1)
        if _offset(tz, after) != current:
            while after - before > timedelta(seconds=1):
                middle = before + timedelta(seconds=(after - before).total_seconds() // 2)
                before, after = (before, middle) if _offset(tz, middle) != current else (middle, after)
            current = _offset(tz, after)
            found.append((after, current))
        moment += timedelta(days=1)
    return tuple(found)


def same_clock(first: str, second: str, year: int) -> bool:
    """Whether two zones show the same UTC offset at every moment from 1 January of `year` until the planning
    horizon of a plan starting that year has passed: the same offset then and the same changes."""
    return transitions(first, year) == transitions(second, year)


@functools.cache
def zone_of_country(country: str, year: int) -> str | None:
    """The country's principal zone (zone.tab's first) when all its zones keep the same clock as it (see
    `same_clock`; plans start in `year`); None when they do not, or zone.tab has no zone for it."""
    zones = [name for code, name in _zone_rows() if code == country]
    if not zones or not all(same_clock(zones[0], other, year) for other in zones[1:]):
        return None
    return zones[0]


@dataclasses.dataclass(frozen=True)
class ZonelessWindow(Window):
    """The window of a lead whose zone is unknown but whose country has a holiday calendar other than the
    campaign window's: the campaign window's days and hours, that country's holidays. The lead still counts
    as one without a zone."""


def recipient_window(campaign: Window, timezone: str | None, country: str | None, year: int) -> Window | None:
    """The window a lead's messages go in, in `recipient` mode: the campaign window's days and hours in the
    lead's zone (its own, else its country's), with its country's public holidays (its own, else its zone's;
    none where the `holidays` package has no calendar for it, or the campaign window skips none). When no
    zone is known for the lead, the campaign window's hours with its country's holidays (a ZonelessWindow),
    or None: the campaign window applies, as it is."""
    zone = timezone or (zone_of_country(country, year) if country else None)
    if zone is not None and not is_known_timezone(zone):  # a zone a later tz database dropped: none known
        zone = None
    if campaign.holidays is None:  # the campaign skips no holidays: nor do its leads
        return None if zone is None else _window_in(Window, campaign, zone, None)
    place = country or (country_of_zone(zone) if zone else None)
    calendar = place if place is not None and is_known_country(place) else None
    if zone is None:
        same = calendar in (None, campaign.holidays)
        return None if same else _window_in(ZonelessWindow, campaign, campaign.timezone, calendar)
    return _window_in(Window, campaign, zone, calendar)


@functools.lru_cache(maxsize=4096)
def _window_in(kind: type[Window], campaign: Window, zone: str, calendar: str | None) -> Window:
    """One Window object per (kind, campaign window, zone, calendar): the planner keeps one pass per
    window."""
    fields = {f.name: getattr(campaign, f.name) for f in dataclasses.fields(Window)}
    return kind(**{**fields, "timezone": zone, "holidays": calendar})


def recipient_windows(
    campaign: Window, places: Iterable[tuple[Lead, str | None, str | None]], year: int
) -> dict[Lead, Window]:
    """Each lead's window from its (lead, timezone, country) row; leads without a known zone are left out
    (they take the campaign window)."""
    # Each (timezone, country) once: an audience has many leads and few places.
    by_place: dict[tuple[str | None, str | None], Window | None] = {}
    found: dict[Lead, Window] = {}
    for lead, timezone, country in places:
        place = timezone, country
        if place not in by_place:
            by_place[place] = recipient_window(campaign, timezone, country, year)
        if (window := by_place[place]) is not None:
            found[lead] = window
    return found
