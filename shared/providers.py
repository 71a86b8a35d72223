"""Receiving providers (issue 18): recipients are grouped by the registrable domain of their domain's most
preferred MX host: `aspmx.l.google.com` → `google.com`, `x.mail.protection.outlook.com` → `outlook.com`.

The registrable domain comes from the Public Suffix List as the `publicsuffixlist` package ships it (its ICANN
section, so that a cloud provider's private suffixes do not split one provider into many; no download at run
time: the list is as fresh as the locked package). A domain without MX records (or with a null MX, RFC 7505)
is its own provider. `resolve` asks DNS (`shared.resolver.Dns`); the caller caches the answer until
`Resolution.expires_at` and, when DNS does not answer, lets the domain stand for itself and asks again later.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

from publicsuffixlist import PublicSuffixList

from shared.resolver import Dns

MIN_TTL_SECONDS = 60  # an MX answer is kept at least this long, whatever its TTL says
NO_MX_TTL_SECONDS = 3600  # a domain without MX records is asked about again after this


@functools.cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList(only_icann=True)


def registrable_domain(host: str) -> str:
    """The public suffix plus one label (`mx1.mail.example.co.uk` → `example.co.uk`); a host that is a public
    suffix itself, or has one label, stays as it is."""
    host = host.lower().rstrip(".")
    return _suffixes().privatesuffix(host) or host


def provider_of(domain: str, mx: list[tuple[int, str]]) -> str:
    """The provider of a recipient domain from its MX records (preference, host): the registrable domain of
    the most preferred host (ties: the first by name), or the domain itself without a usable MX."""
    hosts = sorted((preference, host.lower().rstrip(".")) for preference, host in mx)
    usable = [host for _, host in hosts if host]  # a null MX ("." → "") accepts no mail
    return registrable_domain(usable[0]) if usable else domain.lower()


@dataclass(frozen=True)
class Resolution:
    domain: str
    provider: str
    expires_at: datetime


async def resolve(dns: Dns, domain: str, now: datetime, max_seconds: int) -> Resolution:
    """The provider of `domain`, to be kept until `expires_at` (the answer's TTL, at least MIN_TTL_SECONDS and
    at most `max_seconds`). Raises `DnsUnavailable` when DNS does not answer."""
    mx, ttl = await dns.mx_with_ttl(domain)
    seconds = NO_MX_TTL_SECONDS if ttl is None else ttl
    seconds = min(max(seconds, MIN_TTL_SECONDS), max_seconds)
    return Resolution(domain, provider_of(domain, mx), now + timedelta(seconds=seconds))
