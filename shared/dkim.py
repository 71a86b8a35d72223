"""DKIM keys, the TXT records that publish them, and signing (RFC 6376, Ed25519 by RFC 8463), with dkimpy.

A domain signs with an RSA 2048 key, which every receiver verifies, and optionally with an Ed25519 key as a
second signature, which newer receivers prefer. Both live under one selector name each (`<selector>` and
`<selector>e`), so rotating a domain's keys is a new selector, never a changed record.
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

RSA_BITS = 2048
# What a signature covers (the headers our mail has, less the ones a relay may add or change). Relaxed
# canonicalization on both: a receiver that refolds a header or trims trailing space keeps it valid.
SIGNED_HEADERS = (
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"MIME-Version",
    b"Content-Type",
    b"In-Reply-To",
    b"References",
    b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
)
CANONICALIZATION = (b"relaxed", b"relaxed")


@dataclass(frozen=True)
class DkimKeys:
    """A domain's private keys as stored (encrypted at rest by the caller): PEM for RSA, a base64 seed for
    Ed25519 (None: RSA only)."""

    selector: str
    rsa_private: str
    ed25519_private: str | None = None

    @property
    def ed25519_selector(self) -> str:
        return f"{self.selector}e"


@dataclass(frozen=True)
class Record:
    """One TXT record to publish: its name and its value."""

    name: str
    value: str


def generate(selector: str, with_ed25519: bool) -> DkimKeys:
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    seed = None
    if with_ed25519:
        raw = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        seed = base64.b64encode(raw).decode()
    return DkimKeys(selector, pem.decode(), seed)


def records(keys: DkimKeys, domain: str) -> list[Record]:
    """The TXT records that publish the public keys (`p=` is the DER SubjectPublicKeyInfo for RSA, the raw
    32-byte key for Ed25519)."""
    rsa_key = serialization.load_pem_private_key(keys.rsa_private.encode(), password=None)
    der = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    published = [Record(f"{keys.selector}._domainkey.{domain}", _txt("rsa", der))]
    if keys.ed25519_private is not None:
        seed = base64.b64decode(keys.ed25519_private)
        public = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        published.append(Record(f"{keys.ed25519_selector}._domainkey.{domain}", _txt("ed25519", raw)))
    return published


def _txt(kind: str, public: bytes) -> str:
    return f"v=DKIM1; k={kind}; p={base64.b64encode(public).decode()}"


def sign(wire: bytes, domain: str, keys: DkimKeys) -> bytes:
    """The e-mail with its DKIM-Signature headers in front: the Ed25519 one (if any) above the RSA one.

    Runs after every other change to the headers: anything changed after it breaks the signature."""
    headers = b""
    if keys.ed25519_private is not None:
        headers += _signature(
            wire, domain, keys.ed25519_selector, keys.ed25519_private.encode(), b"ed25519-sha256"
        )
    headers += _signature(wire, domain, keys.selector, keys.rsa_private.encode(), b"rsa-sha256")
    return headers + wire


def _signature(wire: bytes, domain: str, selector: str, key: bytes, algorithm: bytes) -> bytes:
    # Headers the e-mail lacks are signed too (as absent): a relay cannot add them without breaking it.
    signature: bytes = dkim.sign(
        wire,
        selector.encode(),
        domain.encode(),
        key,
        canonicalize=CANONICALIZATION,
        signature_algorithm=algorithm,
        include_headers=list(SIGNED_HEADERS),
    )
    return signature


# dkimpy makes the RSA signature with Python's own big integers: 13 ms of CPU per e-mail here, holding the GIL
# (18× building the e-mail). The same PKCS#1 v1.5 signature from OpenSSL through `cryptography` takes well
# under a millisecond. dkimpy still canonicalizes and hashes; only the last step is OpenSSL's.
def _openssl_rsa_sign(digest: Any, private_key: dict[str, int]) -> bytes:
    assert digest.name == "sha256", "we sign rsa-sha256 only"
    key = _openssl_key(*(private_key[part] for part in _KEY_PARTS))
    signature: bytes = key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    return signature


_KEY_PARTS = (
    "prime1", "prime2", "privateExponent", "exponent1", "exponent2", "coefficient",
    "publicExponent", "modulus",
)  # fmt: skip


@functools.lru_cache(maxsize=256)
def _openssl_key(
    p: int, q: int, d: int, dmp1: int, dmq1: int, iqmp: int, e: int, n: int
) -> rsa.RSAPrivateKey:
    return rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, rsa.RSAPublicNumbers(e, n)).private_key()


dkim.RSASSA_PKCS1_v1_5_sign = _openssl_rsa_sign
