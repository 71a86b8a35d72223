"""A page as a real browser renders it: Debian's Chromium, headless, allowed to reach this machine only."""

from __future__ import annotations

import asyncio
import shutil
import tempfile

import pytest

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (make test installs it: make system-packages)"
)


async def rendered_dom(url: str, settle_ms: int = 5_000) -> str:
    """The page's DOM once its scripts have run and its requests are answered (`--virtual-time-budget`: the
    budget runs out only while nothing is loading, so a fast machine does not wait it out). Every host but
    127.0.0.1 fails to resolve: a page that needs a CDN renders without it, as on a machine offline."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            CHROMIUM or "chromium",
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--virtual-time-budget={settle_ms}",
            "--dump-dom",
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            dom, errors = await asyncio.wait_for(process.communicate(), timeout=90)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
    assert process.returncode == 0, errors.decode(errors="replace")[-2000:]
    return dom.decode()
