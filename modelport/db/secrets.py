"""API token generation and hashing: random secrets, shown once, stored as SHA-256."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

TOKEN_PREFIX = "mp-"
PREFIX_LENGTH = 12


@dataclass(frozen=True)
class NewToken:
    secret: str
    prefix: str
    secret_hash: str


def new_token() -> NewToken:
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return NewToken(secret=secret, prefix=secret[:PREFIX_LENGTH], secret_hash=hash_token(secret))


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
