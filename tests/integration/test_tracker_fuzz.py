"""Bad input at volume on the tracker's public endpoints, aimed at a real sent e-mail: forged and mangled
tokens, huge and repeated query strings, malformed and worst-case DSNs. Never a 5xx, and nothing recorded for
any of it; then the genuine links do record, so the counting itself is shown to work. Meanwhile the tracker's
`/healthz` answers within 100 ms, and afterwards nothing is in the dead-letter queue.

The tracker runs as its own process (`python -m services.tracker`), so that its `/healthz` is measured, not
this test's event loop. `MAILDASH_FUZZ_CASES` sets how many cases each endpoint gets (seeded: a failure can
be replayed).
"""

from __future__ import annotations

import asyncio
import os
import random
import string
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from shared.settings import Settings
from tests.support import hostile_mail as hostile
from tests.support.broker import all_consumed, take_dead_letters
from tests.support.latency import sampling
from tests.support.pipeline import Pipeline
from tests.support.samples import pixel_of, postfix_dsn
from tests.support.stack import subprocess_service, with_ports
from tests.support.truth import tracker_footprint

pytestmark = pytest.mark.integration

CASES = int(os.environ.get("MAILDASH_FUZZ_CASES", "150"))
TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_.=%+/~ü\u0000\u202e😀"


def mangled(rng: random.Random, genuine: str) -> str:
    """A value a scanner, a broken mail client or an attacker might send instead of `genuine`."""
    match rng.randrange(7):
        case 0:  # one character changed
            i = rng.randrange(len(genuine))
            return genuine[:i] + rng.choice(TOKEN_ALPHABET.replace(genuine[i], "")) + genuine[i + 1 :]
        case 1:
            return genuine[: rng.randrange(len(genuine))]
        case 2:
            return genuine + "".join(rng.choices(TOKEN_ALPHABET, k=rng.randint(1, 50)))
        case 3:
            return "".join(rng.choices(TOKEN_ALPHABET, k=rng.randint(0, 300)))
        case 4:
            return rng.choice(string.printable) * rng.randint(1_000, 20_000)  # within httpx's URL limit
        case 5:
            return genuine.swapcase()
        case _:
            return "".join(rng.sample(genuine, len(genuine)))


def malformed_dsn(rng: random.Random, dsn: bytes) -> bytes:
    match rng.randrange(15):
        case 0:
            return dsn[: rng.randrange(len(dsn))]
        case 1:  # bytes flipped here and there
            data = bytearray(dsn)
            for _ in range(rng.randint(1, 40)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            return bytes(data)
        case 2:
            return rng.randbytes(rng.randint(0, 20_000))
        case 3:  # the report part without its boundary
            return dsn.replace(b"--B0UND", b"--" + rng.randbytes(6))
        case 4:  # headers only, or a body only
            head, _, body = dsn.partition(b"\n\n")
            return rng.choice([head, body])
        case 5:
            return dsn.replace(b"Status: ", b"Status: " + rng.randbytes(8))
        # The worst cases of tests/support/hostile_mail.py at random sizes around the limits (at full size,
        # 9 MB and more, in test_hostile_inbound.py).
        case 6:
            return hostile.many_parts(dsn, rng.randint(900, 20_000))
        case 7:
            return hostile.nested_multiparts(dsn, rng.randint(20, 3_000))
        case 8:
            return hostile.nested_messages(dsn, rng.randint(20, 3_000))
        case 9:
            return hostile.attachment(dsn, rng.randint(1, 2 * 1024 * 1024), seed=rng.randrange(1000))
        case 10:
            return hostile.long_header(dsn, rng.randint(100_000, 2_000_000))
        case 11:
            return hostile.many_headers(dsn, rng.randint(900, 50_000))
        case 12:
            return hostile.tiny_lines(dsn, rng.randint(1, 256 * 1024))
        case 13:
            return hostile.broken_encodings(dsn)
        case _:
            return hostile.nul_bytes(dsn)


async def test_the_public_endpoints_take_junk_at_volume_without_5xx_or_any_record(
    pipeline: Pipeline, settings: Settings, tmp_path: Path, figures: dict[str, str]
) -> None:
    message, mail = await pipeline.sent_email()
    message_id, [lead_email] = uuid.UUID(message["id"]), mail.rcpt_tos
    pixel = httpx.URL(pixel_of(mail))
    open_token = pixel.params["t"]
    unsubscribe_url = httpx.URL(mail.message["List-Unsubscribe"].split("<")[1].split(">")[0])
    unsubscribe_token = unsubscribe_url.path.rsplit("/", 1)[1]
    dsn = postfix_dsn(mail.mail_from, mail.message["Message-ID"])
    before = await tracker_footprint(settings, message_id, lead_email)
    assert before["lead"] == "active"
    assert before["opened_at"] is None

    rng = random.Random(20261126)
    answers: list[tuple[str, int]] = []
    secret = {"X-Inbound-Secret": settings.inbound_secret}
    async with (
        subprocess_service("tracker", with_ports(settings, "tracker"), tmp_path) as process,
        sampling(f"{process.url}/healthz", pause=0.02) as health,
        httpx.AsyncClient(base_url=process.url, timeout=30) as tracker,
    ):
        for _ in range(CASES):
            token = mangled(rng, open_token)
            reply = await tracker.get("/track/open.gif", params={"m": message["id"], "t": token})
            answers.append(("open", reply.status_code))
            assert reply.headers["content-type"] == "image/gif"
            keys = rng.choices("mtxu", k=rng.randint(1, 40))
            repeated = [(key, mangled(rng, open_token)[:500]) for key in keys]
            reply = await tracker.get("/track/open.gif", params=[("m", message["id"]), *repeated])
            answers.append(("open, repeated keys", reply.status_code))
            reply = await tracker.get(
                "/track/click", params={"m": message["id"], "u": "https://evil.example/", "t": token}
            )
            answers.append(("click", reply.status_code))
            for method in ("GET", "POST"):
                reply = await tracker.request(method, f"/u/{quote(mangled(rng, unsubscribe_token), safe='')}")
                answers.append((f"unsubscribe {method}", reply.status_code))
        # Nothing recorded for junk.
        assert await tracker_footprint(settings, message_id, lead_email) == before

        # The genuine links do record: the footprint could have moved.
        assert (await tracker.get(str(pixel))).status_code == 200
        assert (await tracker.post(f"/u/{unsubscribe_token}")).status_code == 200
        genuine = await tracker_footprint(settings, message_id, lead_email)
        assert genuine["opened_at"] is not None
        assert genuine["lead"] == "unsubscribed"
        assert genuine["events"] > before["events"]

        for _ in range(CASES):
            body = malformed_dsn(rng, dsn)
            reply = await tracker.post("/inbound/bounces", content=body, headers=secret)
            answers.append(("bounce", reply.status_code))
            now = await tracker_footprint(settings, message_id, lead_email)
            if reply.status_code == 200:
                genuine = now  # a mangled DSN can still be a readable bounce
            assert now == genuine, (reply.status_code, body[:300])

    server_errors = [(what, status) for what, status in answers if status >= 500]
    assert not server_errors, server_errors[:10]
    figures["tracker /healthz during the fuzz"] = health.summary()
    assert set(health.statuses) == {200}
    # Under 100 ms, and never a stall. (The odd slower answer on a busy 2-core machine is its scheduler's: an
    # idle tracker shows it too.)
    assert health.quantile(0.99) < 0.100, health.summary()
    assert max(health.seconds) < 0.500, health.summary()

    # Everything the tracker announced was delivered; a message that its consumer kept failing would be in
    # the dead letters by now (it is redelivered at once, five times over).
    await pipeline.until(lambda: all_consumed(settings))
    await asyncio.sleep(1)
    assert not await take_dead_letters(settings)

    assert {status for what, status in answers if what.startswith("open")} == {200}
    assert {status for what, status in answers if what == "click"} == {400}
    # (an empty token: Starlette redirects `/u/` to `/u`, which is a 404)
    assert {status for what, status in answers if what.startswith("unsubscribe")} <= {404, 307}
    assert {status for what, status in answers if what == "bounce"} <= {200, 413, 422}
