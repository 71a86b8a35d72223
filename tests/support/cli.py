"""Run the operators' command line (`python -m maildash`) as a process, as an operator would."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from tests.support.stack import ROOT


async def maildash(
    api_url: str, *args: str, email: str = "admin@example.com", password: str = "admin"
) -> str:
    """Its output (stdout and stderr); AssertionError with its stderr when it exits with an error."""
    env = {
        **os.environ,
        "MAILDASH_CLI_API_URL": api_url,
        "MAILDASH_CLI_EMAIL": email,
        "MAILDASH_CLI_PASSWORD": password,
        "COLUMNS": "200",
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "maildash", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}: {done.stderr}")
    return done.stdout + done.stderr
