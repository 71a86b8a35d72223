from services.tracker.machine import is_machine_client

BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"


def test_a_person_in_a_browser_is_not_a_machine_client() -> None:
    assert not is_machine_client(BROWSER, "198.51.100.7")


def test_apple_privacy_proxies_and_scanners_are_machine_clients() -> None:
    assert is_machine_client(BROWSER, "17.58.1.2")
    assert is_machine_client(BROWSER, "2a02:26f7::1")
    assert is_machine_client("Barracuda Sentinel", "198.51.100.7")
    assert is_machine_client("Mozilla/5.0 (compatible; Googlebot/2.1)", None)


def test_garbage_ip_is_not_an_error() -> None:
    assert not is_machine_client(BROWSER, "not-an-ip")
