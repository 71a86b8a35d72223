"""Encryption at rest for SMTP passwords (Fernet: AES-128-CBC + HMAC), keyed from MAILDASH_ENCRYPTION_KEY."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet


def _fernet(secret: str) -> Fernet:
    # Any string works as the configured secret; Fernet needs 32 url-safe base64 bytes.
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest()))


def encrypt(secret: str, plaintext: str) -> str:
    return _fernet(secret).encrypt(plaintext.encode()).decode()


def decrypt(secret: str, token: str) -> str:
    return _fernet(secret).decrypt(token.encode()).decode()
