"""ORU^R01 ECG messages the MLLP listener stored in the inbox; a row is marked processed only after its commit."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, tzinfo

from agent.sources import HL7_SOURCE, Pulled, PulledEcg, RejectedItem
from integrations.errors import IntegrationError
from integrations.hl7.ecg_oru import decode_ecg_oru
from integrations.hl7.errors import Hl7MessageError
from integrations.hl7.patient import read_patient_identifier
from integrations.store import EcgStudy, InboxStatus, QuarantineEntry, Store, StoredInboxMessage

QUARANTINE_KIND = "hl7_message"


class Hl7InboxSource:
    """ORU^R01 ECG messages the MLLP listener stored; a row is marked processed only after its results commit."""

    name = HL7_SOURCE

    def __init__(self, store: Store, *, site_tz: tzinfo = UTC, page_size: int = 100) -> None:
        self._store, self._site_tz, self._page_size = store, site_tz, page_size

    def pull(self) -> Iterator[Pulled]:
        after_id = 0
        while page := self._store.list_inbox(InboxStatus.RECEIVED, after_id=after_id, limit=self._page_size):
            for stored in page:
                after_id = stored.id
                yield self._decode(stored)

    def done(self, items: Sequence[Pulled]) -> None:
        for item in items:
            if isinstance(item, RejectedItem):
                self._store.set_inbox_status(item.token, InboxStatus.FAILED, error=item.entry.reason)
            else:
                self._store.set_inbox_status(item.token, InboxStatus.PROCESSED)

    def _decode(self, stored: StoredInboxMessage) -> Pulled:
        message = stored.message
        source_id = hl7_study_id(message.sender_application, message.sender_facility, message.control_id)
        return decode_hl7_message(message.raw, source_id, origin="inbox", raw_ref=inbox_ref(stored.id),
                                  token=stored.id, site_tz=self._site_tz)  # fmt: skip


def hl7_study_id(sender_application: str, sender_facility: str, control_id: str) -> str:
    """(MSH-3, MSH-4, MSH-10) names one message; a correction comes with a new MSH-10."""
    return f"{sender_application}|{sender_facility}|{control_id}"


def decode_hl7_message(
    raw: bytes, source_id: str, *, origin: str, raw_ref: str, token: object, site_tz: tzinfo = UTC
) -> Pulled:
    """One ORU^R01 as the run takes it: the decoded ECG, or the message rejected with its reason.

    ``source_id`` is :func:`hl7_study_id` of its MSH, so the inbox and a backfilled dump of the same
    message are one study; ``origin`` and ``raw_ref`` name it in the quarantine.
    """
    try:
        record = decode_ecg_oru(raw, site_tz=site_tz)
    except Hl7MessageError as exc:
        return RejectedItem(QuarantineEntry(QUARANTINE_KIND, origin, exc.quarantine_reason, raw_ref), token=token)
    except (IntegrationError, ValueError) as exc:  # the per-message boundary: one message, one reason
        return RejectedItem(QuarantineEntry(QUARANTINE_KIND, origin, f"malformed: {exc}", raw_ref), token=token)
    study = EcgStudy(
        source=HL7_SOURCE,
        source_id=source_id,
        source_version="1",
        fs_hz=record.fs_hz,
        leads=record.lead_names,
        patient_ref=record.subject_id,
        acquired_at=record.acquired_at,
        acquired_at_text=record.acquired_at_text,
    )
    return PulledEcg(record, study, token=token, patient_identifier=read_patient_identifier(raw))


def inbox_ref(inbox_id: int) -> str:
    """How a quarantined inbox message is named: ``inbox:<id>``."""
    return f"inbox:{inbox_id}"
