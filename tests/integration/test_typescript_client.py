"""The OpenAPI document makes a TypeScript client: the types openapi-typescript generates from the document
the api serves type-check under `tsc --strict` against a typed use of every endpoint
(clients/typescript/every_endpoint.ts, through openapi-fetch). npm packages pinned in package-lock.json."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from typing import Any

import httpx
import pytest

from tests.support.stack import ROOT

CLIENT = ROOT / "clients" / "typescript"
BIN = CLIENT / "node_modules" / ".bin"
USE = CLIENT / "every_endpoint.ts"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("node") is None or not (BIN / "tsc").exists(),
        reason="node or the client's npm packages are missing (make client-packages installs them)",
    ),
]


@pytest.fixture(scope="module")
async def spec(api_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        document: dict[str, Any] = (await client.get(f"{api_url}/openapi.json")).json()
    return document


async def run(*command: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, cwd=CLIENT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=180)
    assert process.returncode == 0, output.decode(errors="replace")[-6000:]
    return output.decode()


def test_the_typed_use_calls_every_operation_of_the_document(spec: dict[str, Any]) -> None:
    source = USE.read_text()
    missing = [
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method in item
        if f'api.{method.upper()}("{path}"' not in source
    ]
    assert not missing, f"add a typed call of each to {USE.relative_to(ROOT)}"


async def test_the_generated_types_check_under_tsc_strict(
    spec: dict[str, Any], figures: dict[str, Any]
) -> None:
    generated = CLIENT / "generated"
    generated.mkdir(exist_ok=True)
    (generated / "openapi.json").write_text(json.dumps(spec))
    (generated / "api.d.ts").unlink(missing_ok=True)
    started = time.perf_counter()
    # Defaults do not make a request field required (they do not here: answers list every field as required).
    await run(str(BIN / "openapi-typescript"), "generated/openapi.json", "-o", "generated/api.d.ts",
              "--default-non-nullable=false")  # fmt: skip
    figures["openapi-typescript"] = f"{time.perf_counter() - started:.1f} s"
    started = time.perf_counter()
    await run(str(BIN / "tsc"), "-p", ".")  # tsconfig.json: strict, noUnused*, exactOptionalPropertyTypes
    figures["tsc --strict"] = f"{time.perf_counter() - started:.1f} s"
