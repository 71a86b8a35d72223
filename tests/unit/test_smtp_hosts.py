import pytest

from shared.smtp_hosts import refusal


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "::1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "fd00:ec2::254",
     "::ffff:127.0.0.1", "0.0.0.0", "fe80::1%eth0"],
)  # fmt: skip
def test_internal_addresses_are_refused(address: str) -> None:
    assert refusal([address]) is not None


def test_public_addresses_pass_and_one_bad_address_is_enough_to_refuse() -> None:
    assert refusal(["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]) is None
    assert refusal(["93.184.216.34", "10.0.0.1"]) == "10.0.0.1 is not a public address"
