"""The public-address rule: both sides of every special-purpose range, embedded IPv4, the resolver step."""

from __future__ import annotations

import socket
from collections.abc import Sequence

import pytest

from shared.public_address import NotPublic, Unresolvable, refusal, resolve_public

# (address, allowed), written out by hand from the IANA registries, not derived from the product's table: the
# last address before a range, its first, one inside, its last, and the first after it.
IPV4 = [
    ("0.0.0.0", False), ("0.255.255.255", False), ("1.0.0.0", True),
    ("9.255.255.255", True), ("10.0.0.0", False), ("10.255.255.255", False), ("11.0.0.0", True),
    ("100.63.255.255", True), ("100.64.0.0", False), ("100.100.100.200", False), ("100.127.255.255", False),
    ("100.128.0.0", True),
    ("126.255.255.255", True), ("127.0.0.1", False), ("127.255.255.255", False), ("128.0.0.0", True),
    ("169.253.255.255", True), ("169.254.0.0", False), ("169.254.169.254", False), ("169.254.255.255", False),
    ("169.255.0.0", True),
    ("172.15.255.255", True), ("172.16.0.0", False), ("172.31.255.255", False), ("172.32.0.0", True),
    ("191.255.255.255", True), ("192.0.0.0", False), ("192.0.0.9", False), ("192.0.0.170", False),
    ("192.0.0.255", False), ("192.0.1.0", True),
    ("192.0.1.255", True), ("192.0.2.0", False), ("192.0.2.255", False), ("192.0.3.0", True),
    ("192.31.195.255", True), ("192.31.196.0", False), ("192.31.196.255", False), ("192.31.197.0", True),
    ("192.52.192.255", True), ("192.52.193.0", False), ("192.52.193.255", False), ("192.52.194.0", True),
    ("192.88.98.255", True), ("192.88.99.0", False), ("192.88.99.255", False), ("192.88.100.0", True),
    ("192.167.255.255", True), ("192.168.0.0", False), ("192.168.255.255", False), ("192.169.0.0", True),
    ("192.175.47.255", True), ("192.175.48.0", False), ("192.175.48.255", False), ("192.175.49.0", True),
    ("198.17.255.255", True), ("198.18.0.0", False), ("198.19.255.255", False), ("198.20.0.0", True),
    ("198.51.99.255", True), ("198.51.100.0", False), ("198.51.100.255", False), ("198.51.101.0", True),
    ("203.0.112.255", True), ("203.0.113.0", False), ("203.0.113.255", False), ("203.0.114.0", True),
    ("223.255.255.255", True), ("224.0.0.0", False), ("239.255.255.255", False), ("240.0.0.0", False),
    ("255.255.255.255", False),
    ("8.8.8.8", True), ("93.184.216.34", True),
]  # fmt: skip

IPV6 = [
    ("::", False), ("::1", False), ("::2", False), ("::a00:1", False),  # IPv4-compatible: deprecated
    ("::ffff:127.0.0.1", False), ("::ffff:100.64.0.1", False), ("::ffff:93.184.216.34", True),
    ("64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff", False), ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
    ("64:ff9b::a9fe:a9fe", False), ("64:ff9b::5db8:d822", True),  # NAT64 of 93.184.216.34
    ("64:ff9b:1::5db8:d822", False),  # local-use translation
    ("100::1", False), ("100:0:0:1::1", False),
    ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", False), ("2000::1", True),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo: client 192.0.2.45 (documentation)
    ("2001:0:4136:e378:8000:63bf:a247:27dd", True),  # Teredo: server 65.54.227.120, client 93.184.216.34
    ("2001:0:a00:1:8000:63bf:a247:27dd", False),  # Teredo whose server is 10.0.0.1
    ("2001:1::1", False), ("2001:1::2", False), ("2001:3::1", False),
    ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", False), ("2001:200::", True),
    ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", True), ("2001:db8::1", False), ("2001:db9::", True),
    ("2002:a00:1::1", False), ("2002:6440:1::1", False), ("2002:c0a8:101::1", False),  # 6to4 of internal v4
    ("2002:5db8:d822::1", True),  # 6to4 of 93.184.216.34
    ("2606:2800:220:1:248:1893:25c8:1946", True),
    ("2620:4f:7fff:ffff:ffff:ffff:ffff:ffff", True), ("2620:4f:8000::1", False), ("2620:4f:8001::", True),
    ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", True), ("3fff::1", False),
    ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", False), ("3fff:1000::", True),
    ("4000::1", False), ("5f00::1", False),
    ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", False), ("fc00::1", False), ("fd00:ec2::254", False),
    ("fe80::1", False), ("fe80::1%eth0", False), ("fec0::1", False), ("ff02::1", False),
]  # fmt: skip


@pytest.mark.parametrize(("address", "allowed"), IPV4 + IPV6)
def test_only_globally_routable_unicast_addresses_pass(address: str, allowed: bool) -> None:
    assert (refusal(address) is None) is allowed, refusal(address)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        (
            "100.100.100.200",
            "a shared carrier-grade NAT address (RFC 6598; cloud metadata services live there)",
        ),
        ("169.254.169.254", "a link-local address (RFC 3927; cloud metadata services live there)"),
        ("2002:a00:1::1", "a 6to4 address of a private-use address (RFC 1918)"),
        ("64:ff9b::7f00:1", "a NAT64 address of a loopback address (RFC 1122)"),
        ("4000::1", "not a global unicast address (outside 2000::/3)"),
        ("mx.example", "not an IP address"),
    ],
)
def test_a_refusal_names_the_kind_of_address_not_the_address(address: str, reason: str) -> None:
    assert refusal(address) == reason


def resolver(answers: dict[str, Sequence[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    return resolve


async def test_a_host_resolving_to_one_internal_address_among_public_ones_is_refused() -> None:
    answers = resolver(
        {"mx.example": ["93.184.216.34", "2606:2800:220:1::1"], "mixed.example": ["8.8.8.8", "10.1.1.1"]}
    )
    assert await resolve_public("mx.example", 25, allow_private=False, timeout=1, resolver=answers) == [
        "93.184.216.34",
        "2606:2800:220:1::1",
    ]
    with pytest.raises(NotPublic) as refused:
        await resolve_public("mixed.example", 25, allow_private=False, timeout=1, resolver=answers)
    assert str(refused.value) == "mixed.example resolves to a private-use address (RFC 1918)"


async def test_private_addresses_are_allowed_only_when_asked_and_a_missing_name_is_unresolvable() -> None:
    answers = resolver({"sink.test": ["127.0.0.1"], "empty.test": []})
    assert await resolve_public("sink.test", 25, allow_private=True, timeout=1, resolver=answers) == [
        "127.0.0.1"
    ]
    with pytest.raises(NotPublic):
        await resolve_public("sink.test", 25, allow_private=False, timeout=1, resolver=answers)
    for host in ("nowhere.test", "empty.test"):
        with pytest.raises(Unresolvable) as unresolvable:
            await resolve_public(host, 25, allow_private=True, timeout=1, resolver=answers)
        assert str(unresolvable.value) == f"{host} does not resolve"


async def test_the_system_resolver_reads_ip_literals_without_asking_dns() -> None:
    with pytest.raises(NotPublic) as refused:
        await resolve_public("::ffff:10.0.0.1", 25, allow_private=False, timeout=1)
    assert (
        str(refused.value)
        == "::ffff:10.0.0.1 resolves to an IPv4-mapped address of a private-use address (RFC 1918)"
    )
    assert await resolve_public("93.184.216.34", 25, allow_private=False, timeout=1) == ["93.184.216.34"]
