"""The FHIR subtree of :mod:`integrations.errors`.

httpx, JSON and pydantic errors are translated into these at the I/O edge (``raise ... from exc``);
every message names the request or the resource and the reason::

    IntegrationError
    └── FhirError                        anything from integrations.fhir
        ├── FhirHttpError                the server answered 4xx/5xx and a retry cannot help (status, outcome text)
        ├── FhirUnavailableError         connection errors, 429 or 5xx until the retry budget ran out
        │   └── FhirCircuitOpenError     failing fast: the server failed too often in a row, cooling down
        ├── PagingLoopError              a search whose next links loop or whose pages bring nothing new
        ├── FhirProtocolError            an answer that is not the FHIR JSON we asked for (HTML page, bad Bundle)
        ├── FhirAuthError                the token endpoint refused us, or the private key cannot be used
        ├── FhirResourceInvalidError     a resource we built fails R4 validation before it is sent (also ValueError)
        └── InvalidEcgObservation        an ECG Observation that cannot be decoded (also InvalidEcgError)
"""

from __future__ import annotations

from enum import StrEnum

from integrations.errors import IntegrationError, InvalidEcgError


class FhirError(IntegrationError):
    """Base of every error raised by :mod:`integrations.fhir`."""


class FhirHttpError(FhirError):
    """A non-success answer that retrying will not fix (4xx, or a 5xx we do not retry such as 501)."""

    def __init__(self, method: str, url: str, status: int, outcome_text: str) -> None:
        super().__init__(f"{method} {url}: HTTP {status}: {outcome_text}")
        self.method = method
        self.url = url
        self.status = status
        self.outcome_text = outcome_text


class FhirUnavailableError(FhirError):
    """The server stayed unreachable or overloaded (connection errors, 429, 5xx) for the whole retry budget."""

    def __init__(self, method: str, url: str, attempts: int, last_failure: str) -> None:
        super().__init__(f"{method} {url}: unavailable after {attempts} attempt(s); last failure: {last_failure}")
        self.method = method
        self.url = url
        self.attempts = attempts
        self.last_failure = last_failure


class FhirCircuitOpenError(FhirUnavailableError):
    """Not sent: the server failed ``failures`` times in a row and calls fail fast for ``retry_in_s`` more seconds."""

    def __init__(self, method: str, url: str, failures: int, retry_in_s: float) -> None:
        FhirError.__init__(
            self,
            f"{method} {url}: not sent, the FHIR server failed {failures} time(s) in a row; "
            f"calls fail fast for another {retry_in_s:.0f} s",
        )
        self.method = method
        self.url = url
        self.attempts = 0
        self.last_failure = "circuit open"
        self.failures = failures
        self.retry_in_s = retry_in_s


class PagingLoopError(FhirError):
    """A search that would never end: a ``next`` link already followed, or pages that bring no new entry."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"search paging stopped at {url}: {reason}")
        self.url = url
        self.reason = reason


class FhirProtocolError(FhirError):
    """An answer that is not the FHIR JSON we asked for: an HTML error page, broken JSON, a wrong resourceType."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


class FhirAuthError(FhirError):
    """The token endpoint refused the client, answered nonsense, or the signing key cannot be used."""

    def __init__(self, token_url: str, reason: str) -> None:
        super().__init__(f"token endpoint {token_url}: {reason}")
        self.token_url = token_url
        self.reason = reason


class FhirResourceInvalidError(FhirError, ValueError):
    """A resource we built does not validate as FHIR R4 (a bug or bad input on our side, never sent)."""

    def __init__(self, resource_name: str, reason: str) -> None:
        super().__init__(f"{resource_name}: not a valid R4 resource: {reason}")
        self.resource_name = resource_name
        self.reason = reason


class EcgRejectReason(StrEnum):
    """Why an ECG Observation was rejected; the value is what a quarantine table stores."""

    MALFORMED = "malformed"
    NO_COMPONENTS = "no-components"
    MISSING_LEADS = "missing-leads"
    DUPLICATE_LEAD = "duplicate-lead"
    NO_SAMPLED_DATA = "no-sampled-data"
    UNSUPPORTED_DIMENSIONS = "unsupported-dimensions"
    LENGTH_MISMATCH = "length-mismatch"
    RATE_MISMATCH = "rate-mismatch"
    UNKNOWN_UNITS = "unknown-units"
    NON_NUMERIC_DATA = "non-numeric-data"
    BAD_FACTOR = "bad-factor"
    BAD_PERIOD = "bad-period"
    INVALID_TIME = "invalid-time"


class InvalidEcgObservation(FhirError, InvalidEcgError):
    """An ECG Observation that cannot be decoded into an :class:`~integrations.ecg.EcgRecord`."""

    def __init__(self, observation_id: str, reason: EcgRejectReason, detail: str) -> None:
        InvalidEcgError.__init__(self, observation_id, f"{reason.value}: {detail}")
        self.args = (f"ECG Observation {observation_id!r}: {reason.value}: {detail}",)
        self.observation_id = observation_id
        self.reject_reason = reason
        self.detail = detail
