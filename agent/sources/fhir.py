"""FHIR R4 ECG Observations, pulled incrementally by ``_lastUpdated``; the watermark moves only past commits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from agent.errors import AgentError
from agent.read_ahead import read_ahead
from agent.sources import FHIR_SOURCE, Pulled, PulledEcg, RejectedItem
from integrations.fhir.client import FhirClient
from integrations.fhir.ecg_mapping import observation_to_ecg
from integrations.fhir.errors import InvalidEcgObservation
from integrations.fhir.pull import EcgPullConfig, pull_ecgs, read_ecg_observation
from integrations.fhir.pull import PulledEcg as FhirPulledEcg
from integrations.fhir.pull import PullItem as FhirPullItem
from integrations.store import EcgStudy, QuarantineEntry, Store, StudyStatus

QUARANTINE_KIND = "fhir_observation"


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
        return pulled_observation(item, origin=self._client.config.base_url)

    def _requeued(self) -> Iterator[Pulled]:
        """Studies put back to ``new`` (``quarantine retry``): read again by id, whatever the watermark says."""
        for study in self._store.list_studies(source=FHIR_SOURCE, status=StudyStatus.NEW):
            observation_id = study.study.source_id
            try:
                observation = self._client.read("Observation", observation_id)
                record = observation_to_ecg(
                    observation, required_leads=self._config.required_leads, site_tz=self._config.site_tz
                )
            except InvalidEcgObservation as exc:
                self._store.set_study_status(study.id, StudyStatus.FAILED, error=str(exc))
                raw_ref = observation_ref(observation_id, study.study.source_version)
                yield RejectedItem(QuarantineEntry(QUARANTINE_KIND, self._client.config.base_url, str(exc), raw_ref))
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


def pulled_observation(item: FhirPullItem, *, origin: str) -> Pulled:
    """A decoded (or rejected) ECG Observation as the run takes it; ``origin`` names where it was read.

    The study key is (``fhir``, id, versionId) whether the Observation came from a search or a Bulk
    Data export, so a backfill and a nightly pull of the same version are one study.
    """
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
            acquired_at_text=record.acquired_at_text,
        )
        return PulledEcg(record, study, token=version.last_updated)
    entry = QuarantineEntry(
        kind=QUARANTINE_KIND,
        origin=origin,
        reason=f"{item.reason.value}: {item.detail}",
        raw_ref=observation_ref(version.observation_id, version.version_id),
    )
    return RejectedItem(entry, token=version.last_updated)


def observation_ref(observation_id: str, version_id: str) -> str:
    """How a quarantined FHIR Observation is named: ``Observation/<id>/_history/<versionId>``."""
    return f"Observation/{observation_id}/_history/{version_id}"


def parse_observation_ref(ref: str) -> str:
    """The Observation id of an :func:`observation_ref`."""
    resource_type, observation_id, *_ = ref.split("/")
    if resource_type != "Observation" or not observation_id:
        raise AgentError(f"{ref!r} does not name an Observation")
    return observation_id
