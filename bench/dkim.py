"""DKIM signing cost per e-mail beside the bare build of the same e-mail (the building block: `render.build`
of a typical cold e-mail, no signature), in one process, in the same run.

Run as `python -m bench.dkim [EMAILS]`; prints JSON: microseconds per e-mail built, built and signed with RSA
2048, and built and signed with RSA 2048 and Ed25519 (the sender signs after building, off its event loop).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from shared import dkim
from shared.render import build
from tests.support.letters import letter

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def per_email_us(work: Callable[[], object], emails: int) -> float:
    """The best of three rounds of `emails` runs, in microseconds per run (the least disturbed round)."""
    rounds = []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(emails):
            work()
        rounds.append((time.perf_counter() - started) / emails * 1e6)
    return min(rounds)


def main(emails: int) -> dict[str, float]:
    one = letter()
    rsa_only, both = dkim.generate("bench", with_ed25519=False), dkim.generate("bench", with_ed25519=True)
    built = per_email_us(lambda: build(one, NOW), emails)
    rsa = per_email_us(lambda: dkim.sign(build(one, NOW), "out.example", rsa_only), emails)
    rsa_ed25519 = per_email_us(lambda: dkim.sign(build(one, NOW), "out.example", both), emails)
    return {
        "emails": emails,
        "build_us": built,
        "build_sign_rsa_us": rsa,
        "build_sign_rsa_ed25519_us": rsa_ed25519,
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)))
