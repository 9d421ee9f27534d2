"""Incremental pull of ECG Observations by `_lastUpdated`, with an overlap window and (id, versionId) dedupe.

``GET Observation?code=<ecg code>&_lastUpdated=gt<watermark - overlap>&_sort=_lastUpdated&_count=N``,
then every ``next`` link as an opaque URL. The overlap re-reads the last moments before the watermark,
because resources committed in the same millisecond, or by a slower writer, can land behind it; the
re-read ones are dropped by their (id, versionId), both within this pull and against ``seen_versions``
(what the caller committed from the overlap window last time).

Each item is a :class:`PulledEcg` or a :class:`RejectedObservation`: a bad resource never stops the
pull. :attr:`EcgPull.newest_last_updated` is the newest ``meta.lastUpdated`` seen (rejections
included); the caller stores it as the new watermark only after it has committed the items.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.fhir.client import FhirClient
from integrations.fhir.ecg_mapping import ECG_LOINC_CODE, LOINC_SYSTEM, observation_to_ecg
from integrations.fhir.errors import EcgRejectReason, InvalidEcgObservation

logger = logging.getLogger(__name__)

DEFAULT_ECG_CODE = f"{LOINC_SYSTEM}|{ECG_LOINC_CODE}"
DEFAULT_PAGE_SIZE = 50
DEFAULT_OVERLAP = timedelta(minutes=5)


@dataclass(frozen=True, slots=True, kw_only=True)
class EcgPullConfig:
    """What to pull: ``ecg_code`` is a FHIR token (``system|code``); ``required_leads`` must all be present.

    ``site_tz`` places effective times written without a UTC offset (a date, ``2026-11``) on the time line.
    """

    ecg_code: str = DEFAULT_ECG_CODE
    page_size: int = DEFAULT_PAGE_SIZE
    overlap: timedelta = DEFAULT_OVERLAP
    required_leads: tuple[str, ...] = MODEL_LEAD_ORDER
    site_tz: tzinfo = UTC

    def __post_init__(self) -> None:
        if self.page_size < 1:
            raise ValueError(f"page_size must be positive, got {self.page_size}")
        if self.overlap < timedelta(0):
            raise ValueError(f"overlap must not be negative, got {self.overlap}")


@dataclass(frozen=True, slots=True)
class ObservationVersion:
    """Which version of which Observation an item came from."""

    observation_id: str
    version_id: str
    last_updated: datetime | None
    subject_reference: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.observation_id, self.version_id)


@dataclass(frozen=True, slots=True)
class PulledEcg:
    """An ECG Observation decoded into the canonical record."""

    version: ObservationVersion
    record: EcgRecord


@dataclass(frozen=True, slots=True)
class RejectedObservation:
    """An Observation that is not a usable ECG: quarantine it under ``reason``."""

    version: ObservationVersion
    reason: EcgRejectReason
    detail: str


PullItem = PulledEcg | RejectedObservation


@dataclass(slots=True)
class EcgPull:
    """One incremental pull; iterate it once, then read :attr:`newest_last_updated`."""

    client: FhirClient
    since: datetime | None
    config: EcgPullConfig = field(default_factory=EcgPullConfig)
    seen_versions: Collection[tuple[str, str]] = ()
    newest_last_updated: datetime | None = field(default=None, init=False)
    duplicates_skipped: int = field(default=0, init=False)

    def search_params(self) -> dict[str, str]:
        params = {"code": self.config.ecg_code, "_sort": "_lastUpdated", "_count": str(self.config.page_size)}
        if self.since is not None:
            params["_lastUpdated"] = f"gt{fhir_instant(self.since - self.config.overlap)}"
        return params

    def __iter__(self) -> Iterator[PullItem]:
        pulled: set[tuple[str, str]] = set()
        for bundle in self.client.search_pages("Observation", self.search_params()):
            for observation in bundle_resources(bundle, "Observation"):
                item = self._item(observation)
                self._advance(item.version.last_updated)
                if item.version.key in pulled or item.version.key in self.seen_versions:
                    self.duplicates_skipped += 1
                    continue
                pulled.add(item.version.key)
                yield item

    def _item(self, observation: dict[str, Any]) -> PullItem:
        return read_ecg_observation(observation, self.config)

    def _advance(self, last_updated: datetime | None) -> None:
        if last_updated is None:
            return
        if self.newest_last_updated is None or last_updated > self.newest_last_updated:
            self.newest_last_updated = last_updated


def pull_ecgs(
    client: FhirClient,
    *,
    since: datetime | None,
    config: EcgPullConfig | None = None,
    seen_versions: Collection[tuple[str, str]] = (),
) -> EcgPull:
    """Start an incremental pull of ECGs updated after ``since`` (minus the overlap); None pulls all."""
    return EcgPull(client, since, config or EcgPullConfig(), seen_versions)


def read_ecg_observation(observation: dict[str, Any], config: EcgPullConfig) -> PullItem:
    """One ECG Observation as the pull hands it out: decoded, or rejected with the reason."""
    version = observation_version(observation)
    if version.last_updated is None or not version.version_id:
        detail = "meta.versionId or meta.lastUpdated is missing or unreadable"
        return RejectedObservation(version, EcgRejectReason.MALFORMED, detail)
    try:
        record = observation_to_ecg(observation, required_leads=config.required_leads, site_tz=config.site_tz)
    except InvalidEcgObservation as exc:
        logger.warning("rejected ECG Observation %s: %s", version.observation_id, exc.reject_reason)
        return RejectedObservation(version, exc.reject_reason, exc.detail)
    return PulledEcg(version, record)


def observation_version(observation: dict[str, Any]) -> ObservationVersion:
    """Id, versionId, lastUpdated and subject, as far as they are readable (a server always sets the meta)."""
    meta = observation.get("meta") or {}
    try:
        last_updated = datetime.fromisoformat(str(meta["lastUpdated"]))
    except (KeyError, ValueError):
        last_updated = None
    return ObservationVersion(
        observation_id=str(observation.get("id") or "?"),
        version_id=str(meta.get("versionId") or ""),
        last_updated=last_updated,
        subject_reference=(observation.get("subject") or {}).get("reference"),
    )


def bundle_resources(bundle: dict[str, Any], resource_type: str) -> Sequence[dict[str, Any]]:
    """The ``resource_type`` resources of a searchset page (included resources and outcomes are skipped)."""
    entries = bundle.get("entry") or ()
    return [e["resource"] for e in entries if (e.get("resource") or {}).get("resourceType") == resource_type]


def fhir_instant(moment: datetime) -> str:
    """A FHIR instant in UTC with milliseconds; a naive ``moment`` is taken as UTC."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
