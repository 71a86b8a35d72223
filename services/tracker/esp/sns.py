"""What the tracker fetches from Amazon SNS: the certificates it signs with (each fetched once, then kept)
and subscription confirmations. Only from an https URL without user info whose host matches
`MAILDASH_SNS_HOST_PATTERN` (`sns.<region>.amazonaws.com`); a message naming any other is refused before
anything is fetched, so a forged message cannot make the tracker request a URL of its choice."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import OrderedDict

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from services.tracker.esp.common import Refused, unauthorized
from shared.settings import Settings

MAX_BYTES = 64 * 1024  # a certificate is 2 KB; a confirmation's answer is a short XML document
KEPT = 64  # certificates kept (SNS signs with one per region at a time)


class Sns:
    def __init__(self, settings: Settings) -> None:
        self._host = re.compile(settings.sns_host_pattern)
        self._ca_file = settings.sns_ca_file
        self._timeout = settings.sns_timeout_seconds
        self._signers: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self._fetching = asyncio.Lock()  # one fetch at a time: a burst of messages fetches a new one once

    def allowed(self, raw: str, what: str) -> httpx.URL:
        """The URL, or Refused (401) when it is not an SNS URL."""
        try:
            url = httpx.URL(raw)
        except (httpx.InvalidURL, ValueError) as error:
            raise unauthorized(f"its {what} is not a URL") from error
        if url.scheme != "https" or url.userinfo or not self._host.fullmatch(url.host):
            raise unauthorized(f"its {what} is not on an SNS host")
        return url

    async def signer(self, certificate_url: str) -> rsa.RSAPublicKey:
        """The public key of the certificate at this SNS URL. Refused: 401 for a URL or certificate that is
        not SNS's, 503 when SNS cannot be reached."""
        url = self.allowed(certificate_url, "SigningCertURL")
        key = str(url)
        if key not in self._signers:
            async with self._fetching:
                if key not in self._signers:
                    self._signers[key] = _public_key(await self._get(url, "its signing certificate"))
                    while len(self._signers) > KEPT:
                        self._signers.popitem(last=False)
        self._signers.move_to_end(key)
        return self._signers[key]

    async def confirm(self, subscribe_url: str) -> None:
        """Confirm a subscription: a GET of its SubscribeURL, as SNS asks."""
        await self._get(self.allowed(subscribe_url, "SubscribeURL"), "the subscription's confirmation")

    async def _get(self, url: httpx.URL, what: str) -> bytes:
        context = ssl.create_default_context(cafile=self._ca_file)
        unavailable = f"SNS could not be reached for {what}; deliver it again later"
        try:
            async with (
                httpx.AsyncClient(verify=context, timeout=self._timeout) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    raise Refused(503, "unavailable", f"SNS answered {response.status_code} for {what}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BYTES:
                        raise unauthorized(f"{what} is larger than {MAX_BYTES} bytes")
                return bytes(body)
        except httpx.HTTPError as error:
            raise Refused(503, "unavailable", unavailable) from error


def _public_key(pem: bytes) -> rsa.RSAPublicKey:
    try:
        key = x509.load_pem_x509_certificate(pem).public_key()
    except ValueError as error:
        raise unauthorized("its signing certificate is not a PEM certificate") from error
    if not isinstance(key, rsa.RSAPublicKey):
        raise unauthorized("its signing certificate has no RSA key")
    return key
