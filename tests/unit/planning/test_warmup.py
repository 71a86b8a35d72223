"""Warm-up: the daily cap of each day of a plan, against the formula computed independently."""

import math
from datetime import date, timedelta
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.planning.warmup import Warmup

START = date(2026, 12, 1)


def reference_cap(start: int, growth: int, maximum: int, n: int) -> int:
    """Day n (1 = the start date): min(max, floor(start × (1 + g/100)^(n−1))), exactly."""
    return min(maximum, math.floor(Fraction(start) * Fraction(100 + growth, 100) ** (max(n, 1) - 1)))


def test_ten_a_day_growing_a_fifth_a_day_up_to_a_hundred() -> None:
    plan = Warmup(start_per_day=10, growth_percent=20, max_per_day=100, start_date=START)
    caps = [plan.cap_on(START + timedelta(days=n)) for n in range(15)]
    assert caps == [10, 12, 14, 17, 20, 24, 29, 35, 42, 51, 61, 74, 89, 100, 100]


def test_growth_compounds_on_the_exact_volume_not_on_the_rounded_caps() -> None:
    plan = Warmup(start_per_day=10, growth_percent=5, max_per_day=1000, start_date=START)
    assert [plan.cap_on(START + timedelta(days=n)) for n in range(6)] == [10, 10, 11, 11, 12, 12]


@pytest.mark.parametrize("before", [1, 30, 4000])
def test_a_day_before_the_start_has_the_first_days_cap(before: int) -> None:
    plan = Warmup(start_per_day=7, growth_percent=50, max_per_day=100, start_date=START)
    assert plan.cap_on(START - timedelta(days=before)) == 7
    assert plan.day_number(START - timedelta(days=before)) == 1 - before


def test_a_flat_plan_stays_at_its_start_volume() -> None:
    plan = Warmup(start_per_day=5, growth_percent=0, max_per_day=50, start_date=START)
    assert {plan.cap_on(START + timedelta(days=n)) for n in range(0, 3000, 97)} == {5}


@settings(max_examples=300, deadline=None)
@given(
    start=st.integers(1, 500),
    growth=st.integers(0, 1000),
    extra=st.integers(0, 2**31 - 1000),
    n=st.integers(-5, 5000),
)
def test_every_days_cap_follows_the_formula(start: int, growth: int, extra: int, n: int) -> None:
    maximum = start + extra
    plan = Warmup(start, growth, maximum, START)
    day = START + timedelta(days=n - 1)
    assert plan.day_number(day) == n
    assert plan.cap_on(day) == reference_cap(start, growth, maximum, n)
    assert start <= plan.cap_on(day) <= maximum
    assert plan.cap_on(day) <= plan.cap_on(day + timedelta(days=1))
