"""The public-address rule at the time a tenant names a host (`shared.public_address`): the workers judge it
again at every connection."""

from __future__ import annotations

from services.api.kit.envelope import invalid
from shared.public_address import UnusableHost, resolve_public
from shared.settings import Settings


async def require_public(settings: Settings, host: str, port: int, what: str, loc: list[str | int]) -> None:
    """422 at `loc` when `host` does not resolve, or resolves to an address that is not public (in
    production, unless the operator allows private hosts)."""
    if settings.private_hosts_allowed:
        return
    try:
        await resolve_public(host, port, allow_private=False, timeout=5)
    except UnusableHost as error:
        raise invalid(f"{what} {error}", loc) from error
