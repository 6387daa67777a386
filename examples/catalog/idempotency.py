"""Idempotency keys: a client that retries a write with the same key gets the first answer.

The key is claimed with ``INSERT ... ON CONFLICT DO NOTHING`` in the request's own transaction,
before the work, and the answer is stored in the same transaction: the key and the work are
committed together or not at all. A concurrent request with the same key waits on the key's row
until the first commits, then finds its answer. When a commit's outcome is unknown (the
connection failed during COMMIT), retrying with the same key is safe either way: if it was
committed the stored answer comes back, else the work runs now.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from catalog.models import IdempotencyKey

__all__ = ["IdempotencyKeys", "KeyReusedError", "request_hash"]


class KeyReusedError(ValueError):
    """The key was used before for a different request."""


def request_hash(method: str, path: str, body: bytes) -> str:
    """SHA-256 of what identifies a request, to tell a retry from a different request."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyKeys:
    """The ``idempotency_keys`` table, bound to a unit of work's session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim(self, key: str, fingerprint: str) -> IdempotencyKey | None:
        """Claim ``key`` for this transaction; None when claimed, else the stored answer.

        Raises:
            KeyReusedError: the key was used for another request.
        """
        claimed = await self.session.scalar(
            insert(IdempotencyKey)
            .values(key=key, request_hash=fingerprint)
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(IdempotencyKey.key)
        )
        if claimed is not None:
            return None
        stored = await self.session.scalar(select(IdempotencyKey).where(IdempotencyKey.key == key))
        if stored is None or stored.request_hash != fingerprint:
            raise KeyReusedError("this Idempotency-Key was already used for a different request")
        return stored

    async def record(self, key: str, status_code: int, response: dict[str, Any]) -> None:
        """Store the answer given under ``key`` (in the same transaction as the work)."""
        await self.session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == key)
            .values(status_code=status_code, response=response)
        )
