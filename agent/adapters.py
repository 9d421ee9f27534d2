"""The agent's sources and sinks, over the integrations: FHIR pull and write-back, HL7 inbox and ORU out, WFDB.

Each source turns what its system holds into :class:`~agent.batch.PulledEcg` or
:class:`~agent.batch.RejectedItem` and acknowledges only what the batch has committed
(FHIR: the ``_lastUpdated`` watermark; HL7: the inbox row's status; WFDB: the study
table). Each sink turns a stored outbox payload back into its system's resources, with
codes from the manifest of the model version that produced it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.batch import Pulled, PulledEcg, RejectedItem
from agent.errors import AgentError
from agent.read_ahead import read_ahead
from integrations.ecg import EcgRecord
from integrations.fhir.client import FhirClient
from integrations.fhir.ecg_mapping import observation_to_ecg
from integrations.fhir.errors import InvalidEcgObservation
from integrations.fhir.pull import EcgPullConfig, pull_ecgs, read_ecg_observation
from integrations.fhir.pull import PulledEcg as FhirPulledEcg
from integrations.fhir.pull import PullItem as FhirPullItem
from integrations.fhir.writeback import EcgReference, ModelInfo, WriteBackConfig, write_back
from integrations.fhir.writeback import Finding as FhirFinding
from integrations.hl7.client import MllpClient
from integrations.hl7.ecg_oru import decode_ecg_oru
from integrations.hl7.errors import Hl7MessageError
from integrations.hl7.results import EcgResults, ModelInstance, build_results_oru
from integrations.hl7.results import Finding as Hl7Finding
from integrations.store import EcgStudy, InboxStatus, QuarantineEntry, Store, StoredStudy, StudyStatus
from integrations.wfdb_feed import NewRecord, scan
from integrations.wfdb_files import read_wfdb

log = logging.getLogger(__name__)

FHIR_SOURCE = "fhir"
HL7_SOURCE = "hl7"
WFDB_SOURCE = "wfdb"
ICD10_HL7_SYSTEM = "I10"
LOINC_HL7_SYSTEM = "LN"


class FhirEcgSource:
    """ECG Observations updated since the watermark, which moves only past committed batches."""

    name = FHIR_SOURCE

    def __init__(self, client: FhirClient, store: Store, config: EcgPullConfig, *, since: datetime | None = None):
        self._client, self._store, self._config, self._since = client, store, config, since

    def pull(self) -> Iterator[Pulled]:
        yield from self._requeued()
        # Pages are fetched and decoded one page ahead, while the run's thread scores the previous one.
        pulled = pull_ecgs(self._client, since=self._start(), config=self._config)
        for item in read_ahead(pulled, depth=self._config.page_size, name="fhir pull"):
            yield self._pulled(item)

    def reread(self, observation_id: str) -> Pulled:
        """The Observation's current version, read by id and decoded (``quarantine retry``); no watermark moves."""
        return self._pulled(read_ecg_observation(self._client.read("Observation", observation_id), self._config))

    def _pulled(self, item: FhirPullItem) -> Pulled:
        version = item.version
        if isinstance(item, FhirPulledEcg):
            record = item.record
            study = EcgStudy(
                source=FHIR_SOURCE,
                source_id=version.observation_id,
                source_version=version.version_id,
                fs_hz=record.fs_hz,
                leads=record.lead_names,
                patient_ref=version.subject_reference,
                acquired_at=record.acquired_at,
            )
            return PulledEcg(record, study, token=version.last_updated)
        entry = QuarantineEntry(
            kind="fhir_observation",
            origin=self._client.config.base_url,
            reason=f"{item.reason.value}: {item.detail}",
            raw_ref=observation_ref(version.observation_id, version.version_id),
        )
        return RejectedItem(entry, token=version.last_updated)

    def _requeued(self) -> Iterator[Pulled]:
        """Studies put back to ``new`` (``quarantine retry``): read again by id, whatever the watermark says."""
        for study in self._store.list_studies(source=FHIR_SOURCE, status=StudyStatus.NEW):
            observation_id = study.study.source_id
            try:
                observation = self._client.read("Observation", observation_id)
                record = observation_to_ecg(observation, required_leads=self._config.required_leads)
            except InvalidEcgObservation as exc:
                self._store.set_study_status(study.id, StudyStatus.FAILED, error=str(exc))
                raw_ref = observation_ref(observation_id, study.study.source_version)
                yield RejectedItem(QuarantineEntry("fhir_observation", self._client.config.base_url, str(exc), raw_ref))
                continue
            yield PulledEcg(record, study.study)

    def done(self, items: Sequence[Pulled]) -> None:
        stamps = [item.token for item in items if item.token is not None]
        if not stamps:
            return
        newest = max(stamps)
        current = self._watermark()
        if current is None or newest > current:
            self._store.advance_watermark(FHIR_SOURCE, newest.isoformat())

    def _start(self) -> datetime | None:
        return self._since if self._since is not None else self._watermark()

    def _watermark(self) -> datetime | None:
        watermark = self._store.get_watermark(FHIR_SOURCE)
        return None if watermark is None else datetime.fromisoformat(watermark.value)


def observation_ref(observation_id: str, version_id: str) -> str:
    """How a quarantined FHIR Observation is named: ``Observation/<id>/_history/<versionId>``."""
    return f"Observation/{observation_id}/_history/{version_id}"


def parse_observation_ref(ref: str) -> str:
    """The Observation id of an :func:`observation_ref`."""
    resource_type, observation_id, *_ = ref.split("/")
    if resource_type != "Observation" or not observation_id:
        raise AgentError(f"{ref!r} does not name an Observation")
    return observation_id


class Hl7InboxSource:
    """ORU^R01 ECG messages the MLLP listener stored; a row is marked processed only after its results commit."""

    name = HL7_SOURCE

    def __init__(self, store: Store, *, page_size: int = 100) -> None:
        self._store, self._page_size = store, page_size

    def pull(self) -> Iterator[Pulled]:
        after_id = 0
        while page := self._store.list_inbox(InboxStatus.RECEIVED, after_id=after_id, limit=self._page_size):
            for stored in page:
                after_id = stored.id
                yield self._decode(stored.id, stored.message.raw, stored.message.sender_application,
                                   stored.message.sender_facility, stored.message.control_id)  # fmt: skip

    def done(self, items: Sequence[Pulled]) -> None:
        for item in items:
            if isinstance(item, RejectedItem):
                self._store.set_inbox_status(item.token, InboxStatus.FAILED, error=item.entry.reason)
            else:
                self._store.set_inbox_status(item.token, InboxStatus.PROCESSED)

    def _decode(self, inbox_id: int, raw: bytes, application: str, facility: str, control_id: str) -> Pulled:
        try:
            record = decode_ecg_oru(raw)
        except Hl7MessageError as exc:
            entry = QuarantineEntry(kind="hl7_message", origin="inbox", reason=str(exc), raw_ref=f"inbox:{inbox_id}")
            return RejectedItem(entry, token=inbox_id)
        study = EcgStudy(
            source=HL7_SOURCE,
            source_id=f"{application}|{facility}|{control_id}",
            source_version="1",  # (MSH-3, MSH-4, MSH-10) names one message; a correction comes with a new MSH-10
            fs_hz=record.fs_hz,
            leads=record.lead_names,
            patient_ref=record.subject_id,
            acquired_at=record.acquired_at,
        )
        return PulledEcg(record, study, token=inbox_id)


class WfdbFolderSource:
    """New WFDB records in a folder; the feed remembers them in the study table and quarantines unreadable ones."""

    name = WFDB_SOURCE

    def __init__(self, folder: Path, store: Store, *, settle_s: float) -> None:
        self._folder, self._store, self._settle_s = folder, store, settle_s

    def pull(self) -> Iterator[Pulled]:
        for item in scan(self._folder, self._store, source=WFDB_SOURCE, settle_s=self._settle_s):
            if isinstance(item, NewRecord):
                study = self._store.get_study_by_id(item.study_id).study
                yield PulledEcg(item.record, study, token=item.study_id)
            else:
                entry = QuarantineEntry("wfdb_record", str(self._folder), item.reason, item.record_id)
                yield RejectedItem(entry, token=item.record_id, quarantine_id=item.quarantine_id)

    def done(self, items: Sequence[Pulled]) -> None:
        """Nothing to do: a scored study is never handed out again by the feed."""


class ManifestIndex:
    """Manifest codes by model version, read from the registry rows (a sink may send an older version's results).

    Shared by the sinks' worker threads: each version is read from the store once, under a lock.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._by_version: dict[str, tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def diagnosis(self, version: str, code: str) -> dict[str, Any]:
        return self._labels(version)[0][code]

    def lab(self, version: str, name: str) -> dict[str, Any]:
        return self._labels(version)[1][name]

    def _labels(self, version: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        with self._lock:
            if version not in self._by_version:
                self._by_version[version] = self._load(version)
            return self._by_version[version]

    def _load(self, version: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        model = self._store.get_model_version(version)
        if model is None:
            raise KeyError(f"model version {version} is not registered")
        manifest = model.manifest
        return (
            {label["code"]: label for label in manifest["diagnoses"]},
            {target["name"]: target for target in manifest["lab_targets"]},
        )


def _positive_findings(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [finding for finding in payload["findings"] if finding["positive"]]


def _acquired_at(payload: dict[str, Any]) -> datetime:
    stamp = payload.get("acquired_at")
    return datetime.fromisoformat(stamp) if stamp else datetime.now(UTC)


class FhirResultSink:
    """Positive findings as R4 Observations, derived from the ECG Observation they were computed on.

    Only ECGs that came from this FHIR server are written back (``derivedFrom`` must resolve
    there); negatives stay in SQL, so the chart is not flooded with "not present" results.
    """

    destination = "fhir"

    def __init__(
        self,
        client: FhirClient,
        manifests: ManifestIndex,
        *,
        config: WriteBackConfig | None = None,
        max_in_flight: int = 1,
    ) -> None:
        self._client, self._manifests = client, manifests
        self._config = config or WriteBackConfig()
        self.max_in_flight = max_in_flight

    def accepts(self, study: StoredStudy) -> bool:
        return study.study.source == FHIR_SOURCE

    def send(self, payload: dict[str, Any]) -> None:
        model = payload["model"]
        ecg = EcgReference(
            observation_id=payload["source_id"],
            subject_reference=payload.get("patient_ref"),
            effective_at=_acquired_at(payload),
        )
        findings = [self._finding(model["version"], finding, payload) for finding in _positive_findings(payload)]
        write_back(
            self._client,
            ecg,
            ModelInfo(name=model["name"], version=model["version"], sha256=model["sha256"]),
            findings,
            config=self._config,
        )

    def _finding(self, version: str, finding: dict[str, Any], payload: dict[str, Any]) -> FhirFinding:
        if finding["kind"] == "diagnosis":
            label = self._manifests.diagnosis(version, finding["code"])
            sent_labs = {f["code"] for f in _positive_findings(payload) if f["kind"] == "lab"}
            explained_by = tuple(
                e["lab_target"]
                for e in payload["explanations"]
                if e["diagnosis"] == finding["code"] and e["lab_target"] in sent_labs
            )
            return FhirFinding(
                target=finding["code"], kind="diagnosis", code=label["code"], system=label["system"],
                display=label["display"], probability=finding["probability"], positive=True, explained_by=explained_by,
            )  # fmt: skip
        target = self._manifests.lab(version, finding["code"])
        return FhirFinding(
            target=finding["code"], kind="lab", code=target["loinc"], system=target["loinc_system"],
            display=target["display"], probability=finding["probability"], positive=True,
            lab_direction=target["direction"],
        )  # fmt: skip


class Hl7ResultSink:
    """Positive findings as an ORU^R01 over MLLP, with a control id derived from the study and model version.

    The deterministic MSH-10 makes a resend after a crash a duplicate the receiver recognises.
    """

    destination = "hl7"
    max_in_flight = 1  # one connection, results in the order they were scored

    def __init__(self, client_factory: type[MllpClient] | Any, manifests: ManifestIndex) -> None:
        self._client_factory, self._manifests = client_factory, manifests

    def accepts(self, study: StoredStudy) -> bool:
        return True

    def send(self, payload: dict[str, Any]) -> None:
        model = payload["model"]
        results = EcgResults(
            ecg_record_id=payload["source_id"],
            subject_id=payload.get("patient_ref"),
            acquired_at=_acquired_at(payload),
            findings=tuple(self._finding(model["version"], f) for f in _positive_findings(payload)),
            model=ModelInstance(name=model["name"], version=model["version"]),
        )
        key = "|".join(str(payload[k]) for k in ("source", "source_id", "source_version")) + "|" + model["version"]
        control_id = hashlib.sha256(key.encode()).hexdigest()[:20]
        with self._client_factory() as client:
            client.send(build_results_oru(results, control_id=control_id))

    def _finding(self, version: str, finding: dict[str, Any]) -> Hl7Finding:
        if finding["kind"] == "diagnosis":
            label = self._manifests.diagnosis(version, finding["code"])
            return Hl7Finding("diagnosis", label["code"], ICD10_HL7_SYSTEM, label["display"],
                              finding["probability"], True)  # fmt: skip
        target = self._manifests.lab(version, finding["code"])
        return Hl7Finding("lab", target["loinc"], LOINC_HL7_SYSTEM, target["display"], finding["probability"], True)


def fetch_record(study: StoredStudy, store: Store, *, fhir: FhirClient | None, wfdb_folder: Path | None) -> EcgRecord:
    """The waveform of a stored study, read again from where it came from (the store keeps no waveforms)."""
    source, source_id = study.study.source, study.study.source_id
    if source == FHIR_SOURCE and fhir is not None:
        return observation_to_ecg(fhir.read("Observation", source_id), required_leads=())
    if source == HL7_SOURCE:
        application, facility, control_id = source_id.split("|", 2)
        inbox = store.get_inbox_message(application, facility, control_id)
        if inbox is not None:
            return decode_ecg_oru(inbox.message.raw)
    if source == WFDB_SOURCE and wfdb_folder is not None:
        return read_wfdb(wfdb_folder / source_id)
    raise AgentError(f"cannot read study {study.id} ({source} {source_id}) again: its source is not configured here")
