from datetime import UTC, date, datetime

from shared.kpis import Counters, kpis, timeline
from shared.planning import Window


def test_rates_and_tempo() -> None:
    counters = Counters(
        planned=10,
        sent=8,
        opened=4,
        opened_human=2,
        bounced=2,
        bounced_at_smtp=2,
        first_sent_at=datetime(2026, 11, 25, 8, 0, tzinfo=UTC),
        last_sent_at=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
    )
    result = kpis(counters, Window())
    assert result["open_rate"] == 0.5
    assert result["open_rate_human"] == 0.25
    assert result["bounce_rate"] == 0.2
    assert result["avg_tempo_per_hour"] == 2.0  # 8 sent over 4 open hours (09:00–13:00 local)


def test_rates_are_zero_without_denominator_and_tempo_divides_by_at_least_one_hour() -> None:
    result = kpis(Counters(), Window())
    assert result["open_rate"] == result["bounce_rate"] == result["avg_tempo_per_hour"] == 0.0
    one = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    assert kpis(Counters(sent=3, first_sent_at=one, last_sent_at=one), Window())["avg_tempo_per_hour"] == 3.0


def test_timeline_fills_every_day_up_to_today() -> None:
    days = {
        date(2026, 11, 25): {"planned": 2, "sent": 1, "opened": 0, "bounced": 0},
        date(2026, 11, 28): {"planned": 1},
    }
    points = timeline(days, today=date(2026, 11, 26))
    assert [p["date"] for p in points] == [date(2026, 11, 25), date(2026, 11, 26)]
    assert points[1] == {
        "date": date(2026, 11, 26), "planned": 0, "sent": 0, "opened": 0, "bounced": 0, "replied": 0,
        "clicked": 0, "complained": 0,
    }  # fmt: skip


def test_reply_click_and_complaint_rates_divide_by_sent() -> None:
    result = kpis(Counters(sent=20, replied=3, clicked=5, complained=1), Window())
    assert (result["total_replied"], result["total_clicked"], result["total_complained"]) == (3, 5, 1)
    assert (result["reply_rate"], result["click_rate"], result["complaint_rate"]) == (0.15, 0.25, 0.05)
    nothing_sent = kpis(Counters(replied=1), Window())
    assert nothing_sent["reply_rate"] == nothing_sent["click_rate"] == nothing_sent["complaint_rate"] == 0.0


def test_recipient_mode_tempo_counts_the_hours_between_first_and_last_send_on_days_that_had_a_send() -> None:
    """New York leads of an Amsterdam campaign: sends from Friday 08:00 to Monday 16:00 New York time (13:00
    and 21:00 UTC). The campaign window was open only 12 of those hours (Friday 14:00–17:00, Monday
    08:00–17:00 Amsterdam), most sends fell outside it; the tempo counts Friday from the first send to
    Amsterdam's midnight (10 h) and Monday from its midnight to the last send (22 h), not the weekend."""
    counters = Counters(
        sent=16,
        first_sent_at=datetime(2026, 2, 6, 13, 0, tzinfo=UTC),
        last_sent_at=datetime(2026, 2, 9, 21, 0, tzinfo=UTC),
    )
    days = {date(2026, 2, 6): {"planned": 8, "sent": 8}, date(2026, 2, 9): {"planned": 8, "sent": 8}}
    assert kpis(counters, Window(), "campaign", days)["avg_tempo_per_hour"] == 16 / 12
    assert kpis(counters, Window(), "recipient", days)["avg_tempo_per_hour"] == 16 / 32
    planned_only = {**days, date(2026, 2, 7): {"planned": 3, "sent": 0}}
    assert kpis(counters, Window(), "recipient", planned_only)["avg_tempo_per_hour"] == 16 / 32
