"""The worker's statements: claim, settle, extend, reclaim, release, retention.

Hand-written SQL on the worker's own asyncpg connection: one statement claims a batch and one
settles a batch, whatever its outcomes, so the database sees two round trips per batch.
"""

from __future__ import annotations

from asyncdal.outbox._table import INBOX_TABLE, OUTBOX_TABLE

__all__ = [
    "CLAIM",
    "CLAIM_ORDERED",
    "CLAIM_ORDERED_TYPED",
    "CLAIM_TYPED",
    "DELETE_DONE",
    "DELETE_INBOX",
    "EXTEND",
    "OLDEST_PENDING_AGE",
    "PROBE",
    "RECLAIM_EXPIRED",
    "RELEASE_CLAIMS",
    "SETTLE",
]

_TYPES = "AND o.event_type = ANY($5::text[])"
# Per-key ordering: only the earliest unfinished event of a key may be claimed, so two events
# of one key are never out at once, and the next waits until the earlier is done or dead.
_ORDERED = (
    "AND (o.key IS NULL OR NOT EXISTS (SELECT 1 FROM {table} AS e WHERE e.key = o.key "
    "AND e.id < o.id AND e.status IN ('pending', 'leased')))"
)
# The ids go through ARRAY(...) so the UPDATE finds its rows by primary key: joined to a CTE
# instead, the planner hashes the whole table (done rows included) on every claim.
_CLAIM = """
UPDATE {table} AS o
SET status = 'leased', attempts = o.attempts + 1, lease_owner = $2, lease_token = $3,
    lease_expires_at = now() + make_interval(secs => $4), updated_at = now()
WHERE o.id = ANY(ARRAY(
    SELECT o.id FROM {table} AS o
    WHERE o.status = 'pending' AND o.available_at <= now() {types} {ordered}
    ORDER BY o.id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
))
RETURNING o.id, o.event_type, o.key, o.payload::text, o.attempts, o.created_at
"""


def _claim(*, typed: bool, ordered: bool) -> str:
    return _CLAIM.format(
        table=OUTBOX_TABLE,
        types=_TYPES if typed else "",
        ordered=_ORDERED.format(table=OUTBOX_TABLE) if ordered else "",
    )


CLAIM = _claim(typed=False, ordered=False)
CLAIM_TYPED = _claim(typed=True, ordered=False)
CLAIM_ORDERED = _claim(typed=False, ordered=True)
CLAIM_ORDERED_TYPED = _claim(typed=True, ordered=True)

# One UPDATE for a whole batch of outcomes; a row is changed only while it still carries the
# token it was claimed with, so a worker whose lease was taken over changes nothing.
# Only leased rows carry a token. The rows are found by primary key ("id = ANY($1)"): a
# condition on status would let the planner pick the partial index of leased rows, whose
# entries for rows settled since the last vacuum every settle would step through again.
# refund: 1 gives back the attempt (a release at shutdown is not a failed attempt).
# It returns the (id, token) of the outcomes written, so only those are counted.
SETTLE = f"""
UPDATE {OUTBOX_TABLE} AS o
SET status = r.status,
    attempts = o.attempts - r.refund,
    available_at = CASE WHEN r.status = 'pending'
                        THEN now() + make_interval(secs => r.delay) ELSE o.available_at END,
    last_error = COALESCE(r.error, o.last_error),
    done_at = CASE WHEN r.status = 'done' THEN now() END,
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = now()
FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::float8[], $5::text[], $6::int[])
     AS r(id, token, status, delay, error, refund)
WHERE o.id = ANY($1::bigint[]) AND o.id = r.id AND o.lease_token = r.token
RETURNING o.id, r.token
"""

EXTEND = f"""
UPDATE {OUTBOX_TABLE}
SET lease_expires_at = now() + make_interval(secs => $2)
WHERE lease_token = ANY($1::uuid[]) AND status = 'leased'
"""

# A lease that expired belongs to a worker that died or hung: its events go back to pending,
# or to dead when that was their last attempt (an event that kills its worker every time must
# not kill every worker forever).
RECLAIM_EXPIRED = f"""
UPDATE {OUTBOX_TABLE}
SET status = CASE WHEN attempts >= $1 THEN 'dead' ELSE 'pending' END,
    last_error = 'lease of ' || coalesce(lease_owner, '?') || ' expired during attempt '
                 || attempts,
    available_at = now(), lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
    updated_at = now()
WHERE status = 'leased' AND lease_expires_at < now()
"""

# The leases of claims whose answer never came (the connection broke once the statement was
# sent, so it may have been committed): back to pending at once, their attempt given back,
# rather than after the lease expired (or the worker's crash, had it been one).
RELEASE_CLAIMS = f"""
UPDATE {OUTBOX_TABLE}
SET status = 'pending', attempts = attempts - 1, available_at = now(),
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = now()
WHERE status = 'leased' AND lease_token = ANY($1::uuid[])
"""

# A worker's notification to itself, checking that its LISTEN hears (see _listener.py).
PROBE = "SELECT pg_notify($1, $2)"

DELETE_DONE = f"""
DELETE FROM {OUTBOX_TABLE}
WHERE id IN (
    SELECT id FROM {OUTBOX_TABLE}
    WHERE status = 'done' AND done_at < now() - make_interval(secs => $1)
    LIMIT $2
)
"""

DELETE_INBOX = f"""
DELETE FROM {INBOX_TABLE}
WHERE (consumer, event_id) IN (
    SELECT consumer, event_id FROM {INBOX_TABLE}
    WHERE received_at < now() - make_interval(secs => $1)
    LIMIT $2
)
"""

# Not yet done: pending (the first by id, from the pending index) or leased (few rows, from
# the leased index), e.g. an event whose handler hangs past its lease renewals.
OLDEST_PENDING_AGE = f"""
SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
FROM (
    (SELECT created_at FROM {OUTBOX_TABLE} WHERE status = 'pending' ORDER BY id LIMIT 1)
    UNION ALL
    (SELECT min(created_at) FROM {OUTBOX_TABLE} WHERE status = 'leased')
) AS p
"""
