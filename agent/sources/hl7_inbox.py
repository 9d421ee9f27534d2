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
        try:
            record = decode_ecg_oru(message.raw, site_tz=self._site_tz)
        except Hl7MessageError as exc:
            entry = QuarantineEntry(QUARANTINE_KIND, "inbox", exc.quarantine_reason, inbox_ref(stored.id))
            return RejectedItem(entry, token=stored.id)
        except (IntegrationError, ValueError) as exc:  # the per-message boundary: one message, one reason
            entry = QuarantineEntry(QUARANTINE_KIND, "inbox", f"malformed: {exc}", inbox_ref(stored.id))
            return RejectedItem(entry, token=stored.id)
        study = EcgStudy(
            source=HL7_SOURCE,
            source_id=f"{message.sender_application}|{message.sender_facility}|{message.control_id}",
            source_version="1",  # (MSH-3, MSH-4, MSH-10) names one message; a correction comes with a new MSH-10
            fs_hz=record.fs_hz,
            leads=record.lead_names,
            patient_ref=record.subject_id,
            acquired_at=record.acquired_at,
            acquired_at_text=record.acquired_at_text,
        )
        return PulledEcg(record, study, token=stored.id, patient_identifier=read_patient_identifier(message.raw))


def inbox_ref(inbox_id: int) -> str:
    """How a quarantined inbox message is named: ``inbox:<id>``."""
    return f"inbox:{inbox_id}"
