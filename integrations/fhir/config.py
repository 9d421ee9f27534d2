"""Configuration value objects for the FHIR client: connection, retries and SMART Backend Services.

Library code takes these explicitly; the program's settings object builds them at its entry point.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# The defaults bound what one request can cost a slow server. The read timeout is the longest silence
# within an answer (not its total time): 30 s is far beyond a healthy server's pause, and a search page
# of ECG waveforms may stream for longer than that in total. Four attempts (three retries) ride out a
# restart or a failover; more only pile abandoned requests onto a server that is not coming back soon.
# The budget caps one request's whole life, attempts and back-off included: 90 s is three timed-out
# attempts, where the earlier defaults (6 attempts, a budget counting only the sleeps) allowed about
# 5 minutes per request. Beyond that, the circuit breaker (see integrations.fhir.flow) takes over.
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_BASE_DELAY_S = 0.5
DEFAULT_MAX_DELAY_S = 30.0
DEFAULT_RETRY_BUDGET_S = 90.0
DEFAULT_MAX_CONCURRENT_REQUESTS = 4
#: Successes in a row after which the concurrency limit grows by one again.
DEFAULT_SUCCESSES_TO_GROW = 5
#: Failed attempts in a row (across all threads) that open the circuit breaker: two requests' worth of retries.
DEFAULT_BREAKER_FAILURES = 5
#: How long an open breaker fails calls fast before one probe: time for a struggling server to drain its queue.
DEFAULT_BREAKER_COOLDOWN_S = 60.0
DEFAULT_TOKEN_EXPIRY_SKEW_S = 30.0
DEFAULT_ASSERTION_LIFETIME_S = 300.0
DEFAULT_SMART_SCOPES: tuple[str, ...] = ("system/Observation.rs", "system/Observation.c", "system/Device.crs")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When to retry: connection errors, 429 and 5xx, with full-jitter exponential backoff.

    ``max_attempts`` counts the first try. ``budget_s`` bounds one request's total time, its attempts
    and the waits between them: a retry (or a ``Retry-After``) that would start beyond it is not made.
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    base_delay_s: float = DEFAULT_BASE_DELAY_S
    max_delay_s: float = DEFAULT_MAX_DELAY_S
    budget_s: float = DEFAULT_RETRY_BUDGET_S

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.budget_s < 0:
            raise ValueError("retry delays and budget must be non-negative")


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowPolicy:
    """How much one client asks of the server at once, and when it stops asking (see :mod:`.flow`).

    ``abandoned_hold_s`` (None: twice the read timeout) is how long a timed-out request keeps its slot.
    """

    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    successes_to_grow: int = DEFAULT_SUCCESSES_TO_GROW
    abandoned_hold_s: float | None = None
    breaker_failures: int = DEFAULT_BREAKER_FAILURES
    breaker_cooldown_s: float = DEFAULT_BREAKER_COOLDOWN_S

    def __post_init__(self) -> None:
        if min(self.max_concurrent_requests, self.successes_to_grow, self.breaker_failures) < 1:
            raise ValueError("max_concurrent_requests, successes_to_grow and breaker_failures must be at least 1")
        if self.breaker_cooldown_s < 0 or (self.abandoned_hold_s is not None and self.abandoned_hold_s < 0):
            raise ValueError("breaker_cooldown_s and abandoned_hold_s must be non-negative")


@dataclass(frozen=True, slots=True, kw_only=True)
class FhirConfig:
    """Where the FHIR server is and how to talk to it. TLS verification is on unless switched off."""

    base_url: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    verify_tls: bool = True
    ca_bundle_path: Path | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    flow: FlowPolicy = field(default_factory=FlowPolicy)

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {self.base_url!r}")
        if self.ca_bundle_path is not None and not self.verify_tls:
            raise ValueError("a CA bundle was given but TLS verification is off")

    @property
    def abandoned_hold_s(self) -> float:
        """How long a timed-out request is taken to still occupy the server."""
        return self.flow.abandoned_hold_s if self.flow.abandoned_hold_s is not None else 2 * self.timeout_s

    @property
    def httpx_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s)

    def httpx_verify(self) -> ssl.SSLContext | bool:
        """What httpx's ``verify`` takes: an SSL context for a custom CA bundle (a path is deprecated in 0.28)."""
        if self.ca_bundle_path is not None:
            return ssl.create_default_context(cafile=str(self.ca_bundle_path))
        return self.verify_tls


@dataclass(frozen=True, slots=True, kw_only=True)
class SmartBackendConfig:
    """SMART Backend Services: a ``client_credentials`` grant with a JWT assertion signed by ``private_key_path``.

    ``algorithm`` is RS384 (RSA key) or ES384 (P-384 EC key); ``key_id`` is the ``kid`` of the public key in
    the JWKS the client registered with the server.
    """

    token_url: str
    client_id: str
    private_key_path: Path
    key_id: str
    algorithm: str = "RS384"
    scopes: tuple[str, ...] = DEFAULT_SMART_SCOPES
    token_expiry_skew_s: float = DEFAULT_TOKEN_EXPIRY_SKEW_S
    assertion_lifetime_s: float = DEFAULT_ASSERTION_LIFETIME_S

    def __post_init__(self) -> None:
        if self.algorithm not in ("RS384", "ES384"):
            raise ValueError(f"SMART Backend Services signs with RS384 or ES384, got {self.algorithm!r}")
