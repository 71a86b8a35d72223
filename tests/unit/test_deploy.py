"""What runs the system as containers (docker-compose.yml, Dockerfile, deploy/nginx.conf) agrees with the code
and its settings. There is no Docker engine here: the files are read as Compose and nginx read them (the
gateway itself runs under Debian's nginx in tests/integration/test_gateway.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from services.api.kit.gate import route_limits
from shared.settings import Settings
from tools.healthcheck import PORT_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
MIB = 1024 * 1024
NGINX_SIZE = re.compile(r"^(\d+)([km]?)$")


@dataclass
class Block:
    """An nginx block: its directives (name → arguments) and the blocks inside it."""

    args: list[str]
    directives: dict[str, list[str]] = field(default_factory=dict)
    blocks: list[tuple[str, Block]] = field(default_factory=list)

    def block(self, name: str, *args: str) -> Block:
        found = [b for n, b in self.blocks if n == name and (not args or b.args == list(args))]
        assert len(found) == 1, (name, args)
        return found[0]


def _nginx(text: str) -> Block:
    text = re.sub(r"#[^\n]*", "", text)  # no '#' stands inside a quoted string of this file
    tokens = re.findall(r"'[^']*'|\"[^\"]*\"|[{};]|[^\s{};'\"]+", text)
    stack, words = [Block([])], []
    for token in tokens:
        if token == "{":
            child = Block(words[1:])
            stack[-1].blocks.append((words[0], child))
            stack.append(child)
            words = []
        elif token == "}":
            stack.pop()
        elif token == ";":
            stack[-1].directives[words[0]] = words[1:]
            words = []
        else:
            words.append(token)
    assert len(stack) == 1, "unbalanced braces"
    assert not words, words
    return stack[0]


NGINX = _nginx((ROOT / "deploy" / "nginx.conf").read_text())
HTTP = NGINX.block("http")
SERVER = HTTP.block("server")


def _bytes(size: str) -> int:
    match = NGINX_SIZE.match(size.lower())
    assert match, size
    return int(match[1]) * {"": 1, "k": 1024, "m": MIB}[match[2]]


def _location(path: str) -> Block:
    """The location nginx picks for `path`: an exact match, else a matching regex, else the longest prefix."""
    locations = [(b.args, b) for name, b in SERVER.blocks if name == "location"]
    for args, block in locations:
        if args[0] == "=" and args[1] == path:
            return block
    for args, block in locations:
        if args[0] == "~" and re.search(args[1], path):
            return block
    prefixes = [(args[0], block) for args, block in locations if len(args) == 1 and path.startswith(args[0])]
    return max(prefixes, key=lambda found: len(found[0]))[1]


def test_the_gateway_takes_what_the_api_and_the_tracker_take_and_answers_beyond_it_in_their_envelope() -> (
    None
):
    """Each limit of the gateway lies just above its upstream's, so the upstream answers 413 in its own
    envelope (and at most a MiB more is ever read)."""
    settings = Settings()
    api = _bytes(_location("/api/v1/leads/import").directives["client_max_body_size"][0])
    largest = max([settings.api_body_max_bytes, *route_limits(settings).values()])
    assert largest <= api <= largest + MIB, (api, largest)
    assert _location("/api/v1/leads/import").directives["proxy_request_buffering"] == ["off"]
    tracked = ("/inbound/bounces", "/inbound/replies", "/track/open.gif", "/u/token", "/webhooks/esp/ses/t")
    for path in tracked:
        tracker = _location(path)
        assert tracker.directives["proxy_pass"] == ["http://tracker"], path
        limit = _bytes(
            tracker.directives.get("client_max_body_size", HTTP.directives["client_max_body_size"])[0]
        )
        assert settings.inbound_max_bytes <= limit <= settings.inbound_max_bytes + MIB, (path, limit)


def test_the_gateway_serves_the_documentation_from_the_api() -> None:
    for path in ("/docs", "/docs/assets/swagger-ui-bundle.js", "/docs/oauth2-redirect", "/redoc",
                 "/openapi.json", "/asyncapi.json", "/api/v1/campaigns"):  # fmt: skip
        assert _location(path).directives["proxy_pass"] == ["http://api"], path
    assert _location("/docsx").directives.get("proxy_pass") is None


def test_every_service_has_a_healthcheck_and_waits_for_what_it_needs_to_be_healthy() -> None:
    for name, service in SERVICES.items():
        waited_for_to_finish = [
            s for s in SERVICES.values() if s.get("depends_on", {}).get(name, {}).get("condition")
            == "service_completed_successfully"
        ]  # fmt: skip
        if waited_for_to_finish:  # a job (the migration): it exits instead of serving
            assert "healthcheck" not in service, name
            assert "restart" not in service, name
            continue
        assert service["healthcheck"]["test"][0] == "CMD", name
        for needed, how in service.get("depends_on", {}).items():
            assert how["condition"] in ("service_healthy", "service_completed_successfully"), (name, needed)


def test_each_service_checks_its_own_port() -> None:
    for name, setting in PORT_SETTINGS.items():
        assert SERVICES[name]["healthcheck"]["test"] == ["CMD", "python", "-m", "tools.healthcheck", name]
        command = SERVICES[name]["command"]
        assert command[:3] == ["python", "-m", "services.tracker" if name == "inbox" else f"services.{name}"]
        assert setting in Settings.model_fields


def test_rabbitmq_management_is_not_published_nor_guest() -> None:
    rabbitmq = SERVICES["rabbitmq"]
    assert not any("15672" in str(port) for port in rabbitmq.get("ports", []))
    assert rabbitmq["environment"]["RABBITMQ_DEFAULT_USER"] != "guest"
    amqp = SERVICES["api"]["environment"]["MAILDASH_AMQP_URL"]
    user, password = re.match(r"amqp://([^:]+):([^@]+)@rabbitmq:5672/", amqp).groups()  # type: ignore[union-attr]
    assert (user, password) == (
        rabbitmq["environment"]["RABBITMQ_DEFAULT_USER"],
        rabbitmq["environment"]["RABBITMQ_DEFAULT_PASS"],
    )
    assert "guest" not in (rabbitmq["environment"]["RABBITMQ_DEFAULT_USER"], password)


def test_the_image_holds_every_package_the_commands_run_and_the_cli() -> None:
    copied = set(re.findall(r"^COPY (\w+) \./\1$", DOCKERFILE, re.M))
    run = {
        service["command"][2].split(".")[0]
        for service in SERVICES.values()
        if "build" in service and service.get("command", [""])[0] == "python"
    }
    run |= {"tools"}  # the healthchecks
    assert run | {"maildash"} <= copied, (run, copied)
    assert (ROOT / "maildash" / "__main__.py").exists()


def test_uv_is_pinned_in_the_image_at_the_version_make_installs() -> None:
    pinned = re.search(r"^ARG UV_VERSION=(\d+\.\d+\.\d+)$", DOCKERFILE, re.M)
    assert pinned, "the Dockerfile installs an unpinned uv"
    assert 'pip install --no-cache-dir "uv==${UV_VERSION}"' in DOCKERFILE
    makefile = (ROOT / "Makefile").read_text()
    assert f"UV_VERSION := {pinned[1]}\n" in makefile
    assert '"uv==$(UV_VERSION)"' in makefile
