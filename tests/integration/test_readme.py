"""The README's walkthrough, run by bash as a user would paste it, twice in a row, against the real api (in a
workspace of its own, so that its domain and lead meet no other test's)."""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from typing import Any

import pytest

from tests.support.api import ApiClient
from tests.support.stack import ROOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("curl") is None, reason="the walkthrough needs curl"),
]


def walkthrough() -> str:
    """The README's first shell block: from the login to the campaign's start."""
    section = (ROOT / "README.md").read_text().split("## A campaign from nothing to KPIs", 1)[1]
    found = re.search(r"```sh\n(.*?)```", section, re.S)
    assert found, "the walkthrough has no sh block"
    return found[1]


async def test_the_walkthrough_runs_twice_in_a_row_and_starts_a_campaign_each_time(
    api: ApiClient, api_url: str
) -> None:
    admin, password = f"readme-{uuid.uuid4().hex[:8]}@agency.example", "readme password"
    await api.create(
        "/workspaces",
        {"name": f"readme-{uuid.uuid4().hex[:8]}", "admin_email": admin, "admin_password": password},
    )
    script = walkthrough()
    for written, ours in [
        ("API=http://127.0.0.1:8000/api/v1", f"API={api_url}/api/v1"),
        ("username=admin@example.com&password=admin", f"username={admin}&password={password}"),
    ]:
        assert script.count(written) == 1, written
        script = script.replace(written, ours)
    script = "set -euo pipefail\n" + script + '\necho "lead=$LEAD campaign=$CAMPAIGN"\n'

    runs: list[dict[str, Any]] = []
    for _ in range(2):
        process = await asyncio.create_subprocess_exec(
            "bash", "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        output, errors = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode == 0, errors.decode()
        found = re.search(r"^lead=(\S+) campaign=(\S+)$", output.decode(), re.M)
        assert found, output.decode()
        runs.append({"output": output.decode(), "lead": found[1], "campaign": found[2]})

    assert "domain: 201" in runs[0]["output"]
    assert "lead: 201" in runs[0]["output"]
    assert "domain: 409" in runs[1]["output"]  # it exists: the walkthrough goes on with it
    assert "lead: 409" in runs[1]["output"]
    assert runs[0]["lead"] == runs[1]["lead"]
    assert runs[0]["campaign"] != runs[1]["campaign"]
    async with ApiClient(api_url) as theirs:
        await theirs.login(admin, password)
        for run in runs:
            campaign = await theirs.get(f"/campaigns/{run['campaign']}")
            assert campaign["audience_count"] == 1  # the second run mails the lead again
            # No scheduler runs here: stopped, so that no later test's scheduler mails the sink's port.
            stopped = await theirs.http.post(f"/campaigns/{run['campaign']}/stop")
            assert stopped.json()["data"]["status"] == "stopped"
