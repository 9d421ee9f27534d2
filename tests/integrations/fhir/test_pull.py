"""The incremental pull, offline: the query it sends, dedupe, and a watermark that counts rejections too."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from integrations.fhir import EcgPullConfig, EcgRejectReason, FhirClient, FhirConfig, RejectedObservation, pull_ecgs

BASE_URL = "https://fhir.example.org/r4"


def observation(observation_id: str, version_id: str, last_updated: str) -> dict:
    meta = {"versionId": version_id, "lastUpdated": last_updated}
    return {"resourceType": "Observation", "id": observation_id, "meta": meta, "status": "final", "component": []}


def searchset(*resources: dict, next_url: str | None = None) -> dict:
    links = [{"relation": "next", "url": next_url}] if next_url else []
    return {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": [{"resource": r} for r in resources]}


def serve(*pages: dict) -> tuple[FhirClient, list[httpx.Request]]:
    queue, seen = list(pages), []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.dumps(queue.pop(0))
        return httpx.Response(200, text=body, headers={"Content-Type": "application/fhir+json"})

    return FhirClient(FhirConfig(base_url=BASE_URL), transport=httpx.MockTransport(handle)), seen


def test_the_query_asks_for_the_ecg_code_after_the_watermark_minus_the_overlap_sorted_and_paged():
    client, seen = serve(searchset())
    config = EcgPullConfig(page_size=25, overlap=timedelta(minutes=2))

    list(pull_ecgs(client, since=datetime(2024, 5, 1, 10, 0, tzinfo=UTC), config=config))

    assert dict(seen[0].url.params) == {
        "code": "http://loinc.org|11524-6",
        "_lastUpdated": "gt2024-05-01T09:58:00.000Z",
        "_sort": "_lastUpdated",
        "_count": "25",
    }


def test_the_same_version_seen_on_two_pages_is_yielded_once():
    a1 = observation("a", "1", "2024-05-01T10:00:00Z")
    client, _ = serve(
        searchset(a1, next_url=f"{BASE_URL}/page2"), searchset(a1, observation("b", "1", "2024-05-01T10:01:00Z"))
    )

    pull = pull_ecgs(client, since=None)
    items = list(pull)

    assert [item.version.key for item in items] == [("a", "1"), ("b", "1")]
    assert pull.duplicates_skipped == 1


def test_a_new_version_of_a_seen_observation_is_pulled_again():
    client, _ = serve(searchset(observation("a", "2", "2024-05-01T10:05:00Z")))

    items = list(pull_ecgs(client, since=None, seen_versions={("a", "1")}))

    assert [item.version.key for item in items] == [("a", "2")]


def test_rejected_observations_still_advance_the_watermark():
    client, _ = serve(
        searchset(observation("a", "1", "2024-05-01T10:00:00Z"), observation("b", "1", "2024-05-01T11:00:00Z"))
    )

    pull = pull_ecgs(client, since=None)
    reasons = [item.reason for item in pull]

    assert reasons == [EcgRejectReason.NO_COMPONENTS, EcgRejectReason.NO_COMPONENTS]
    assert pull.newest_last_updated == datetime(2024, 5, 1, 11, 0, tzinfo=UTC)


def test_an_observation_without_version_meta_is_rejected_as_malformed_and_the_pull_goes_on():
    broken = {"resourceType": "Observation", "id": "x", "status": "final"}
    client, _ = serve(searchset(broken, observation("b", "1", "2024-05-01T11:00:00Z")))

    items = list(pull_ecgs(client, since=None))

    assert isinstance(items[0], RejectedObservation) and items[0].reason == EcgRejectReason.MALFORMED
    assert items[1].version.observation_id == "b"


def test_a_negative_overlap_or_empty_page_is_refused():
    with pytest.raises(ValueError, match="overlap"):
        EcgPullConfig(overlap=timedelta(seconds=-1))
    with pytest.raises(ValueError, match="page_size"):
        EcgPullConfig(page_size=0)
