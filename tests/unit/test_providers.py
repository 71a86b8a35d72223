"""Receiving providers: the registrable domain of the most preferred MX host."""

import pytest

from shared.providers import provider_of, registrable_domain


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("aspmx.l.google.com", "google.com"),
        ("ALT1.ASPMX.L.GOOGLE.COM.", "google.com"),
        ("client-nl.mail.protection.outlook.com", "outlook.com"),
        ("mx1.mail.example.co.uk", "example.co.uk"),
        ("inbound-smtp.eu-west-1.amazonaws.com", "amazonaws.com"),  # ICANN suffixes only: one provider
        ("mx.provider-a.test", "provider-a.test"),
        ("co.uk", "co.uk"),  # a public suffix stands for itself
        ("localhost", "localhost"),
    ],
)
def test_a_host_belongs_to_its_registrable_domain(host: str, expected: str) -> None:
    assert registrable_domain(host) == expected


def test_the_most_preferred_mx_names_the_provider() -> None:
    mx = [(20, "alt2.aspmx.l.google.com"), (5, "mx.backup.example"), (10, "aspmx.l.google.com")]
    assert provider_of("client.example", mx) == "backup.example"


def test_equal_preferences_pick_the_first_host_by_name() -> None:
    mx = [(10, "mx2.zeta.example"), (10, "mx1.alpha.example")]
    assert provider_of("client.example", mx) == "alpha.example"


@pytest.mark.parametrize("mx", [[], [(0, ".")], [(0, "")]])
def test_a_domain_without_a_usable_mx_is_its_own_provider(mx: list[tuple[int, str]]) -> None:
    assert provider_of("Client.Example", mx) == "client.example"
