"""The engine layer: engines and pools, the connection guard (circuit breaker, connect
retries), server-side cancellation, retry backoff, statement logging and request tagging.

Internal: applications import from ``asyncdal``. This layer imports only configuration and
errors (``asyncdal.settings``, ``asyncdal.errors``, ``asyncdal._translate``, ``asyncdal._sql``).
"""
