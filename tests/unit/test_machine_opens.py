from datetime import UTC, datetime, timedelta

from services.tracker.machine import is_machine_open

SENT = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
LATER = SENT + timedelta(hours=1)
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"


def test_a_person_reading_later_is_human() -> None:
    assert not is_machine_open(BROWSER, "198.51.100.7", SENT, LATER)


def test_apple_privacy_proxy_scanners_and_instant_hits_are_machines() -> None:
    assert is_machine_open(BROWSER, "17.58.1.2", SENT, LATER)
    assert is_machine_open("Barracuda Sentinel", "198.51.100.7", SENT, LATER)
    assert is_machine_open(BROWSER, "198.51.100.7", SENT, SENT + timedelta(seconds=3))


def test_garbage_ip_is_not_an_error() -> None:
    assert not is_machine_open(BROWSER, "not-an-ip", SENT, LATER)
