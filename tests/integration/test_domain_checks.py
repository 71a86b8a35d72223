"""The domain checks read real DNS: dnsmasq answers the records each case publishes."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import dkim
from shared.domain_checks import Verdict, check_domain
from shared.resolver import Dns
from tests.support.dns import Zone, needs_dnsmasq, running_dns

pytestmark = needs_dnsmasq

DOMAIN = "out.example"
SMTP_HOST = "smtp.provider.example"
KEYS = dkim.generate("md1", with_ed25519=True)
OUR_RECORDS = dkim.records(KEYS, DOMAIN)


def healthy() -> Zone:
    return Zone(
        txt={
            DOMAIN: ["v=spf1 include:_spf.provider.example ~all", "google-site-verification=abc"],
            "_spf.provider.example": ["v=spf1 ip4:192.0.2.0/24 -all"],
            f"_dmarc.{DOMAIN}": ["v=DMARC1; p=quarantine; rua=mailto:d@out.example"],
            **{record.name: [record.value] for record in OUR_RECORDS},
        },
        mx={DOMAIN: [(10, "mx1.provider.example"), (20, "mx2.provider.example")]},
        a={SMTP_HOST: "192.0.2.25"},
    )


async def checked(zone: Zone, tmp_path: Path, records: list[dkim.Record] = OUR_RECORDS) -> dict[str, Verdict]:
    async with running_dns(zone, tmp_path) as server:
        verdicts = await check_domain(Dns(server, 2.0), DOMAIN, SMTP_HOST, records)
    return {verdict.check: verdict for verdict in verdicts}


async def test_a_domain_set_up_as_gmail_and_yahoo_ask_passes_every_check(tmp_path: Path) -> None:
    verdicts = await checked(healthy(), tmp_path)

    assert {name: v.status for name, v in verdicts.items()} == dict.fromkeys(
        ["spf", "dkim", "dmarc", "mx"], "pass"
    )
    assert all(v.fix is None for v in verdicts.values())
    assert verdicts["spf"].record == "v=spf1 include:_spf.provider.example ~all"
    assert verdicts["mx"].detail == "mail is received by mx1.provider.example, mx2.provider.example"


async def test_a_domain_with_nothing_published_fails_every_check_and_is_told_what_to_publish(
    tmp_path: Path,
) -> None:
    verdicts = await checked(Zone(a={SMTP_HOST: "192.0.2.25"}), tmp_path)

    assert {v.status for v in verdicts.values()} == {"fail"}
    assert verdicts["spf"].fix == f"publish a TXT record at {DOMAIN}: v=spf1 a:{SMTP_HOST} ~all"
    assert verdicts["dmarc"].fix is not None
    assert verdicts["dmarc"].fix.startswith(f"publish a TXT record at _dmarc.{DOMAIN}: v=DMARC1; p=none")
    # The key we would sign with, split over TXT strings by the server, is what the user is told to publish.
    assert verdicts["dkim"].fix is not None
    for record in OUR_RECORDS:
        assert f"publish a TXT record at {record.name}: {record.value}" in verdicts["dkim"].fix


@pytest.mark.parametrize(
    ("spf", "status", "detail"),
    [
        ("v=spf1 ip4:198.51.100.0/24 -all", "fail", f"does not allow {SMTP_HOST} (192.0.2.25: fail)"),
        ("v=spf1 ip4:198.51.100.7 ~all", "fail", f"does not allow {SMTP_HOST} (192.0.2.25: softfail)"),
        ("v=spf1 a:smtp.provider.example/24 -all", "pass", f"allows {SMTP_HOST}"),
        ("v=spf1 mx -all", "pass", f"allows {SMTP_HOST}"),
        ("v=spf1 redirect=_spf.provider.example", "pass", f"allows {SMTP_HOST}"),
        (
            "v=spf1 include:nothing.example -all",
            "fail",
            "the record is broken: include:nothing.example has no SPF record",
        ),
        ("v=spf1 exists:%{i}.spf.example -all", "warn", "uses exists, which we do not evaluate"),
        ("v=spf1 include:l1.example -all", "fail", "the record is broken: more than 10 DNS lookups"),
    ],
)
async def test_spf_is_evaluated_for_the_smtp_hosts_address(
    tmp_path: Path, spf: str, status: str, detail: str
) -> None:
    zone = healthy()
    zone.txt[DOMAIN] = [spf]
    zone.txt |= {f"l{i}.example": [f"v=spf1 include:l{i + 1}.example -all"] for i in range(1, 12)}
    zone.txt["l12.example"] = ["v=spf1 -all"]
    zone.mx[DOMAIN] = [(10, "mx.out.example")]
    zone.a["mx.out.example"] = "192.0.2.25"

    verdict = (await checked(zone, tmp_path))["spf"]

    assert (verdict.status, verdict.detail) == (status, detail)


async def test_two_spf_records_fail_because_receivers_ignore_both(tmp_path: Path) -> None:
    zone = healthy()
    zone.txt[DOMAIN] = ["v=spf1 ip4:192.0.2.25 -all", "v=spf1 include:_spf.provider.example -all"]

    assert (await checked(zone, tmp_path))["spf"].status == "fail"


async def test_a_dkim_record_with_another_key_fails_and_names_the_record(tmp_path: Path) -> None:
    zone = healthy()
    other = dkim.records(dkim.generate("md1", with_ed25519=False), DOMAIN)[0]
    zone.txt[other.name] = [other.value]

    verdict = (await checked(zone, tmp_path))["dkim"]

    assert verdict.status == "fail"
    assert verdict.detail == f"{OUR_RECORDS[0].name}: published with another key"


async def test_a_domain_without_dkim_keys_is_told_to_generate_them(tmp_path: Path) -> None:
    verdict = (await checked(healthy(), tmp_path, records=[]))["dkim"]

    assert verdict.status == "fail"
    assert verdict.fix == "generate one with POST /domains/{id}/dkim"


@pytest.mark.parametrize(
    ("dmarc", "status"),
    [
        ("v=DMARC1; p=none", "pass"),
        ("v=DMARC1; p=reject; pct=100", "pass"),
        ("v=DMARC1; rua=mailto:x@y", "fail"),
    ],
)
async def test_dmarc_needs_a_policy(tmp_path: Path, dmarc: str, status: str) -> None:
    zone = healthy()
    zone.txt[f"_dmarc.{DOMAIN}"] = [dmarc]

    assert (await checked(zone, tmp_path))["dmarc"].status == status
