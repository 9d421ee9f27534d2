"""The exception tree of :mod:`integrations`.

Third-party errors (wfdb, OSError, ...) are translated into these at the I/O edge,
with ``raise ... from exc``, so callers catch one family and every message names
the record and the reason::

    IntegrationError
    ├── InvalidEcgError          a record that cannot be a 12-lead ECG
    │   └── MissingLeadsError    required leads absent
    └── EcgReadError             a file that cannot be read (missing, truncated, corrupt)
"""

from __future__ import annotations


class IntegrationError(Exception):
    """Base of every error raised by :mod:`integrations`."""


class InvalidEcgError(IntegrationError, ValueError):
    """A record whose content cannot be used as an ECG (shape, rate, leads)."""

    def __init__(self, record_id: str, reason: str) -> None:
        super().__init__(f"ECG {record_id!r}: {reason}")
        self.record_id = record_id
        self.reason = reason


class MissingLeadsError(InvalidEcgError):
    """Required leads are not present in the record."""

    def __init__(self, record_id: str, missing: tuple[str, ...]) -> None:
        super().__init__(record_id, f"missing leads {', '.join(missing)}")
        self.missing = missing


class EcgReadError(IntegrationError, OSError):
    """A file that should hold an ECG is missing, truncated or corrupt."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
