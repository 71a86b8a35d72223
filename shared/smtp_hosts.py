"""Which SMTP hosts a tenant may point us at (SPEC §2.8). Pure: addresses in, a reason to refuse out.

A tenant chooses the host, so without this check a sending domain could make our workers connect to the
loopback interface, the private network or a cloud metadata service.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


def refusal(addresses: Iterable[str]) -> str | None:
    """Why these resolved addresses may not be used (None: all are public)."""
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.is_loopback:
            return f"{text} is a loopback address"
        if address.is_link_local:
            return f"{text} is a link-local address (cloud metadata services live there)"
        if address.is_private or address.is_reserved or address.is_multicast or address.is_unspecified:
            return f"{text} is not a public address"
    return None
