"""The operators' command line, run as a process against the real api."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.api import ApiClient
from tests.support.cli import maildash
from tests.support.stack import ROOT

pytestmark = pytest.mark.integration


async def test_an_operator_creates_a_workspace_imports_leads_and_runs_a_campaign(
    api_url: str, tmp_path: Path
) -> None:
    admin = f"ops-{uuid.uuid4().hex[:8]}@agency.example"
    created = await maildash(
        api_url, "workspace", "create", f"ops-{uuid.uuid4().hex[:6]}", "--admin-email", admin,
        "--admin-password", "correct horse",
    )  # fmt: skip
    assert admin in created

    csv_file = tmp_path / "leads.csv"
    csv_file.write_text(
        "email,first_name,tags\n" + "".join(f"lead{i}@lead.example,L{i},cli\n" for i in range(3))
    )
    csv_file.write_text(csv_file.read_text() + "broken-address,X,\n")
    imported = await maildash(
        api_url, "leads", "import", str(csv_file), email=admin, password="correct horse"
    )
    assert "created 3, updated 0, skipped 0, errors 1" in imported
    assert "line 5:" in imported

    async with ApiClient(api_url) as api:
        await api.login(admin, "correct horse")
        assert (await api.get("/leads?tag=cli"))["total"] == 3
        await api.domain("ops.example", 1025)
        template = await api.template()
        draft = await api.create(
            "/campaigns",
            {
                "name": "From the CLI",
                "template_id": template["id"],
                "audience": {"mode": "tags", "tags": ["cli"]},
                "schedule": {"start_mode": "draft"},
                "domains": ["ops.example"],
            },
        )
    as_admin = {"email": admin, "password": "correct horse"}
    assert "is scheduled" in await maildash(api_url, "campaign", "start", draft["id"], **as_admin)
    assert "is paused" in await maildash(api_url, "campaign", "pause", draft["id"], **as_admin)
    assert "is stopped" in await maildash(api_url, "campaign", "stop", draft["id"], **as_admin)
    shown = await maildash(api_url, "campaign", "show", draft["id"], **as_admin)
    assert '"status": "stopped"' in shown
    assert '"audience_count": 3' in shown


async def test_the_cli_says_what_went_wrong(api_url: str) -> None:
    with pytest.raises(AssertionError, match=r"login as admin@example\.com failed: wrong e-mail or password"):
        await maildash(api_url, "campaign", "show", "x", password="wrong")
    with pytest.raises(AssertionError, match="campaign not found"):
        await maildash(api_url, "campaign", "pause", str(uuid.uuid4()))
    with pytest.raises(AssertionError, match="cannot reach the api"):
        await maildash("http://127.0.0.1:9", "campaign", "show", "x")


async def test_a_command_asks_for_the_password_it_needs_when_none_is_set(api_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MAILDASH_CLI_PASSWORD"} | {
        "MAILDASH_CLI_API_URL": api_url
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "maildash", "user", "activate", "admin@example.com"],
        cwd=ROOT, env=env, input="admin\n", capture_output=True, text=True, timeout=60, check=False,
        start_new_session=True,  # no terminal to read from: the password comes from stdin
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Password of admin@example.com" in done.stdout + done.stderr
    assert "user admin@example.com is active" in done.stderr
