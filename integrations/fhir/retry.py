"""Which failures are retried and how long to wait: full-jitter exponential backoff and ``Retry-After``."""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime

import httpx

from integrations.fhir.config import RetryPolicy

#: 5xx answers that say the request can never work here, so retrying is pointless.
PERMANENT_SERVER_ERRORS: frozenset[int] = frozenset({501, 505})

#: Failures before or during the exchange; a conditional create makes even a resent POST safe.
RETRYABLE_TRANSPORT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


def is_retryable_status(status: int) -> bool:
    """408 and 429 (slow down), and every 5xx except those that can never succeed."""
    return status in (408, 429) or (500 <= status < 600 and status not in PERMANENT_SERVER_ERRORS)


def retry_after_s(header: str | None, now_s: float) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date); None if absent or unreadable."""
    if header is None:
        return None
    text = header.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_s)


def backoff_delay_s(policy: RetryPolicy, retry_number: int, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max_delay, base × 2^(retry_number - 1))], so clients spread out."""
    ceiling_s = min(policy.max_delay_s, policy.base_delay_s * 2 ** (retry_number - 1))
    return rng.uniform(0.0, ceiling_s)
