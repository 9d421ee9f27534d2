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
        ├── BulkExportError              a Bulk Data export ($export) that did not deliver
        │   ├── BulkExportRefusedError   the kick-off was answered 4xx (unsupported _type, bad _typeFilter, no $export)
        │   ├── BulkExportFailedError    the status URL reports the job failed (4xx, or an OperationOutcome)
        │   ├── BulkExportTimeoutError   the job did not complete within the caller's max_wait_s
        │   ├── BulkExportIncompleteError the manifest's error files report resources that were not exported
        │   └── NdjsonLineError          a line of a downloaded NDJSON file that is not a JSON object (file, line)
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


class BulkExportError(FhirError):
    """Base of the Bulk Data export errors: the export did not deliver what was asked for."""


class BulkExportRefusedError(BulkExportError):
    """The server refused the kick-off with a 4xx: the request itself is wrong or unsupported there."""

    def __init__(self, url: str, status: int, outcome_text: str) -> None:
        super().__init__(f"bulk export kick-off {url} refused: HTTP {status}: {outcome_text}")
        self.url = url
        self.status = status
        self.outcome_text = outcome_text


class BulkExportFailedError(BulkExportError):
    """The export job failed at the server: its status URL answered an error instead of a manifest."""

    def __init__(self, status_url: str, reason: str) -> None:
        super().__init__(f"bulk export {status_url} failed: {reason}")
        self.status_url = status_url
        self.reason = reason


class BulkExportTimeoutError(BulkExportError):
    """The job was still running after ``waited_s``; it may yet complete (poll ``status_url`` again) or be cancelled."""

    def __init__(self, status_url: str, waited_s: float, progress: str | None) -> None:
        shown = f" (last progress: {progress})" if progress else ""
        super().__init__(f"bulk export {status_url} not complete after {waited_s:.0f} s{shown}")
        self.status_url = status_url
        self.waited_s = waited_s
        self.progress = progress


class BulkExportIncompleteError(BulkExportError):
    """The manifest's error files report issues of severity error or fatal: some resources were not exported.

    The output files were downloaded all the same: ``files`` lists them, for a caller that accepts a partial export.
    """

    def __init__(self, issues: tuple[str, ...], files: tuple[object, ...]) -> None:
        shown = "; ".join(issues[:5]) + (f"; and {len(issues) - 5} more" if len(issues) > 5 else "")
        super().__init__(f"bulk export incomplete, {len(issues)} error(s) reported by the server: {shown}")
        self.issues = issues
        self.files = files


class NdjsonLineError(BulkExportError):
    """A line of a downloaded NDJSON file that is not one JSON object: the file is corrupt or not NDJSON."""

    def __init__(self, path: str, line_number: int, reason: str) -> None:
        super().__init__(f"{path}, line {line_number}: {reason}")
        self.path = path
        self.line_number = line_number
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
