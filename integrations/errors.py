"""The exception tree of :mod:`integrations`.

Third-party errors (wfdb, OSError, ...) are translated into these at the I/O edge,
with ``raise ... from exc``, so callers catch one family and every message names
the record and the reason::

    IntegrationError
    ├── PrintoutError                a printout that cannot be written (not .png or .pdf, an unwritable path)
    ├── InvalidEcgError              a record that cannot be a 12-lead ECG
    │   ├── MissingLeadsError        required leads absent
    │   └── InvalidEcgObservation    an undecodable FHIR ECG Observation, with a reason (also a FhirError)
    ├── EcgReadError                 a file that cannot be read (missing, truncated, corrupt)
    ├── InvalidTimeError             a source's time text that is not a date/time of its standard (also ValueError)
    ├── FhirError                    integrations.fhir (tree in integrations/fhir/errors.py)
    │   ├── FhirHttpError            4xx/5xx a retry cannot fix (status, OperationOutcome text)
    │   ├── FhirUnavailableError     connection errors / 429 / 5xx until the retry budget ran out
    │   ├── FhirProtocolError        not the FHIR JSON asked for (HTML page, bad JSON, wrong resourceType)
    │   ├── FhirAuthError            the token endpoint refused us, or the key cannot sign
    │   ├── FhirResourceInvalidError a resource we built fails R4 validation (also ValueError)
    │   └── BulkExportError          a Bulk Data $export that did not deliver (refused, failed, timed out, incomplete)
    ├── Hl7Error                     integrations.hl7 (tree in integrations/hl7/errors.py)
    │   ├── Hl7MessageError          a refused message: Hl7ParseError, UnsupportedMessageError (AR);
    │   │                            Hl7StructureError, EcgWaveformError (AE)
    │   ├── MllpFramingError         FrameTooLargeError, TruncatedFrameError
    │   ├── MllpConnectionError      AckTimeoutError
    │   └── AckError                 a negative ACK, or MSA-2 answering another message
    └── StoreError                   integrations.store (tree in integrations/store/errors.py)
        ├── StoreUnavailableError    cannot connect, or the database is locked
        ├── StoreIntegrityError      a constraint refused the write
        ├── StoreNotFoundError       no such row
        └── StoreMigrationError      the schema cannot be brought up to date
"""

from __future__ import annotations


class IntegrationError(Exception):
    """Base of every error raised by :mod:`integrations`."""


class PrintoutError(IntegrationError):
    """An ECG printout that cannot be written to ``path``."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"printout {path}: {reason}")
        self.path = path
        self.reason = reason


class InvalidEcgError(IntegrationError, ValueError):
    """A record whose content cannot be used as an ECG (shape, rate, leads)."""

    def __init__(self, record_id: str, reason: str) -> None:
        super().__init__(f"ECG {record_id!r}: {reason}")
        self.record_id = record_id
        self.reason = reason


class MissingLeadsError(InvalidEcgError):
    """Required leads are not present in the record; the reason starts ``missing-leads:`` as FHIR rejections do."""

    def __init__(self, record_id: str, missing: tuple[str, ...]) -> None:
        super().__init__(record_id, f"missing-leads: missing leads {', '.join(missing)}")
        self.missing = missing


class EcgReadError(IntegrationError, OSError):
    """A file that should hold an ECG is missing, truncated or corrupt."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class InvalidTimeError(IntegrationError, ValueError):
    """A source's time text (HL7 DTM, FHIR dateTime, WFDB base date) that cannot be read as a time.

    ``str()`` starts with ``invalid-time:``, the reason prefix under which decoders reject the record.
    """

    REASON = "invalid-time"

    def __init__(self, text: str, why: str) -> None:
        super().__init__(f"{self.REASON}: {text!r}: {why}")
        self.text = text
        self.why = why
