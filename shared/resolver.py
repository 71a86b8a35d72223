"""DNS lookups (the DKIM records, the domain checks): dnspython's async resolver, asking `Settings.dns_server`
when it is set (tests run dnsmasq on a free port), the system's resolver otherwise.

A name that does not exist, or has no record of the type, answers empty; a resolver that does not answer in
time, or refuses, raises `DnsUnavailable`: "no record" and "could not look" are different verdicts.
"""

from __future__ import annotations

from typing import Any

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver


class DnsUnavailable(RuntimeError):
    """The resolver did not answer; the message says which name and why."""


class Dns:
    def __init__(self, server: str | None, timeout: float) -> None:
        if server is None:
            self._resolver = dns.asyncresolver.Resolver()
        else:
            host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "53")
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [dns.nameserver.Do53Nameserver(host, int(port))]
        self._resolver.lifetime = timeout

    async def txt(self, name: str) -> list[str]:
        """Each TXT record of `name`, its strings joined (a DKIM key is longer than one string may be)."""
        answer = await self._query(name, "TXT")
        return [b"".join(record.strings).decode(errors="replace") for record in answer]

    async def mx(self, name: str) -> list[tuple[int, str]]:
        """(preference, host) of each MX record, most preferred first."""
        return (await self.mx_with_ttl(name))[0]

    async def mx_with_ttl(self, name: str) -> tuple[list[tuple[int, str]], int | None]:
        """The MX records as `mx` gives them, and how long they may be kept (None: there are none)."""
        answer = await self._query(name, "MX")
        records = sorted((r.preference, r.exchange.to_text(omit_final_dot=True)) for r in answer)
        return records, (answer.rrset.ttl if records and answer.rrset is not None else None)

    async def addresses(self, name: str) -> list[str]:
        return [record.to_text() for kind in ("A", "AAAA") for record in await self._query(name, kind)]

    async def _query(self, name: str, kind: str) -> Any:
        """The answer (iterating gives its records), or an empty list when there is none."""
        try:
            return await self._resolver.resolve(name, kind, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.YXDOMAIN) as error:
            raise DnsUnavailable(f"no DNS answer for {kind} {name}: {error}") from error
