"""DKIM on the wire and the domain checks through the api, against records published in a real DNS server
(dnsmasq): every e-mail of a domain with keys verifies with dkimpy's verifier from DNS alone."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import dkim
import dns.nameserver
import dns.resolver

from services.api.main import create_app
from shared.settings import Settings
from tests.support.api import ApiClient
from tests.support.dns import Zone, needs_dnsmasq, running_dns
from tests.support.pipeline import Pipeline
from tests.support.smtp import free_port
from tests.support.stack import inprocess_service

pytestmark = needs_dnsmasq


def dkim_verdicts(wire: bytes, server: str) -> list[bool]:
    """Each DKIM signature's verdict, its key looked up in `server` as a receiver would."""
    host, port = server.split(":")
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(host, int(port))]

    def txt(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
        except dns.resolver.NXDOMAIN:
            return None
        return b"".join(b"".join(record.strings) for record in answer)

    head = wire.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    signatures = sum(line.lower().startswith(b"dkim-signature:") for line in head)
    checker, verdicts = dkim.DKIM(wire), []
    for index in range(signatures):
        try:
            verdicts.append(bool(checker.verify(idx=index, dnsfunc=txt)))
        except dkim.DKIMException:  # a body hash that does not match, a key that is not published
            verdicts.append(False)
    return verdicts


async def new_keys(api: ApiClient, domain_id: str, ed25519: bool = False) -> dict[str, Any]:
    answer = await api.http.post(f"/domains/{domain_id}/dkim", json={"ed25519": ed25519})
    assert answer.status_code == 200, answer.text
    domain: dict[str, Any] = answer.json()["data"]
    return domain


def published(domain: dict[str, Any]) -> dict[str, list[str]]:
    return {record["name"]: [record["value"]] for record in domain["dkim"]["records"]}


async def test_every_email_of_a_domain_with_keys_is_signed_and_verifies_from_dns(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    api, name = pipeline.api, f"signed-{uuid.uuid4().hex[:8]}.example"
    domain = await api.domain(name, pipeline.sink.port)
    assert domain["dkim"] is None
    signed = await new_keys(api, domain["id"], ed25519=True)
    assert signed["dkim"]["ed25519"] is True
    assert [r["name"].split(".")[1:] for r in signed["dkim"]["records"]] == [
        ["_domainkey", *name.split(".")]
    ] * 2
    assert not {"dkim_rsa_private_encrypted", "private_key"} & set(str(signed))
    leads = [
        (await api.lead(f"{uuid.uuid4().hex[:8]}@lead.example", first_name="Jan"))["id"] for _ in range(3)
    ]
    template = await api.template()
    campaign = await api.campaign(template["id"], leads, [name])

    async def all_sent() -> bool:
        return [m["status"] for m in await pipeline.messages(campaign["id"])] == ["sent"] * 3

    await pipeline.until(all_sent)
    mails = [m for m in pipeline.sink.received if m.mail_from.endswith(f"@{name}")]
    assert len(mails) == 3
    async with running_dns(Zone(txt=published(signed)), tmp_path) as server:
        assert [dkim_verdicts(mail.data, server) for mail in mails] == [[True, True]] * 3
        # A key rotated in the api but not yet published: the new signatures do not verify against DNS.
        await new_keys(api, domain["id"])
        again = await api.campaign(template["id"], leads[:1], [name], name="after rotation")

        async def sent_again() -> bool:
            return [m["status"] for m in await pipeline.messages(again["id"])] == ["sent"]

        await pipeline.until(sent_again)
        [rotated] = [m for m in pipeline.sink.received if m.mail_from.endswith(f"@{name}")][3:]
        assert dkim_verdicts(rotated.data, server) == [False]


async def test_the_checks_say_what_to_publish_until_it_is_published(
    settings: Settings, tmp_path: Path
) -> None:
    name = f"checked-{uuid.uuid4().hex[:8]}.example"
    zone = Zone(a={"smtp.checked.example": "192.0.2.25"})
    port = free_port()
    async with (
        running_dns(zone, tmp_path) as server,
        inprocess_service(create_app, settings.model_copy(update={"dns_server": server}), port) as url,
        ApiClient(url) as api,
    ):
        await api.login()
        body = {"domain": name, "from_email": f"sales@{name}", "smtp": {"host": "127.0.0.1", "port": 25}}
        domain = await api.create("/domains", body)
        await api.http.patch(f"/domains/{domain['id']}", json={"smtp": {"host": "smtp.checked.example"}})
        before = {c["check"]: c for c in await api.get(f"/domains/{domain['id']}/checks")}
        signed = await new_keys(api, domain["id"])
    assert {c: v["status"] for c, v in before.items()} == dict.fromkeys(
        ["spf", "dkim", "dmarc", "mx"], "fail"
    )
    assert before["dkim"]["fix"] == "generate one with POST /domains/{id}/dkim"
    assert before["spf"]["fix"] == f"publish a TXT record at {name}: v=spf1 a:smtp.checked.example ~all"

    zone.txt |= {
        name: ["v=spf1 a:smtp.checked.example -all"],
        f"_dmarc.{name}": ["v=DMARC1; p=none"],
        **published(signed),
    }
    zone.mx[name] = [(10, "mx.checked.example")]
    async with (
        running_dns(zone, tmp_path) as server,
        inprocess_service(create_app, settings.model_copy(update={"dns_server": server}), port) as url,
        ApiClient(url) as api,
    ):
        await api.login()
        after = {c["check"]: c["status"] for c in await api.get(f"/domains/{domain['id']}/checks")}
    assert after == dict.fromkeys(["spf", "dkim", "dmarc", "mx"], "pass")
