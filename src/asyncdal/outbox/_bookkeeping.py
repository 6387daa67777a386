"""What an outbox worker keeps about its claims: each claim, the outcomes waiting to be
settled, and the counts of those settled.

A claim is one lease of one event (its id and the claim's token): the same event claimed again
after its lease expired, while a handler still ran, is another claim with another token, so the
two attempts never share bookkeeping. Outcomes are kept as the columns of the settle statement,
filled as handlers finish.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

from asyncdal.outbox._event import OutboxEvent

if TYPE_CHECKING:
    # Only for annotations: metrics are optional (the ``metrics`` extra).
    from asyncdal.outbox._metrics import OutboxMetrics

__all__ = ["Claim", "ClaimRef", "Outcome", "Outcomes", "WorkerStats", "record_settled"]

ClaimRef = tuple[int, uuid.UUID]
"""One claim of an event: its id and the claim's lease token."""


@dataclass(slots=True)
class WorkerStats:
    """What one worker did since it started (also exported as metrics when configured)."""

    claimed: int = 0
    done: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0
    lost: int = 0
    """Outcomes not written because the lease had been taken over."""


@dataclass(slots=True, eq=False)
class Claim:
    """One leased event, from its claim to its settling.

    Attributes:
        event: the event as claimed.
        token: the lease token of the claim (one per claim statement).
        task: the asyncio task running its handler.
        deadline: the loop time its handler must finish by (set when it starts).
        timed_out: the watchdog cancelled its handler.
    """

    event: OutboxEvent
    token: uuid.UUID
    task: asyncio.Task[None] | None = None
    deadline: float = 0.0
    timed_out: bool = False

    @property
    def ref(self) -> ClaimRef:
        """This claim of its event: the same event claimed again (its lease expired while a
        handler still ran) is another claim, with another token."""
        return (self.event.id, self.token)


class Outcome(NamedTuple):
    """How a handler's run ends, as the settle statement writes it."""

    status: str
    """``done``, ``pending`` (retried after ``delay``), ``dead``, or ``release``."""
    delay: float = 0.0
    """Seconds before a ``pending`` event may be claimed again."""
    error: str | None = None
    """The failure kept in the event's ``last_error``."""
    refund: bool = False
    """Give the attempt back: the failure was the database's, not the handler's."""


@dataclass(slots=True)
class Outcomes:
    """Columns of the settle statement, filled as handlers finish."""

    ids: list[int] = field(default_factory=list)
    tokens: list[uuid.UUID] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)
    refunds: list[int] = field(default_factory=list)

    def add(
        self,
        claim: Claim,
        status: str,
        delay: float = 0.0,
        error: str | None = None,
        refund: bool = False,
    ) -> None:
        """Add the outcome of ``claim``; a ``release`` refunds the attempt (a shutdown is not
        the handler's failure), as does a ``refund`` (a database fault is not either)."""
        self.ids.append(claim.event.id)
        self.tokens.append(claim.token)
        self.statuses.append(status)
        self.delays.append(delay)
        self.errors.append(error)
        self.refunds.append(1 if status == "release" or refund else 0)

    def refs(self) -> list[ClaimRef]:
        """The claims these outcomes settle, in order."""
        return list(zip(self.ids, self.tokens, strict=True))

    @classmethod
    def merged(cls, first: Outcomes, second: Outcomes) -> Outcomes:
        """``first``'s outcomes, then ``second``'s, in a new buffer."""
        merged = cls()
        for outcomes in (first, second):
            merged.ids += outcomes.ids
            merged.tokens += outcomes.tokens
            merged.statuses += outcomes.statuses
            merged.delays += outcomes.delays
            merged.errors += outcomes.errors
            merged.refunds += outcomes.refunds
        return merged

    def __len__(self) -> int:
        return len(self.ids)


def record_settled(
    outcomes: Outcomes,
    written: AbstractSet[ClaimRef],
    claims: Mapping[ClaimRef, Claim],
    stats: WorkerStats,
    metrics: OutboxMetrics | None,
) -> None:
    """Count the outcomes written (not those the token guard refused: they are lost).

    Args:
        outcomes: the outcomes the settle statement was given.
        written: the claims it updated.
        claims: the claims in flight, still holding those settled (for their events).
        stats: counted by status.
        metrics: counted by status and event type, with the delivery delay of those done.
    """
    now = datetime.now(UTC)
    for ref, status in zip(outcomes.refs(), outcomes.statuses, strict=True):
        if ref not in written:
            continue
        if status == "done":
            stats.done += 1
        elif status == "dead":
            stats.dead += 1
        elif status == "release":
            stats.released += 1
        else:
            stats.retried += 1
        if metrics is None:
            continue
        claim = claims.get(ref)
        if claim is None:
            continue
        event_type = claim.event.event_type
        if status == "done":
            metrics.done.labels(event_type).inc()
            delay = (now - claim.event.created_at).total_seconds()
            metrics.delivery_delay.observe(max(0.0, delay))
        elif status == "dead":
            metrics.dead.labels(event_type).inc()
        elif status == "pending":
            metrics.retried.labels(event_type).inc()
