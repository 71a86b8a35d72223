"""A small client for the api, as the dashboard would use it."""

from __future__ import annotations

from typing import Any

import httpx

ALWAYS_OPEN = {"days": [0, 1, 2, 3, 4, 5, 6], "start": "00:00", "end": "24:00", "holidays": None}


class ApiClient:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=f"{base_url}/api/v1", timeout=30)

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.http.aclose()

    async def login(self, email: str = "admin@example.com", password: str = "admin") -> None:
        reply = await self.http.post("/auth/token", data={"username": email, "password": password})
        assert reply.status_code == 200, reply.text
        self.http.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = await self.http.post(path, json=body)
        assert reply.status_code == 201, reply.text
        data: dict[str, Any] = reply.json()["data"]
        return data

    async def get(self, path: str) -> dict[str, Any]:
        reply = await self.http.get(path)
        assert reply.status_code == 200, reply.text
        data: dict[str, Any] = reply.json()["data"]
        return data

    async def domain(self, name: str, smtp_port: int, interval: int = 0, **extra: Any) -> dict[str, Any]:
        body = {
            "domain": name,
            "from_email": f"sales@{name}",
            "from_name": "Sales",
            "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none"},
            "min_interval_seconds": interval,
            **extra,
        }
        return await self.create("/domains", body)

    async def lead(self, email: str, **extra: Any) -> dict[str, Any]:
        return await self.create("/leads", {"email": email, **extra})

    async def template(self, **extra: Any) -> dict[str, Any]:
        body = {
            "name": "Intro",
            "subject": "Hello {{ first_name }}",
            "body_html": "<p>Hi {{ first_name }} from {{ company }}</p>",
            **extra,
        }
        return await self.create("/templates", body)

    async def campaign(
        self, template_id: str, lead_ids: list[str], domains: list[str], **extra: Any
    ) -> dict[str, Any]:
        body = {
            "name": "Test campaign",
            "template_id": template_id,
            "audience": {"mode": "static", "lead_ids": lead_ids},
            "schedule": {"start_mode": "now", "window": ALWAYS_OPEN},
            "domains": domains,
            **extra,
        }
        return await self.create("/campaigns", body)


async def new_workspace(api_url: str, name: str) -> ApiClient:
    """A workspace of its own, and its admin logged in."""
    email = f"{name}@workspace.example"
    async with ApiClient(api_url) as superuser:
        await superuser.login()
        body = {"name": name, "admin_email": email, "admin_password": "correct horse"}
        await superuser.create("/workspaces", body)
    admin = ApiClient(api_url)
    await admin.login(email, "correct horse")
    return admin
