"""The Bulk Data client's edges, against scripted servers (httpx.MockTransport) and a fake clock.

What the real engine's export (tests/integrations/fhir/test_bulk.py) does not do: HTTP-date and out-of-range
Retry-After, no Retry-After at all, a job that never completes, a failed job, warnings and errors in the
manifest's error files, files on another host, and a manifest as one vendor documents it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from integrations.fhir import (
    BearerTokenAuth,
    BulkExportError,
    BulkExportFailedError,
    BulkExportIncompleteError,
    BulkExportRequest,
    BulkExportTimeoutError,
    ExportLevel,
    FhirClient,
    FhirConfig,
    FhirProtocolError,
    FhirUnavailableError,
    NdjsonLineError,
    RetryPolicy,
    bulk,
)

BASE = "https://ehr.example.org/fhir"
STATUS_URL = f"{BASE}/bulkstatus/42"
FILES = "https://files.example.net/export-42"

Handler = Callable[[httpx.Request], httpx.Response]


class FakeClock:
    """Wall time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now_s = datetime(2026, 11, 30, 21, 0, tzinfo=UTC).timestamp()
        self.sleeps_s: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.sleeps_s.append(seconds)
        self.now_s += seconds


def _client(handler: Handler, *, token: str | None = None) -> FhirClient:
    config = FhirConfig(base_url=BASE, retry=RetryPolicy(max_attempts=1))
    auth = BearerTokenAuth(token) if token else None
    return FhirClient(config, transport=httpx.MockTransport(handler), auth=auth)


def _manifest(*, output: list[dict], error: list[dict] | None = None, requires_access_token: object = True) -> dict:
    return {
        "transactionTime": "2026-11-30T21:00:00Z",
        "request": f"{BASE}/$export?_type=Observation",
        "requiresAccessToken": requires_access_token,
        "output": output,
        "error": error or [],
    }


def _in_progress(retry_after: str | None, progress: str = "30%") -> httpx.Response:
    headers = {"X-Progress": progress} | ({"Retry-After": retry_after} if retry_after is not None else {})
    return httpx.Response(202, headers=headers)


def _polls(answers: list[httpx.Response]) -> Handler:
    """The status URL gives ``answers`` in turn, then the last one for ever."""

    def handle(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == STATUS_URL
        return answers.pop(0) if len(answers) > 1 else answers[0]

    return handle


def _poll(handler: Handler, clock: FakeClock, **kwargs: object) -> bulk.BulkManifest:
    with _client(handler) as client:
        return bulk.poll(client, STATUS_URL, clock=clock, sleep=clock.sleep, **kwargs)  # type: ignore[arg-type]


DONE = httpx.Response(200, json=_manifest(output=[]))


def test_kick_off_asks_for_the_async_pattern_and_returns_the_status_url_made_absolute():
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, headers={"Content-Location": "/fhir/bulkstatus/42"})

    since = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    filters = ("Observation?code=http://loinc.org|11524-6", "Observation?code=urn:oid:2.16.840.1.113883.6.24|131328")
    request = BulkExportRequest(
        level=ExportLevel.GROUP, group_id="ward-7", types=("Observation",), type_filters=filters, since=since
    )
    with _client(handle) as client:
        assert bulk.kick_off(client, request) == STATUS_URL
    [sent] = seen
    assert sent.url.path == "/fhir/Group/ward-7/$export"
    assert sent.headers["Prefer"] == "respond-async" and sent.headers["Accept"] == "application/fhir+json"
    assert sent.url.params.get_list("_typeFilter") == list(filters)  # each one a parameter, | and : intact
    assert sent.url.params["_type"] == "Observation"
    assert sent.url.params["_since"] == "2026-01-02T03:04:05.000Z"
    assert sent.url.params["_outputFormat"] == "application/fhir+ndjson"


@pytest.mark.parametrize(
    "answer",
    [httpx.Response(202), httpx.Response(200, json={"resourceType": "Bundle"})],
    ids=["202 without Content-Location", "a synchronous 200"],
)
def test_a_kick_off_answer_without_a_status_url_is_a_protocol_error(answer: httpx.Response):
    with _client(lambda _r: answer) as client, pytest.raises(FhirProtocolError):
        bulk.kick_off(client, BulkExportRequest())


def test_retry_after_as_an_http_date_is_waited_for_until_that_moment():
    clock = FakeClock()
    at = format_datetime(datetime.fromtimestamp(clock.now_s + 7, UTC), usegmt=True)
    _poll(_polls([_in_progress(at), DONE]), clock)
    assert clock.sleeps_s == [7.0]


def test_retry_after_is_kept_within_the_minimum_and_maximum_interval():
    clock = FakeClock()
    _poll(_polls([_in_progress("0"), _in_progress("86400"), DONE]), clock, min_interval_s=2.0, max_interval_s=60.0)
    assert clock.sleeps_s == [2.0, 60.0]


def test_without_retry_after_the_client_backs_off_exponentially():
    clock = FakeClock()
    _poll(_polls([_in_progress(None), _in_progress(None), _in_progress(None), DONE]), clock)
    assert clock.sleeps_s == [1.0, 2.0, 4.0]


def test_progress_texts_reach_the_callback():
    clock, progress = FakeClock(), []
    _poll(_polls([_in_progress("1", "10%"), _in_progress("1", "85%"), DONE]), clock, on_progress=progress.append)
    assert progress == ["10%", "85%"]


def test_a_job_that_never_completes_times_out_without_sleeping_past_max_wait():
    clock = FakeClock()
    with pytest.raises(BulkExportTimeoutError, match="not complete after 20 s") as timed_out:
        _poll(_polls([_in_progress("10", "still counting")]), clock, max_wait_s=25.0)
    assert clock.sleeps_s == [10.0, 10.0]
    assert timed_out.value.status_url == STATUS_URL and timed_out.value.progress == "still counting"


def test_a_failed_job_raises_with_the_servers_outcome():
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "fatal", "code": "exception",
               "diagnostics": "export worker ran out of disk"}]}  # fmt: skip
    clock = FakeClock()
    with pytest.raises(BulkExportFailedError, match="ran out of disk"):
        _poll(_polls([_in_progress("1"), httpx.Response(400, json=outcome)]), clock)


def test_a_manifest_as_one_vendor_documents_it_is_read():
    # Oracle Health's (Cerner) documented example: requiresAccessToken as a string, no counts, an empty error list.
    vendor = {
        "transactionTime": "2022-05-10T03:17:51Z",
        "request": "https://fhir-ehr-sc.cerner.com/r4/2f8f5ec1/bulk-api/request/Group/All_Patients/$export?_type=Goal,Patient,Procedure",
        "requiresAccessToken": "true",
        "output": [
            {"type": "Patient", "url": "https://fhir-ehr-sc.cerner.com/r4/2f8f5ec1/bulk-api/download/173a39fc/2A16_Patient.ndjson"},
            {"type": "Goal", "url": "https://fhir-ehr-sc.cerner.com/r4/2f8f5ec1/bulk-api/download/173a39fc/FCCC_Goal.ndjson"},
        ],
        "error": [],
    }  # fmt: skip
    manifest = bulk.BulkManifest.from_json(vendor, status_url=STATUS_URL)
    assert manifest.requires_access_token is True
    assert [(item.type, item.count) for item in manifest.output] == [("Patient", None), ("Goal", None)]
    assert manifest.transaction_time == datetime(2022, 5, 10, 3, 17, 51, tzinfo=UTC)


def test_a_manifest_without_output_is_a_protocol_error():
    broken = _manifest(output=[])
    del broken["output"]
    with pytest.raises(FhirProtocolError, match="not a Bulk Data manifest"):
        bulk.BulkManifest.from_json(broken, status_url=STATUS_URL)


def _file_server(files: dict[str, bytes], seen: list[httpx.Request]) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=files[str(request.url)], headers={"Content-Type": "application/fhir+ndjson"})

    return handle


OBSERVATION_LINE = b'{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"ECG"}}\n'


@pytest.mark.parametrize("requires_access_token", [True, False])
def test_the_token_goes_to_the_file_server_only_when_the_manifest_requires_it(
    requires_access_token: bool, tmp_path: Path
):
    seen: list[httpx.Request] = []
    url = f"{FILES}/observation-1.ndjson"
    raw = _manifest(output=[{"type": "Observation", "url": url}], requires_access_token=requires_access_token)
    manifest = bulk.BulkManifest.from_json(raw, status_url=STATUS_URL)
    with _client(_file_server({url: OBSERVATION_LINE}, seen), token="secret-token") as client:
        downloaded = bulk.download(client, manifest, tmp_path)
    assert ("Authorization" in seen[0].headers) is requires_access_token
    assert [r["id"] for r in bulk.iter_ndjson(downloaded.files[0].path)] == ["o1"]


def _outcome_line(severity: str, text: str) -> bytes:
    issue = {"severity": severity, "code": "processing", "diagnostics": text}
    return json.dumps({"resourceType": "OperationOutcome", "issue": [issue]}).encode() + b"\n"


def _export_with_errors(error_lines: bytes) -> tuple[bulk.BulkManifest, dict[str, bytes]]:
    files = {f"{FILES}/out-1.ndjson": OBSERVATION_LINE, f"{FILES}/err-1.ndjson": error_lines}
    raw = _manifest(
        output=[{"type": "Observation", "url": f"{FILES}/out-1.ndjson", "count": 1}],
        error=[{"type": "OperationOutcome", "url": f"{FILES}/err-1.ndjson"}],
    )
    return bulk.BulkManifest.from_json(raw, status_url=STATUS_URL), files


def test_errors_in_the_manifests_error_files_raise_with_the_downloaded_output(tmp_path: Path):
    lines = _outcome_line("error", "Observation/o2: could not be serialised") + _outcome_line("warning", "slow disk")
    manifest, files = _export_with_errors(lines)
    with _client(_file_server(files, [])) as client, pytest.raises(BulkExportIncompleteError) as incomplete:
        bulk.download(client, manifest, tmp_path)
    assert incomplete.value.issues == ("error: Observation/o2: could not be serialised",)
    assert [Path(str(p)).name for p in incomplete.value.files] == ["output-0000-Observation.ndjson"]


def test_warnings_in_the_error_files_are_notes_not_failures(tmp_path: Path):
    manifest, files = _export_with_errors(_outcome_line("information", "3 resources were skipped as unchanged"))
    with _client(_file_server(files, [])) as client:
        downloaded = bulk.download(client, manifest, tmp_path)
    assert downloaded.notes == ("information: 3 resources were skipped as unchanged",)
    assert len(downloaded.files) == 1


def test_a_directory_holding_another_exports_files_is_not_resumed_into(tmp_path: Path):
    url = f"{FILES}/observation-1.ndjson"
    first = bulk.BulkManifest.from_json(_manifest(output=[{"type": "Observation", "url": url}]), status_url=STATUS_URL)
    other_raw = _manifest(output=[{"type": "Observation", "url": url}]) | {"transactionTime": "2026-12-01T21:00:00Z"}
    other = bulk.BulkManifest.from_json(other_raw, status_url=f"{BASE}/bulkstatus/43")
    with _client(_file_server({url: OBSERVATION_LINE}, [])) as client:
        bulk.download(client, first, tmp_path)
        with pytest.raises(BulkExportError, match="another export"):
            bulk.download(client, other, tmp_path)
        fresh = bulk.download(client, other, tmp_path, resume=False)
    assert [file.skipped for file in fresh.files] == [False]
    assert bulk.saved_manifest(tmp_path) == other


def test_a_resume_follows_the_file_urls_of_the_latest_poll_of_the_same_export(tmp_path: Path):
    # A server handing out signed URLs signs them again at every poll: same export, new URLs.
    first_urls = [f"{FILES}/o-1.ndjson?sig=aaa", f"{FILES}/o-2.ndjson?sig=aaa"]
    later_urls = [f"{FILES}/o-1.ndjson?sig=bbb", f"{FILES}/o-2.ndjson?sig=bbb"]
    first = bulk.BulkManifest.from_json(
        _manifest(output=[{"type": "Observation", "url": url} for url in first_urls]), status_url=STATUS_URL
    )
    later = bulk.BulkManifest.from_json(
        _manifest(output=[{"type": "Observation", "url": url} for url in later_urls]), status_url=STATUS_URL
    )
    seen: list[httpx.Request] = []
    files = {first_urls[0]: OBSERVATION_LINE, later_urls[1]: OBSERVATION_LINE}

    def handle(request: httpx.Request) -> httpx.Response:
        if str(request.url) == first_urls[1]:
            return httpx.Response(503)  # the first run dies on file 2
        return _file_server(files, seen)(request)

    with _client(handle) as client:
        with pytest.raises(FhirUnavailableError):
            bulk.download(client, first, tmp_path)
        resumed = bulk.download(client, later, tmp_path)
    assert [str(request.url) for request in seen] == [first_urls[0], later_urls[1]]
    assert [file.skipped for file in resumed.files] == [True, False]


def test_a_corrupt_saved_manifest_is_a_project_error(tmp_path: Path):
    (tmp_path / bulk.SAVED_MANIFEST).write_text("{not json")
    with pytest.raises(BulkExportError, match="not a manifest saved by a download"):
        bulk.saved_manifest(tmp_path)


def test_iter_ndjson_names_the_file_and_line_of_a_bad_line(tmp_path: Path):
    path = tmp_path / "output.ndjson"
    path.write_bytes(OBSERVATION_LINE + b"\n" + b'{"resourceType": "Observation", "id": "o2"\n')
    resources = bulk.iter_ndjson(path)
    assert next(resources)["id"] == "o1"
    with pytest.raises(NdjsonLineError, match=r"output\.ndjson, line 3: not JSON") as bad:
        next(resources)
    assert bad.value.line_number == 3


def test_iter_ndjson_refuses_a_line_that_is_json_but_not_a_resource(tmp_path: Path):
    path = tmp_path / "output.ndjson"
    path.write_bytes(b'[{"resourceType": "Observation"}]\n')
    with pytest.raises(NdjsonLineError, match="line 1: not a FHIR resource"):
        list(bulk.iter_ndjson(path))


@pytest.mark.parametrize(
    "arguments",
    [
        {"level": ExportLevel.GROUP},
        {"level": ExportLevel.SYSTEM, "group_id": "g1"},
        {"types": ("Patient",), "type_filters": ("Observation?code=http://loinc.org|11524-6",)},
        {"type_filters": ("code=http://loinc.org|11524-6",)},
    ],
    ids=["group without id", "id without group", "filter for a type not exported", "filter without a type"],
)
def test_an_inconsistent_request_is_refused_before_anything_is_sent(arguments: dict):
    with pytest.raises(ValueError):
        BulkExportRequest(**arguments)
