"""Is an open hit likely a machine rather than a person? Pure (SPEC §2.6).

Apple Mail Privacy Protection fetches every image through Apple's proxies with a generic Mozilla user agent;
security scanners announce themselves; and nobody reads an e-mail within seconds of its sending. The client
rules are here; the time rule (TOO_SOON) is applied where the send time is at hand, in the batch statement of
`services/tracker/opens.py`.
"""

from __future__ import annotations

import functools
import ipaddress
from datetime import timedelta

# Apple's published egress ranges for Mail Privacy Protection (the densest blocks).
APPLE_MPP_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("17.0.0.0/8", "104.28.0.0/16", "172.224.0.0/12", "2a02:26f7::/32")
)
SCANNER_AGENTS = (
    "googleimageproxy",
    "barracuda",
    "mimecast",
    "proofpoint",
    "symantec",
    "bot",
    "crawler",
    "scanner",
)
TOO_SOON = timedelta(seconds=10)


@functools.lru_cache(maxsize=4096)  # the same few agents and proxy addresses fetch most images
def is_machine_client(user_agent: str, ip: str | None) -> bool:
    agent = user_agent.lower()
    if any(marker in agent for marker in SCANNER_AGENTS):
        return True
    if ip:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in APPLE_MPP_NETWORKS)
    return False
