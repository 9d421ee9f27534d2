"""Where ECGs come from: one module per source, behind one small protocol.

A source turns what its system holds into :class:`PulledEcg` (an ECG to score) or
:class:`RejectedItem` (something that cannot be an ECG, with the reason), oldest first, and
acknowledges only what the run has committed (:meth:`EcgSource.done`). Every failure that
belongs to one item is turned into a :class:`RejectedItem` *inside* the source, so one
poison item can never stop the items after it; only an infrastructure failure (server
unreachable after retries, a paging loop) escapes ``pull``, and then that source stops.

- :mod:`agent.sources.fhir`: FHIR R4 ECG Observations, incrementally by ``_lastUpdated``;
- :mod:`agent.sources.hl7_inbox`: ORU^R01 messages the MLLP listener stored in the inbox;
- :mod:`agent.sources.wfdb_folder`: WFDB records dropped into a folder.

The same contract tests (``tests/agent/contract``) run every source through the same cases.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from integrations.ecg import EcgRecord
from integrations.hl7.patient import PatientIdentifier
from integrations.store import EcgStudy, QuarantineEntry

FHIR_SOURCE = "fhir"
HL7_SOURCE = "hl7"
WFDB_SOURCE = "wfdb"
#: Every source, by the name its settings section has (``sources.<name>``).
SOURCE_NAMES = (FHIR_SOURCE, HL7_SOURCE, WFDB_SOURCE)


@dataclass(frozen=True, slots=True)
class PulledEcg:
    """An ECG from a source, with how the store knows it; ``token`` is the source's own bookmark.

    ``patient_identifier``: the patient as an HL7 message names them (PID-3 and its authority), which a
    sink may look up elsewhere; it travels in the outbox payload, not in the study row.
    """

    record: EcgRecord
    study: EcgStudy
    token: Any = None
    patient_identifier: PatientIdentifier | None = None


@dataclass(frozen=True, slots=True)
class RejectedItem:
    """Something a source could not turn into an ECG; it goes to quarantine with the reason.

    ``quarantine_id`` is set when the source has already quarantined it (the WFDB feed does).
    """

    entry: QuarantineEntry
    token: Any = None
    quarantine_id: int | None = None


Pulled = PulledEcg | RejectedItem


class EcgSource(Protocol):
    """Where ECGs come from: FHIR, the HL7 inbox, a WFDB folder."""

    name: str

    def pull(self) -> Iterator[Pulled]:
        """New items since the last :meth:`done`, oldest first."""
        ...

    def done(self, items: Sequence[Pulled]) -> None:
        """``items`` and everything before them are committed: advance the watermark / mark them processed."""
        ...


def study_ref(study: EcgStudy) -> str:
    """How a quarantined ECG names its study: ``source:source_id@source_version``."""
    return f"{study.source}:{study.source_id}@{study.source_version}"


def parse_study_ref(ref: str) -> tuple[str, str, str]:
    """(source, source_id, source_version) of a :func:`study_ref`."""
    source, _, rest = ref.partition(":")
    source_id, _, version = rest.rpartition("@")
    return source, source_id, version
