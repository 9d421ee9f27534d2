"""A stored study's waveform, read again from where it came from (the store keeps no waveforms)."""

from __future__ import annotations

from datetime import UTC, tzinfo
from pathlib import Path

from agent.errors import AgentError
from agent.sources import FHIR_SOURCE, HL7_SOURCE, WFDB_SOURCE
from integrations.ecg import EcgRecord
from integrations.fhir.client import FhirClient
from integrations.fhir.ecg_mapping import observation_to_ecg
from integrations.hl7.ecg_oru import decode_ecg_oru
from integrations.store import Store, StoredStudy
from integrations.wfdb_files import read_wfdb


def fetch_record(
    study: StoredStudy, store: Store, *, fhir: FhirClient | None, wfdb_folder: Path | None, site_tz: tzinfo = UTC
) -> EcgRecord:
    """The waveform of a stored study, read again from its source; :class:`AgentError` when it cannot be."""
    source, source_id = study.study.source, study.study.source_id
    if source == FHIR_SOURCE and fhir is not None:
        return observation_to_ecg(fhir.read("Observation", source_id), required_leads=(), site_tz=site_tz)
    if source == HL7_SOURCE:
        application, facility, control_id = source_id.split("|", 2)
        inbox = store.get_inbox_message(application, facility, control_id)
        if inbox is not None:
            return decode_ecg_oru(inbox.message.raw, site_tz=site_tz)
    if source == WFDB_SOURCE and wfdb_folder is not None:
        return read_wfdb(wfdb_folder / source_id, site_tz=site_tz)
    raise AgentError(f"cannot read study {study.id} ({source} {source_id}) again: its source is not configured here")
