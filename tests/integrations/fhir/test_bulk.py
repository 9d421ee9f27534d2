"""Bulk Data export against the real FHIR engine: Medplum's data, exported by the shim's $export (bulk-export.mjs).

Each test seeds its own patients, Group and ECGs (under the test's unique ECG code) on the shared server, so the
exports are filtered to what the test wrote. The session server writes at most 3 resources per export file, so a
few ECGs already span several files, and answers 202 with ``Retry-After: 1`` to an export's first two polls.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from integrations.ecg import EcgRecord
from integrations.fhir import (
    BearerTokenAuth,
    BulkExportFailedError,
    BulkExportIncompleteError,
    BulkExportRefusedError,
    BulkExportRequest,
    ExportLevel,
    FhirClient,
    FhirConfig,
    FhirHttpError,
    FhirUnavailableError,
    RetryPolicy,
    bulk,
)
from integrations.fhir.pull import EcgPullConfig, PulledEcg, read_ecg_observation
from tests.integrations.fhir.conftest import ecg_observation_with_code, synthetic_record

HEART_RATE_LOINC = "8867-4"


@dataclass
class Ward:
    """Two patients in a Group, one outside it; ECGs for all three, and heart rates that are not ECGs."""

    group_id: str
    ecg_code: str
    members: list[str]
    outsider: str
    ecgs: dict[str, dict]  # id -> stored Observation
    records: dict[str, EcgRecord]  # id -> the record it was made of
    heart_rate_ids: set[str]

    def ecg_ids(self, *, of: list[str] | None = None) -> set[str]:
        subjects = set(of if of is not None else [*self.members, self.outsider])
        return {i for i, obs in self.ecgs.items() if obs["subject"]["reference"] in subjects}

    def ecg_filter(self) -> str:
        return f"Observation?code={self.ecg_code}"


def _patient(client: FhirClient) -> str:
    mrn = {"system": "urn:test:mrn", "value": uuid.uuid4().hex}
    return f"Patient/{client.create({'resourceType': 'Patient', 'identifier': [mrn]}).resource['id']}"


def _heart_rate(subject: str) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": HEART_RATE_LOINC}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    }


def _seed_ecgs(
    client: FhirClient, code: str, subjects: list[str], *, start: int = 0
) -> tuple[dict[str, dict], dict[str, EcgRecord]]:
    stored, records = {}, {}
    for i, subject in enumerate(subjects, start=start):
        record = synthetic_record(f"ecg-{i}", duration_s=1.0, seed=i)
        observation = client.create(ecg_observation_with_code(record, code, subject)).resource
        stored[observation["id"]] = observation
        records[observation["id"]] = record
    return stored, records


@pytest.fixture
def ward(fhir_client: FhirClient, ecg_code: str) -> Ward:
    members = [_patient(fhir_client), _patient(fhir_client)]
    outsider = _patient(fhir_client)
    ecgs, records = _seed_ecgs(fhir_client, ecg_code, [members[0], members[1], members[0], outsider, members[1]])
    heart_rates = {fhir_client.create(_heart_rate(s)).resource["id"] for s in (*members, outsider)}
    group = {"resourceType": "Group", "type": "person", "actual": True}
    group["member"] = [{"entity": {"reference": member}} for member in members]
    group_id = fhir_client.create(group).resource["id"]
    return Ward(group_id, ecg_code, members, outsider, ecgs, records, heart_rates)


@dataclass
class Exported:
    manifest: bulk.BulkManifest
    download: bulk.BulkDownload
    resources: list[dict]
    sleeps_s: list[float]
    progress: list[str]


def _export(client: FhirClient, request: BulkExportRequest, dest: Path) -> Exported:
    sleeps_s: list[float] = []
    progress: list[str] = []
    status_url = bulk.kick_off(client, request)
    manifest = bulk.poll(client, status_url, sleep=sleeps_s.append, on_progress=progress.append, max_wait_s=60)
    download = bulk.download(client, manifest, dest)
    resources = [resource for file in download.files for resource in bulk.iter_ndjson(file.path)]
    bulk.cancel(client, status_url)
    return Exported(manifest, download, resources, sleeps_s, progress)


def _ids(resources: list[dict], resource_type: str = "Observation") -> list[str]:
    return [r["id"] for r in resources if r["resourceType"] == resource_type]


@pytest.mark.parametrize("level", list(ExportLevel))
def test_an_export_filtered_on_the_ecg_code_returns_exactly_the_ecgs_at_every_level(
    fhir_client: FhirClient, ward: Ward, level: ExportLevel, tmp_path: Path
):
    group_id = ward.group_id if level is ExportLevel.GROUP else None
    request = BulkExportRequest(
        level=level, group_id=group_id, types=("Observation",), type_filters=(ward.ecg_filter(),)
    )
    exported = _export(fhir_client, request, tmp_path)
    expected = ward.ecg_ids(of=ward.members) if level is ExportLevel.GROUP else ward.ecg_ids()
    ids = _ids(exported.resources)
    assert sorted(ids) == sorted(expected)  # no heart rate, no other test's ECG, none twice
    assert len(exported.download.files) == 2  # 5 (or 4) ECGs at 3 per file
    assert all(file.type == "Observation" for file in exported.download.files)
    assert sum(item.count or 0 for item in exported.manifest.output) == len(expected)


def test_a_group_export_of_observations_and_patients_keeps_to_the_members(
    fhir_client: FhirClient, ward: Ward, tmp_path: Path
):
    heart_rates = "Observation?code=http://loinc.org|" + HEART_RATE_LOINC
    filters = (ward.ecg_filter(), heart_rates)  # two filters for one type: either matches
    request = BulkExportRequest(
        level=ExportLevel.GROUP, group_id=ward.group_id, types=("Observation", "Patient"), type_filters=filters
    )
    exported = _export(fhir_client, request, tmp_path)
    patients = {f"Patient/{i}" for i in _ids(exported.resources, "Patient")}
    assert patients == set(ward.members)
    observations = exported.resources
    subjects = {r["subject"]["reference"] for r in observations if r["resourceType"] == "Observation"}
    assert subjects == set(ward.members)
    assert ward.ecg_ids(of=ward.members) <= set(_ids(observations))
    assert len([r for r in observations if r.get("valueQuantity")]) == 2  # the members' heart rates


def test_since_exports_only_what_changed_after_it(fhir_client: FhirClient, ward: Ward, tmp_path: Path):
    since = max(datetime.fromisoformat(obs["meta"]["lastUpdated"]) for obs in ward.ecgs.values())
    newer, _ = _seed_ecgs(fhir_client, ward.ecg_code, [ward.members[0], ward.outsider], start=10)
    request = BulkExportRequest(types=("Observation",), type_filters=(ward.ecg_filter(),), since=since)
    exported = _export(fhir_client, request, tmp_path)
    assert sorted(_ids(exported.resources)) == sorted(newer)


def test_the_client_waits_through_the_202s_as_retry_after_says_and_reports_progress(
    fhir_client: FhirClient, ward: Ward, tmp_path: Path
):
    request = BulkExportRequest(types=("Observation",), type_filters=(ward.ecg_filter(),))
    exported = _export(fhir_client, request, tmp_path)
    assert len(exported.sleeps_s) >= 2 and set(exported.sleeps_s) == {1.0}  # the server's Retry-After: 1
    assert len(exported.progress) == len(exported.sleeps_s)
    written = [int(text.split(" of ")[0]) for text in exported.progress]  # "<written> of <total> resources"
    assert all(text.endswith(f" of {len(ward.ecgs)} resources") for text in exported.progress)
    assert written == sorted(written) and written[-1] <= len(ward.ecgs)


def test_exported_ecg_observations_decode_into_the_records_that_were_stored(
    fhir_client: FhirClient, ward: Ward, tmp_path: Path
):
    request = BulkExportRequest(types=("Observation",), type_filters=(ward.ecg_filter(),))
    exported = _export(fhir_client, request, tmp_path)
    items = [read_ecg_observation(obs, EcgPullConfig()) for obs in exported.resources]
    assert all(isinstance(item, PulledEcg) for item in items) and len(items) == len(ward.ecgs)
    for item in items:
        assert isinstance(item, PulledEcg)
        stored = ward.ecgs[item.version.observation_id]
        original = ward.records[item.version.observation_id]
        assert item.version.version_id == stored["meta"]["versionId"]
        assert item.version.subject_reference == stored["subject"]["reference"]
        assert item.record.lead_names == original.lead_names and item.record.fs_hz == original.fs_hz
        assert np.max(np.abs(item.record.signal_mv - original.signal_mv)) < 1e-3  # µV resolution on the wire


class _BreakSecondFile(httpx.BaseTransport):
    """The real network, except that the body of export file number 1 breaks off half-way, once."""

    def __init__(self) -> None:
        self._network = httpx.HTTPTransport()
        self.files_requested: list[str] = []
        self.armed = True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._network.handle_request(request)
        if "/$export-file/" not in request.url.path:
            return response
        self.files_requested.append(request.url.path.rsplit("/", 1)[-1])
        if not (self.armed and request.url.path.endswith("/1")):
            return response
        self.armed = False
        body = response.read()
        response.close()
        return httpx.Response(response.status_code, headers=response.headers, stream=_HalfThenReset(body))

    def close(self) -> None:
        self._network.close()


class _HalfThenReset(httpx.SyncByteStream):
    def __init__(self, body: bytes) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        yield self._body[: len(self._body) // 2]
        raise httpx.ReadError("connection reset by peer")


@pytest.fixture
def breaking_client(fhir_base_url: str) -> Iterator[tuple[FhirClient, _BreakSecondFile]]:
    transport = _BreakSecondFile()
    config = FhirConfig(base_url=fhir_base_url, retry=RetryPolicy(max_attempts=2, base_delay_s=0.01))
    with FhirClient(config, transport=transport) as client:
        yield client, transport


def test_a_download_broken_off_half_way_resumes_without_fetching_the_complete_files_again(
    breaking_client: tuple[FhirClient, _BreakSecondFile], ward: Ward, tmp_path: Path
):
    client, transport = breaking_client
    request = BulkExportRequest(types=("Observation",), type_filters=(ward.ecg_filter(),))
    manifest = bulk.poll(client, bulk.kick_off(client, request), sleep=lambda _s: None)
    with pytest.raises(FhirUnavailableError, match="connection reset"):
        bulk.download(client, manifest, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("output-*.ndjson")) == ["output-0000-Observation.ndjson"]

    resumed = bulk.download(client, bulk.saved_manifest(tmp_path) or manifest, tmp_path)
    assert transport.files_requested == ["0", "1", "1"]  # file 0 once, file 1 again after the break
    assert [file.skipped for file in resumed.files] == [True, False]
    ids = [r["id"] for file in resumed.files for r in bulk.iter_ndjson(file.path)]
    assert sorted(ids) == sorted(ward.ecg_ids())
    assert list(tmp_path.glob("*.part")) == []


def test_an_unknown_type_is_refused_at_kick_off(fhir_client: FhirClient):
    with pytest.raises(BulkExportRefusedError, match="NotAResource") as refused:
        bulk.kick_off(fhir_client, BulkExportRequest(types=("Observation", "NotAResource")))
    assert refused.value.status == 400


def test_a_type_filter_on_an_unknown_search_parameter_is_refused(fhir_client: FhirClient):
    request = BulkExportRequest(types=("Observation",), type_filters=("Observation?no-such-parameter=1",))
    with pytest.raises(BulkExportRefusedError, match="no-such-parameter"):
        bulk.kick_off(fhir_client, request)


def test_an_export_of_a_group_that_does_not_exist_is_refused(fhir_client: FhirClient):
    with pytest.raises(BulkExportRefusedError) as refused:
        bulk.kick_off(fhir_client, BulkExportRequest(level=ExportLevel.GROUP, group_id=uuid.uuid4().hex))
    assert refused.value.status == 404


def test_errors_reported_in_the_manifest_raise_after_the_output_is_downloaded(
    fhir_client: FhirClient, ward: Ward, tmp_path: Path
):
    request = BulkExportRequest(types=("Observation", "NotAResource"), type_filters=(ward.ecg_filter(),), lenient=True)
    manifest = bulk.poll(fhir_client, bulk.kick_off(fhir_client, request), sleep=lambda _s: None)
    assert [item.type for item in manifest.error] == ["OperationOutcome"]
    with pytest.raises(BulkExportIncompleteError, match="NotAResource") as incomplete:
        bulk.download(fhir_client, manifest, tmp_path)
    ids = [r["id"] for path in incomplete.value.files for r in bulk.iter_ndjson(path)]  # type: ignore[arg-type]
    assert sorted(ids) == sorted(ward.ecg_ids())


def test_a_cancelled_export_is_gone(fhir_client: FhirClient, ward: Ward):
    status_url = bulk.kick_off(
        fhir_client, BulkExportRequest(types=("Observation",), type_filters=(ward.ecg_filter(),))
    )
    bulk.cancel(fhir_client, status_url)
    with pytest.raises(BulkExportFailedError, match="HTTP 404"):
        bulk.poll(fhir_client, status_url, sleep=lambda _s: None)


def _client_with_token(base_url: str, token: str) -> FhirClient:
    return FhirClient(FhirConfig(base_url=base_url), auth=BearerTokenAuth(token))


def test_files_of_an_authorised_export_need_its_token(fhir_base_url: str, ward: Ward, tmp_path: Path):
    request = BulkExportRequest(types=("Observation",), type_filters=(ward.ecg_filter(),))
    with _client_with_token(fhir_base_url, "token-a") as owner, _client_with_token(fhir_base_url, "token-b") as other:
        manifest = bulk.poll(owner, bulk.kick_off(owner, request), sleep=lambda _s: None)
        assert manifest.requires_access_token
        with pytest.raises(FhirHttpError, match="HTTP 401"):
            bulk.download(other, manifest, tmp_path / "other")
        downloaded = bulk.download(owner, manifest, tmp_path / "owner")
    ids = [r["id"] for file in downloaded.files for r in bulk.iter_ndjson(file.path)]
    assert sorted(ids) == sorted(ward.ecg_ids())
