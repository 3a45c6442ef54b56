"""API tokens: random bearer secrets stored only as SHA-256 hashes (table ``api_tokens``).

A token is ``iwt_`` followed by 32 random bytes in URL-safe base64. Only its
SHA-256 is stored, so a copy of the store gives no usable token. A token has
one role: ``viewer`` reads, ``analyst`` also triages, labels, decides on
actions and manages suppressions, ``admin`` also manages tokens.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = ["ROLES", "TOKEN_PREFIX", "TokenInfo", "TokenTable", "hash_token", "role_allows"]

ROLES = ("viewer", "analyst", "admin")
TOKEN_PREFIX = "iwt_"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_used_at REAL,
    revoked_by TEXT,
    revoked_at REAL
);
"""

_COLUMNS = ("id", "name", "role", "created_by", "created_at", "last_used_at", "revoked_by", "revoked_at")


def hash_token(token: str) -> str:
    """Return the hex SHA-256 of a token, as stored."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def role_allows(role: str, required: str) -> bool:
    """Return whether ``role`` includes the rights of ``required`` (viewer < analyst < admin)."""
    return ROLES.index(role) >= ROLES.index(required)


@dataclass(slots=True)
class TokenInfo:
    """A stored token without its secret."""

    id: str
    name: str
    role: str
    created_by: str
    created_at: float
    last_used_at: float | None
    revoked_by: str | None
    revoked_at: float | None

    @property
    def actor(self) -> str:
        """The name written to the ledger for this token's changes."""
        return f"{self.name} ({self.id})"

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _COLUMNS}


class TokenTable:
    """Creates, checks, lists and revokes tokens on a store's connection.

    ``create`` and ``revoke`` do not open a transaction: the caller wraps each
    with its ledger entry.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        connection.executescript(_SCHEMA)

    def create(self, role: str, name: str, created_by: str, now: float | None = None) -> tuple[TokenInfo, str]:
        """Insert a new token and return it with its secret, which is never stored."""
        if role not in ROLES:
            raise ValueError(f"role: invalid value {role!r}; choose from {', '.join(ROLES)}")
        secret = TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        info = TokenInfo(
            id="tok-" + uuid.uuid4().hex[:10],
            name=name,
            role=role,
            created_by=created_by,
            created_at=time.time() if now is None else now,
            last_used_at=None,
            revoked_by=None,
            revoked_at=None,
        )
        self.connection.execute(
            "INSERT INTO api_tokens (id, name, role, token_hash, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (info.id, info.name, info.role, hash_token(secret), info.created_by, info.created_at),
        )
        return info, secret

    def authenticate(self, secret: str) -> TokenInfo | None:
        """Return the token that ``secret`` belongs to, or None when it is unknown or revoked."""
        if not secret.startswith(TOKEN_PREFIX):
            return None
        row = self.connection.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL", (hash_token(secret),)
        ).fetchone()
        return None if row is None else TokenInfo(*row)

    def touch(self, token_id: str, now: float) -> None:
        """Record when a token was last used, at most once a minute per token."""
        self.connection.execute(
            "UPDATE api_tokens SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
            (now, token_id, now - 60.0),
        )

    def get(self, token_id: str) -> TokenInfo | None:
        row = self.connection.execute(f"SELECT {', '.join(_COLUMNS)} FROM api_tokens WHERE id = ?", (token_id,)).fetchone()
        return None if row is None else TokenInfo(*row)

    def list(self) -> list[TokenInfo]:
        return [TokenInfo(*row) for row in self.connection.execute(f"SELECT {', '.join(_COLUMNS)} FROM api_tokens ORDER BY created_at, id")]

    def revoke(self, token_id: str, actor: str, now: float | None = None) -> TokenInfo | None:
        """Mark a token revoked; return it, or None when no such token exists."""
        info = self.get(token_id)
        if info is None:
            return None
        if info.revoked_at is None:
            info.revoked_at = time.time() if now is None else now
            info.revoked_by = actor
            self.connection.execute(
                "UPDATE api_tokens SET revoked_at = ?, revoked_by = ? WHERE id = ?", (info.revoked_at, info.revoked_by, token_id)
            )
        return info
