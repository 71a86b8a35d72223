"""The public-address rule (SPEC §2.8): where a tenant may make our processes connect.

A tenant names SMTP hosts (later IMAP hosts and webhook URLs). Without this rule a sending domain could make
our workers connect to the loopback interface, the private network or a cloud metadata service. Only globally
routable unicast addresses pass: an allow-list judged against our own copy of IANA's special-purpose address
registries, because `ipaddress`'s flags differ between Python releases (3.11 passes 100.64.0.0/10,
192.0.0.0/24 and 2002::/16 as public). An address that embeds an IPv4 address (IPv4-mapped, NAT64, 6to4,
Teredo) is judged by what it embeds.

`refusal` is pure. `resolve_public` is the adapter every connection goes through: resolve, judge every
address, connect only to what was judged. Resolving again for each connection catches a name that was public
when the tenant saved it and points inside later (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence

# IANA IPv4 Special-Purpose Address Registry, plus multicast. Every block is refused, also the few the
# registry calls globally reachable (192.0.0.9 and .10, AS112, AMT): they are anycast services that answer at
# the nearest, often on-site, server, and no mail server lives there.
SPECIAL_IPV4: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(block), what)
    for block, what in (
        ("0.0.0.0/8", "a 'this network' address (RFC 791)"),
        ("10.0.0.0/8", "a private-use address (RFC 1918)"),
        (
            "100.64.0.0/10",
            "a shared carrier-grade NAT address (RFC 6598; cloud metadata services live there)",
        ),
        ("127.0.0.0/8", "a loopback address (RFC 1122)"),
        ("169.254.0.0/16", "a link-local address (RFC 3927; cloud metadata services live there)"),
        ("172.16.0.0/12", "a private-use address (RFC 1918)"),
        ("192.0.0.0/24", "an IETF protocol assignment (RFC 6890)"),
        ("192.0.2.0/24", "a documentation address (RFC 5737)"),
        ("192.31.196.0/24", "an AS112 anycast address (RFC 7535)"),
        ("192.52.193.0/24", "an AMT anycast address (RFC 7450)"),
        ("192.88.99.0/24", "a 6to4 relay anycast address (RFC 7526)"),
        ("192.168.0.0/16", "a private-use address (RFC 1918)"),
        ("192.175.48.0/24", "an AS112 anycast address (RFC 7534)"),
        ("198.18.0.0/15", "a benchmarking address (RFC 2544)"),
        ("198.51.100.0/24", "a documentation address (RFC 5737)"),
        ("203.0.113.0/24", "a documentation address (RFC 5737)"),
        ("224.0.0.0/4", "a multicast address (RFC 5771)"),
        ("240.0.0.0/4", "a reserved or broadcast address (RFC 1112, RFC 919)"),
    )
)

# IANA IPv6 Special-Purpose Address Registry, plus multicast and the other blocks outside global unicast
# (2000::/3) that have a name. The embedding blocks (IPv4-mapped, NAT64 64:ff9b::/96, 6to4, Teredo) are
# unwrapped before this table is read.
SPECIAL_IPV6: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(block), what)
    for block, what in (
        ("::/128", "the unspecified address (RFC 4291)"),
        ("::1/128", "a loopback address (RFC 4291)"),
        ("64:ff9b:1::/48", "a local-use IPv4/IPv6 translation address (RFC 8215)"),
        ("100::/64", "a discard-only address (RFC 6666)"),
        ("100:0:0:1::/64", "a dummy IPv6 prefix address (RFC 9780)"),
        ("2001::/23", "an IETF protocol assignment (RFC 2928)"),
        ("2001:db8::/32", "a documentation address (RFC 3849)"),
        ("2620:4f:8000::/48", "an AS112 anycast address (RFC 7534)"),
        ("3fff::/20", "a documentation address (RFC 9637)"),
        ("5f00::/16", "a segment routing identifier (RFC 9602)"),
        ("fc00::/7", "a unique-local address (RFC 4193)"),
        ("fe80::/10", "a link-local address (RFC 4291)"),
        ("fec0::/10", "a site-local address (RFC 3879)"),
        ("ff00::/8", "a multicast address (RFC 4291)"),
    )
)
GLOBAL_UNICAST_IPV6 = ipaddress.IPv6Network("2000::/3")
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix: the last 32 bits are the host


def refusal(text: str) -> str | None:
    """Why no connection may go to this address (None: it is globally routable unicast). A zone
    (`fe80::1%eth0`) is ignored; text that is not an IP address is refused."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(address, ipaddress.IPv4Address):
        return _ipv4_refusal(address)
    return _ipv6_refusal(address)


def _ipv4_refusal(address: ipaddress.IPv4Address) -> str | None:
    return next((what for block, what in SPECIAL_IPV4 if address in block), None)


def _ipv6_refusal(address: ipaddress.IPv6Address) -> str | None:
    wrapper, embedded = _embedded_ipv4(address)
    if wrapper:
        reason = next((why for inner in embedded if (why := _ipv4_refusal(inner))), None)
        return f"{wrapper} of {reason}" if reason else None
    special = next((what for block, what in SPECIAL_IPV6 if address in block), None)
    if special is None and address not in GLOBAL_UNICAST_IPV6:
        return "not a global unicast address (outside 2000::/3)"
    return special


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, list[ipaddress.IPv4Address]]:
    """The IPv4 addresses a packet to `address` ends up at, and what kind of embedding that is ("": none)."""
    if address.ipv4_mapped is not None:
        return "an IPv4-mapped address", [address.ipv4_mapped]
    if address in NAT64:
        return "a NAT64 address", [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    if address.sixtofour is not None:
        return "a 6to4 address", [address.sixtofour]
    if address.teredo is not None:
        return "a Teredo address", list(address.teredo)  # its server and its client
    return "", []


class UnusableHost(Exception):
    """A host we may not connect to; the text says why, in words fit for the tenant."""


class Unresolvable(UnusableHost):
    """The name does not resolve (now): perhaps a typo, perhaps a passing DNS failure."""


class NotPublic(UnusableHost):
    """The name resolves to an address the public-address rule refuses."""


Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses in the order the system prefers them."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve_public(
    host: str, port: int, *, allow_private: bool, timeout: float, resolver: Resolver = system_resolver
) -> list[str]:
    """The addresses to connect to for `host`, each judged (unless `allow_private`: development, or an
    operator's explicit choice). One refused address refuses the host: a name that mixes public and internal
    addresses is trusted with neither. The refusal names the kind of address, not the address, so that a
    tenant cannot map internal names through it."""
    try:
        addresses = list(await asyncio.wait_for(resolver(host, port), timeout))
    except (OSError, TimeoutError, UnicodeError) as error:  # gaierror is an OSError; a bad IDNA label raises
        raise Unresolvable(f"{host} does not resolve") from error
    if not addresses:
        raise Unresolvable(f"{host} does not resolve")
    if not allow_private:
        for address in addresses:
            if reason := refusal(address):
                raise NotPublic(f"{host} resolves to {reason}")
    return addresses
