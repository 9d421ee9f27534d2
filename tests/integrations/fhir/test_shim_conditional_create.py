"""The FHIR shim's identifier index (tests/servers/fhir/server.mjs): conditional creates on ``identifier=system|value``
are answered from an index instead of Medplum's scan, with Medplum's answers: the existing match, 200, nothing new.

Each test uses identifiers unique to it, so the shared server's other contents cannot match.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest

from integrations.fhir import FhirClient

SYSTEM = "urn:test:shim-index"


@pytest.fixture
def http(fhir_base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fhir_base_url, headers={"content-type": "application/fhir+json"}) as client:
        yield client


@pytest.fixture
def value() -> str:
    return f"v-{uuid.uuid4().hex}"


def device(value: str, system: str = SYSTEM) -> dict:
    return {"resourceType": "Device", "identifier": [{"system": system, "value": value}], "status": "active"}


def observation(value: str, device_reference: str) -> dict:
    return {
        "resourceType": "Observation",
        "identifier": [{"system": SYSTEM, "value": value}],
        "status": "preliminary",
        "code": {"text": "shim index test"},
        "device": {"reference": device_reference},
    }


def query(value: str, system: str = SYSTEM) -> str:
    """The form write_back sends: URL-encoded ``identifier=system|value``."""
    return urlencode({"identifier": f"{system}|{value}"})


def ids_with_identifier(client: FhirClient, resource_type: str, value: str) -> list[str]:
    pages = client.search_pages(resource_type, {"identifier": f"{SYSTEM}|{value}"})
    return [entry["resource"]["id"] for page in pages for entry in page.get("entry", [])]


def conditional_entry(full_url: str, resource: dict, if_none_exist: str) -> dict:
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], "ifNoneExist": if_none_exist},
    }


def transaction(*entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def test_a_second_conditional_create_returns_the_first_resource_and_creates_nothing(fhir_client, value):
    first = fhir_client.create(device(value), if_none_exist=query(value))
    second = fhir_client.create(device(value), if_none_exist=query(value))

    assert first.created and not second.created
    assert second.resource["id"] == first.resource["id"]
    assert second.resource["meta"]["versionId"] == first.resource["meta"]["versionId"]
    assert ids_with_identifier(fhir_client, "Device", value) == [first.resource["id"]]


def test_an_existing_match_answers_200_with_the_stored_resource_as_medplum_does(http, value):
    created = http.post("/Device", json=device(value), headers={"If-None-Exist": query(value)})
    again = http.post("/Device", json=device(value), headers={"If-None-Exist": query(value)})

    assert created.status_code == 201
    assert again.status_code == 200
    assert again.json() == created.json()


def test_the_match_is_medplums_case_insensitive_token_match(fhir_client, value):
    first = fhir_client.create(device(value.lower()), if_none_exist=query(value.lower()))

    again = fhir_client.create(device(value.upper()), if_none_exist=query(value.upper(), SYSTEM.upper()))

    assert not again.created
    assert again.resource["id"] == first.resource["id"]


def test_a_conditional_create_in_a_transaction_resolves_to_the_existing_resource_and_its_references_too(
    fhir_client, value
):
    device_urn = urn()
    first = fhir_client.transaction(transaction(conditional_entry(device_urn, device(value), query(value))))
    device_id = first["entry"][0]["response"]["location"].split("/")[1]

    obs_value = f"{value}-obs"
    second = fhir_client.transaction(
        transaction(
            conditional_entry(device_urn, device(value), query(value)),
            conditional_entry(urn(), observation(obs_value, device_urn), query(obs_value)),
        )
    )

    device_answer, observation_answer = second["entry"]
    assert device_answer["response"]["status"].startswith("200")
    assert device_answer["response"]["location"].startswith(f"Device/{device_id}")
    assert observation_answer["response"]["status"].startswith("201")
    stored = observation_answer["resource"]
    assert stored["device"] == {"reference": f"Device/{device_id}"}
    assert fhir_client.read("Observation", stored["id"])["device"] == {"reference": f"Device/{device_id}"}
    assert ids_with_identifier(fhir_client, "Device", value) == [device_id]


def test_repeating_a_whole_transaction_creates_nothing_and_answers_the_same_ids(fhir_client, value):
    device_urn, obs_urn = urn(), urn()
    bundle = transaction(
        conditional_entry(device_urn, device(value), query(value)),
        conditional_entry(obs_urn, observation(f"{value}-obs", device_urn), query(f"{value}-obs")),
    )
    first = fhir_client.transaction(bundle)
    repeat = fhir_client.transaction(bundle)

    assert [e["response"]["status"][:3] for e in first["entry"]] == ["201", "201"]
    assert [e["response"]["status"][:3] for e in repeat["entry"]] == ["200", "200"]
    assert [e["resource"]["id"] for e in repeat["entry"]] == [e["resource"]["id"] for e in first["entry"]]
    assert len(ids_with_identifier(fhir_client, "Observation", f"{value}-obs")) == 1


def test_two_entries_with_one_new_identifier_in_one_transaction_create_one_resource(fhir_client, value):
    answer = fhir_client.transaction(
        transaction(
            conditional_entry(urn(), device(value), query(value)),
            conditional_entry(urn(), device(value), query(value)),
        )
    )

    statuses = sorted(e["response"]["status"][:3] for e in answer["entry"])
    assert statuses == ["200", "201"]
    assert len({e["resource"]["id"] for e in answer["entry"]}) == 1
    assert len(ids_with_identifier(fhir_client, "Device", value)) == 1


def test_more_than_one_match_is_refused_with_412_as_medplum_does(fhir_client, http, value):
    fhir_client.create(device(value))
    fhir_client.create(device(value))  # plain creates: nothing stops a duplicate

    answer = http.post("/Device", json=device(value), headers={"If-None-Exist": query(value)})

    assert answer.status_code == 412
    assert len(ids_with_identifier(fhir_client, "Device", value)) == 2


def test_the_index_follows_updates_and_deletes(fhir_client, http, value):
    stored = fhir_client.create(device(value), if_none_exist=query(value)).resource
    renamed = {**stored, "identifier": [{"system": SYSTEM, "value": f"{value}-renamed"}]}
    assert http.put(f"/Device/{stored['id']}", json=renamed).status_code == 200

    assert (
        fhir_client.create(device(f"{value}-renamed"), if_none_exist=query(f"{value}-renamed")).resource["id"]
        == stored["id"]
    )
    recreated = fhir_client.create(device(value), if_none_exist=query(value))
    assert recreated.created and recreated.resource["id"] != stored["id"]

    assert http.delete(f"/Device/{recreated.resource['id']}").status_code == 200
    after_delete = fhir_client.create(device(value), if_none_exist=query(value))
    assert after_delete.created and after_delete.resource["id"] != recreated.resource["id"]


def test_a_search_on_an_identifier_answers_in_medplums_order_and_pages(fhir_client, value):
    ids = [fhir_client.create(device(value)).resource["id"] for _ in range(3)]

    first_page = fhir_client.search_pages("Device", {"identifier": f"{SYSTEM}|{value}", "_count": "2"})

    assert [entry["resource"]["id"] for page in first_page for entry in page.get("entry", [])] == ids


def test_other_forms_of_if_none_exist_are_still_medplums_scan_with_the_same_answer(fhir_client, value):
    first = fhir_client.create(device(value), if_none_exist=query(value))

    either = urlencode({"identifier": f"{SYSTEM}|{value}-other,{SYSTEM}|{value}"})
    by_value_only = urlencode({"identifier": value})

    assert fhir_client.create(device(value), if_none_exist=either).resource["id"] == first.resource["id"]
    assert fhir_client.create(device(value), if_none_exist=by_value_only).resource["id"] == first.resource["id"]
