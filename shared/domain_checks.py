"""Whether a sending domain's DNS lets its mail through: SPF, DKIM, DMARC and MX, each with a plain verdict
and what to fix, after the requirements Gmail and Yahoo set for bulk senders in 2024 (SPF or DKIM passing and
aligned, a DMARC record of at least p=none, and a domain that can receive the answers).

SPF is evaluated (RFC 7208 §4–5: ip4, ip6, a, mx, include, redirect, all, with the ten-lookup limit) for each
address of the domain's SMTP host. `exists` and `ptr` are not evaluated; a record that needs them gets a
warning instead of a guess. Lookups go through `shared.resolver.Dns`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal, Protocol

from shared.dkim import Record

Status = Literal["pass", "warn", "fail"]
SPF_LOOKUP_LIMIT = 10  # RFC 7208 §4.6.4: more is a permanent error at every receiver


class Lookups(Protocol):
    async def txt(self, name: str) -> list[str]: ...
    async def mx(self, name: str) -> list[tuple[int, str]]: ...
    async def addresses(self, name: str) -> list[str]: ...


@dataclass(frozen=True)
class Verdict:
    check: Literal["spf", "dkim", "dmarc", "mx"]
    status: Status
    detail: str  # what we found, in plain words
    fix: str | None = None  # what to do about it; None when nothing needs doing
    record: str | None = None  # the record we read, as published


async def check_domain(
    dns: Lookups, domain: str, smtp_host: str, dkim_records: list[Record]
) -> list[Verdict]:
    return [
        await check_spf(dns, domain, smtp_host),
        await check_dkim(dns, dkim_records),
        await check_dmarc(dns, domain),
        await check_mx(dns, domain),
    ]


class SpfError(Exception):
    """A permanent error in the record (RFC 7208 permerror): receivers treat the domain as having no SPF."""


async def check_spf(dns: Lookups, domain: str, smtp_host: str) -> Verdict:
    records = _spf_records(await dns.txt(domain))
    suggestion = f"v=spf1 a:{smtp_host} ~all"
    if not records:
        return Verdict("spf", "fail", "no SPF record", f"publish a TXT record at {domain}: {suggestion}")
    if len(records) > 1:
        return Verdict(
            "spf", "fail", "more than one SPF record: receivers ignore them all",
            f"merge them into one TXT record at {domain}", " | ".join(records),
        )  # fmt: skip
    addresses = await dns.addresses(smtp_host)
    if not addresses:
        return Verdict("spf", "warn", f"{smtp_host} has no address to check against", None, records[0])
    evaluator = _Spf(dns)
    try:
        results = {
            address: await evaluator.check(domain, ipaddress.ip_address(address)) for address in addresses
        }
    except SpfError as error:
        return Verdict(
            "spf", "fail", f"the record is broken: {error}", f"correct the TXT record at {domain}", records[0]
        )
    refused = sorted(address for address, result in results.items() if result != "pass")
    if not refused:
        return Verdict("spf", "pass", f"allows {smtp_host}", None, records[0])
    if evaluator.unevaluated:
        detail = f"uses {', '.join(sorted(evaluator.unevaluated))}, which we do not evaluate"
        return Verdict("spf", "warn", detail, f"make sure it allows {smtp_host}", records[0])
    detail = f"does not allow {smtp_host} ({', '.join(f'{a}: {results[a]}' for a in refused)})"
    return Verdict(
        "spf", "fail", detail, f"add a:{smtp_host} (or your provider's include:) before the all", records[0]
    )


def _spf_records(texts: list[str]) -> list[str]:
    return [text for text in texts if text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")]


class _Spf:
    """One evaluation (its lookups count towards one limit)."""

    def __init__(self, dns: Lookups) -> None:
        self._dns = dns
        self._lookups = 0
        self.unevaluated: set[str] = set()

    async def check(self, domain: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        """pass, fail, softfail, neutral or none (RFC 7208 §2.6)."""
        records = _spf_records(await self._dns.txt(domain))
        if not records:
            return "none"
        if len(records) > 1:
            raise SpfError(f"{domain} has more than one SPF record")
        redirect = None
        for term in records[0].split()[1:]:
            if term.lower().startswith("redirect="):
                redirect = term.split("=", 1)[1]
                continue
            if "=" in term.split(":", 1)[0]:
                continue  # another modifier (exp=): no effect on the result
            qualifier = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}.get(term[0])
            mechanism = term[1:] if qualifier else term
            if await self._matches(mechanism, domain, address):
                return qualifier or "pass"
        if redirect is not None:
            self._count()
            result = await self.check(redirect, address)
            if result == "none":
                raise SpfError(f"redirect to {redirect}, which has no SPF record")
            return result
        return "neutral"

    async def _matches(
        self, mechanism: str, domain: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> bool:
        name, _, argument = mechanism.partition(":")
        name = name.lower()
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            try:
                return address in ipaddress.ip_network(argument, strict=False)
            except ValueError as error:
                raise SpfError(f"{mechanism} is no network") from error
        if name.split("/")[0] in ("a", "mx"):
            self._count()
            target, v4, v6 = _target(mechanism, domain)
            hosts = [target] if name[0] == "a" else [host for _, host in await self._dns.mx(target)]
            for host in hosts:
                for found in await self._dns.addresses(host):
                    network = ipaddress.ip_network(f"{found}/{v6 if ':' in found else v4}", strict=False)
                    if address in network:
                        return True
            return False
        if name == "include":
            self._count()
            result = await self.check(argument, address)
            if result == "none":
                raise SpfError(f"include:{argument} has no SPF record")
            return result == "pass"
        if name in ("exists", "ptr"):
            self._count()
            self.unevaluated.add(name)
            return False
        raise SpfError(f"unknown mechanism {mechanism}")

    def _count(self) -> None:
        self._lookups += 1
        if self._lookups > SPF_LOOKUP_LIMIT:
            raise SpfError(f"more than {SPF_LOOKUP_LIMIT} DNS lookups")


def _target(mechanism: str, domain: str) -> tuple[str, int, int]:
    """The domain an a or mx mechanism names (the record's own by default) and its prefix lengths for IPv4
    and IPv6: `a`, `a/24`, `a:host`, `mx:host/24//64`, `a//64`."""
    rest = mechanism[1:] if mechanism[:1].lower() == "a" else mechanism[2:]
    host, cidr = domain, rest
    if rest.startswith(":"):
        host, slash, lengths = rest[1:].partition("/")
        cidr = slash + lengths
    if cidr.startswith("//"):
        v4, v6 = "", cidr[2:]
    else:
        v4, _, v6 = cidr[1:].partition("//")
    try:
        return host, int(v4 or 32), int(v6 or 128)
    except ValueError as error:
        raise SpfError(f"{mechanism} has a bad prefix length") from error


async def check_dkim(dns: Lookups, expected: list[Record]) -> Verdict:
    if not expected:
        return Verdict(
            "dkim", "fail", "no DKIM key: mail goes out unsigned", "generate one with POST /domains/{id}/dkim"
        )
    missing, different = [], []
    for record in expected:
        published = [text for text in await dns.txt(record.name) if "p=" in text]
        if not published:
            missing.append(record)
        elif not any(_dkim_key(text) == _dkim_key(record.value) for text in published):
            different.append(record)
    if not missing and not different:
        return Verdict("dkim", "pass", f"{len(expected)} key(s) published and matching ours")
    wrong = missing + different
    detail = "; ".join(
        f"{r.name}: {'not published' if r in missing else 'published with another key'}" for r in wrong
    )
    fix = "; ".join(f"publish a TXT record at {r.name}: {r.value}" for r in wrong)
    return Verdict("dkim", "fail", detail, fix)


def _dkim_key(text: str) -> str:
    tags = dict(part.strip().split("=", 1) for part in text.split(";") if "=" in part)
    return "".join(tags.get("p", "").split())


async def check_dmarc(dns: Lookups, domain: str) -> Verdict:
    name = f"_dmarc.{domain}"
    records = [text for text in await dns.txt(name) if text.replace(" ", "").upper().startswith("V=DMARC1")]
    fix = f"publish a TXT record at {name}: v=DMARC1; p=none; rua=mailto:dmarc@{domain}"
    if not records:
        return Verdict("dmarc", "fail", "no DMARC record (Gmail and Yahoo require one of bulk senders)", fix)
    if len(records) > 1:
        return Verdict("dmarc", "fail", "more than one DMARC record: receivers ignore them all", fix)
    tags = {k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in records[0].split(";"))}
    policy = tags.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return Verdict("dmarc", "fail", "the record has no valid policy (p=)", fix, records[0])
    if policy == "none":
        detail = (
            "policy none: enough for Gmail and Yahoo; quarantine or reject protects the domain from spoofing"
        )
        return Verdict("dmarc", "pass", detail, None, records[0])
    return Verdict("dmarc", "pass", f"policy {policy}", None, records[0])


async def check_mx(dns: Lookups, domain: str) -> Verdict:
    exchangers = await dns.mx(domain)
    if not exchangers:
        return Verdict(
            "mx", "fail", "no MX record: replies and bounces to this domain cannot arrive",
            f"publish an MX record for {domain} pointing at the mailbox provider",
        )  # fmt: skip
    return Verdict("mx", "pass", "mail is received by " + ", ".join(host for _, host in exchangers))
