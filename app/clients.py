"""Who sent a request: feedback credentials, hashed client ids, and a per-credential rate limit.

* Feedback senders hold one of the tokens in ``FEEDBACK_TOKENS`` (comma-separated) or
  ``FEEDBACK_TOKENS_FILE`` (one a line). A token is compared in constant time with every configured
  one; the stored sender id is :func:`hash_id` of it, never the token.
* A ``/predict`` row records :func:`client_id`: the hashed address of the caller, or with
  ``TRUST_FORWARDED_FOR`` the last ``X-Forwarded-For`` entry (the one our balancer appended; earlier
  ones are the client's own claim). The monitor caps each client's share of a drift window.
* :class:`TokenBucket` limits each credential in this process: with N replicas the limit is per replica.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time

from fastapi import Request

ID_HEX = 12  # hashed ids: the first 12 hex digits (48 bits) of a sha256


def hash_id(secret: str) -> str:
    """The stored id of a credential or an address: sha256, truncated to ``ID_HEX`` hex digits."""
    return hashlib.sha256(secret.encode()).hexdigest()[:ID_HEX]


def parse_tokens(text: str) -> tuple[str, ...]:
    """Tokens from a comma- or newline-separated list (blanks and ``#`` comment lines ignored), in order."""
    tokens = (t.strip() for line in text.splitlines() if not line.lstrip().startswith("#") for t in line.split(","))
    return tuple(dict.fromkeys(t for t in tokens if t))


def match_token(given: str, tokens: tuple[str, ...]) -> str | None:
    """The hashed id of the configured token equal to ``given`` (compared in constant time with each), else None."""
    found = None
    for token in tokens:  # no early exit: the time does not tell which token (or how many) matched
        if hmac.compare_digest(given.encode(), token.encode()):
            found = token
    return hash_id(found) if found is not None and given else None


def client_id(request: Request, trust_forwarded_for: bool) -> str | None:
    """The hashed id of the caller's address (the balancer's last X-Forwarded-For entry when trusted)."""
    address = request.client.host if request.client else None
    if trust_forwarded_for:
        forwarded = [a.strip() for a in request.headers.get("x-forwarded-for", "").split(",") if a.strip()]
        address = forwarded[-1] if forwarded else address
    return hash_id(f"addr:{address}") if address else None


class TokenBucket:
    """``rate_per_minute`` requests a minute per key, in bursts of up to ``burst``; thread-safe, in memory."""

    def __init__(self, rate_per_minute: float, burst: int) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens left, when counted)
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> float:
        """Spend one request of ``key``: 0 when allowed, else the seconds until one is (Retry-After)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, then = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate if self.rate > 0 else math.inf
