"""deploy/nginx.conf, run by Debian's nginx in front of the real api and tracker."""

from __future__ import annotations

import asyncio
import re
import shutil
import string
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.tracker.main import create_app as create_tracker
from shared.settings import Settings
from tests.support.smtp import free_port
from tests.support.stack import ROOT, inprocess_service

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("nginx") is None, reason="nginx is not installed (make test installs it)"
    ),
]


async def chunks(count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"x" * 65536


async def test_gateway_routes_api_docs_and_public_tracking_paths(
    api_url: str, settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    config = string.Template((ROOT / "deploy/nginx.conf").read_text()).safe_substitute(
        NGINX_PID=str(tmp_path / "nginx.pid"),
        API_UPSTREAM=api_url.removeprefix("http://"),
        TRACKER_UPSTREAM=f"127.0.0.1:{(tracker_port := free_port())}",
        GATEWAY_LISTEN=f"127.0.0.1:{port}",
    )
    (tmp_path / "nginx.conf").write_text(config)
    nginx_bin = shutil.which("nginx") or "nginx"
    check = await asyncio.create_subprocess_exec(
        nginx_bin,
        "-t",
        "-p",
        str(tmp_path),
        "-c",
        str(tmp_path / "nginx.conf"),
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await check.communicate()
    assert check.returncode == 0, errors.decode()

    async with inprocess_service(create_tracker, settings, tracker_port):
        nginx = await asyncio.create_subprocess_exec(
            nginx_bin, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                for _ in range(50):
                    try:
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
                api = await client.get("/api/v1/auth/me")
                assert api.status_code == 401
                assert api.json()["error_code"] == "unauthorized"
                # Bodies stream on to the api up to its largest limit (the CSV import); it answers itself,
                # and beyond that the gateway answers in the api's envelope.
                upload = await client.post("/api/v1/leads/import", content=chunks(120))  # 7.5 MiB
                assert (upload.status_code, upload.json()["error_code"]) == (401, "unauthorized")
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(
                    b"POST /api/v1/leads/import HTTP/1.1\r\nHost: x\r\nContent-Length: 60000000\r\n\r\n"
                )
                head, _, body = (await reader.read(4096)).partition(b"\r\n\r\n")
                writer.close()
                assert head.startswith(b"HTTP/1.1 413")
                assert b'"error_code": "payload_too_large"' in body
                # Up to the tracker's inbound limit and a byte more, the tracker answers in its envelope.
                mail = await client.post(
                    "/inbound/bounces",
                    content=b"x" * (settings.inbound_max_bytes + 1),
                    headers={"X-Inbound-Secret": settings.inbound_secret},
                )
                assert (mail.status_code, mail.json()["error_code"]) == (413, "payload_too_large")
                # The ESPs' event webhooks reach the tracker, which answers an unknown token in its envelope.
                esp = await client.post("/webhooks/esp/postmark/no-such-token", json={"RecordType": "Bounce"})
                assert (esp.status_code, esp.json()["error_code"]) == (404, "not_found"), esp.text
                # The documentation, with every asset its pages load, and both documents.
                for page in ("/docs", "/redoc"):
                    html = (await client.get(page)).text
                    for asset in re.findall(r'(?:src|href)="(/[^"]+)"', html):
                        assert (await client.get(asset)).status_code == 200, asset
                openapi = (await client.get("/openapi.json")).json()
                assert "/api/v1/campaigns" in openapi["paths"]
                assert (await client.get("/asyncapi.json")).json()["asyncapi"] == "3.0.0"
                pixel = await client.get("/track/open.gif?m=x&t=y")
                assert pixel.status_code == 200
                assert pixel.headers["content-type"] == "image/gif"
                assert (await client.get("/admin")).status_code == 404
        finally:
            nginx.terminate()
            await nginx.wait()
