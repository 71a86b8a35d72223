"""DKIM: what we sign verifies with dkimpy's verifier against the records we tell the user to publish, and
breaks when a signed part changes."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from functools import cache

import dkim
import pytest

from shared import dkim as ours
from shared.render import build
from tests.support.letters import letter

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@cache
def keys(with_ed25519: bool) -> ours.DkimKeys:
    return ours.generate("md2026", with_ed25519)


def published(domain_keys: ours.DkimKeys) -> dict[bytes, bytes]:
    return {f"{r.name}.".encode(): r.value.encode() for r in ours.records(domain_keys, "out.example")}


def verified(wire: bytes, domain_keys: ours.DkimKeys) -> list[bool]:
    """Each signature's verdict, in the order they stand, from the published records alone."""
    dns = published(domain_keys)
    checker = dkim.DKIM(wire)
    count = sum(1 for name, _ in email.message_from_bytes(wire).items() if name.lower() == "dkim-signature")
    return [_verdict(checker, i, dns) for i in range(count)]


def _verdict(checker: dkim.DKIM, index: int, dns: dict[bytes, bytes]) -> bool:
    try:
        return bool(checker.verify(idx=index, dnsfunc=lambda name, timeout=5: dns.get(name)))
    except dkim.ValidationError:  # a body hash that does not match is raised, not answered
        return False


@pytest.mark.parametrize("with_ed25519", [False, True], ids=["rsa", "rsa+ed25519"])
def test_a_signed_email_verifies_against_the_published_records(with_ed25519: bool) -> None:
    domain_keys = keys(with_ed25519)
    signed = ours.sign(build(letter(), NOW), "out.example", domain_keys)

    assert verified(signed, domain_keys) == [True] * (2 if with_ed25519 else 1)
    algorithms = [
        value.split("a=")[1].split(";")[0]
        for name, value in email.message_from_bytes(signed).items()
        if name.lower() == "dkim-signature"
    ]
    assert algorithms == (["ed25519-sha256", "rsa-sha256"] if with_ed25519 else ["rsa-sha256"])


def test_the_signature_covers_the_headers_receivers_require_with_relaxed_canonicalization() -> None:
    signed = ours.sign(build(letter(in_reply_to="<first@out.example>"), NOW), "out.example", keys(False))
    signature = email.message_from_bytes(signed)["DKIM-Signature"].replace("\r\n", "").replace(" ", "")
    tags = dict(tag.split("=", 1) for tag in signature.split(";") if "=" in tag)

    assert tags["c"] == "relaxed/relaxed"
    assert tags["d"] == "out.example"
    assert tags["s"] == "md2026"
    assert [h.lower() for h in tags["h"].split(":")] == [h.decode().lower() for h in ours.SIGNED_HEADERS]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda wire: wire.replace(b"Subject: Hi Jan", b"Subject: Hi Piet"),
        lambda wire: wire.replace(b"Dear Jan", b"Dear Piet"),
        lambda wire: wire.replace(
            b"\r\nMIME-Version", b"\r\nIn-Reply-To: <added@x.example>\r\nMIME-Version", 1
        ),
    ],
    ids=["subject", "body", "an added header it signed as absent"],
)
def test_a_change_to_what_was_signed_breaks_every_signature(tamper: object) -> None:
    domain_keys = keys(True)
    signed = ours.sign(build(letter(), NOW), "out.example", domain_keys)
    changed = tamper(signed)  # type: ignore[operator]

    assert changed != signed
    assert verified(changed, domain_keys) == [False, False]


def test_the_records_publish_an_rsa_2048_key_and_an_ed25519_key_under_their_own_selectors() -> None:
    rsa_record, ed_record = ours.records(keys(True), "out.example")

    assert rsa_record.name == "md2026._domainkey.out.example"
    assert rsa_record.value.startswith("v=DKIM1; k=rsa; p=MIIBIjAN")  # the DER header of a 2048-bit key
    assert ed_record.name == "md2026e._domainkey.out.example"
    assert ed_record.value.startswith("v=DKIM1; k=ed25519; p=")
    assert len(ed_record.value.split("p=")[1]) == 44
