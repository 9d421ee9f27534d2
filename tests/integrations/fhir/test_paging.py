"""Searches whose paging never ends stop with PagingLoopError; ordinary paging is untouched.

The servers are httpx MockTransports that answer by URL, as a misbehaving server would: they never run
out of pages, so a client without the guard would fetch until the test's request cap.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from integrations.fhir import FhirClient, FhirConfig, PagingLoopError, pull_ecgs
from integrations.fhir.paging import normalized_url

BASE_URL = "https://fhir.example.org/r4"
#: A client without a guard would go on for ever; the fake server refuses after this many requests.
REQUEST_CAP = 50


def observation(observation_id: str, version_id: str = "1", last_updated: str = "2024-05-01T10:00:00Z") -> dict:
    meta = {"versionId": version_id, "lastUpdated": last_updated}
    return {"resourceType": "Observation", "id": observation_id, "meta": meta, "status": "final", "component": []}


def searchset(*resources: dict, next_url: str | None = None) -> dict:
    links = [{"relation": "next", "url": next_url}] if next_url else []
    return {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": [{"resource": r} for r in resources]}


def server(page_for: Callable[[httpx.URL], dict]) -> tuple[FhirClient, list[httpx.URL]]:
    """A client of a server that answers each GET with ``page_for(url)``; the URLs it was asked for."""
    seen: list[httpx.URL] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        assert len(seen) <= REQUEST_CAP, "the client kept paging"
        return httpx.Response(
            200, text=json.dumps(page_for(request.url)), headers={"Content-Type": "application/fhir+json"}
        )

    return FhirClient(FhirConfig(base_url=BASE_URL), transport=httpx.MockTransport(handle)), seen


def test_next_links_that_loop_a_b_a_stop_the_search_at_the_first_repeat():
    pages = {
        "/r4/Observation": searchset(observation("a"), next_url=f"{BASE_URL}/page?token=B"),
        "B": searchset(observation("b"), next_url=f"{BASE_URL}/page?token=C"),
        "C": searchset(observation("c"), next_url=f"{BASE_URL}/page?token=B"),
    }
    client, seen = server(lambda url: pages[url.params.get("token", url.path)])

    with pytest.raises(PagingLoopError) as caught:
        list(client.search_pages("Observation", {"code": "x"}))

    assert len(seen) == 3
    assert caught.value.url == f"{BASE_URL}/page?token=C"
    assert f"next link {BASE_URL}/page?token=B was already followed" in str(caught.value)


def test_a_next_link_back_to_the_first_page_is_a_loop_whatever_the_order_of_its_parameters():
    first = searchset(observation("a"), next_url=f"{BASE_URL}/Observation?_count=1&code=x&page=2")
    second = searchset(observation("b"), next_url=f"{BASE_URL}/Observation?_count=1&code=x")
    client, seen = server(lambda url: second if url.params.get("page") == "2" else first)

    with pytest.raises(PagingLoopError, match="already followed"):
        list(client.search_pages("Observation", {"code": "x", "_count": "1"}))
    assert len(seen) == 2


def test_the_same_page_under_ever_changing_urls_stops_after_two_pages_with_nothing_new():
    def same_entries_next_page(url: httpx.URL) -> dict:
        page = int(url.params.get("page", "1"))
        return searchset(observation("a"), observation("b"), next_url=f"{BASE_URL}/Observation?page={page + 1}")

    client, seen = server(same_entries_next_page)

    with pytest.raises(PagingLoopError, match="2 pages in a row brought no entry not already read") as caught:
        list(client.search_pages("Observation", {}))
    assert len(seen) == 3  # the first page, then two pages of repeats
    assert caught.value.url == f"{BASE_URL}/Observation?page=3"


def test_an_incremental_pull_from_a_looping_server_yields_each_ecg_once_then_stops_with_the_error():
    def repeat_forever(url: httpx.URL) -> dict:
        page = int(url.params.get("page", "1"))
        return searchset(observation("a"), next_url=f"{BASE_URL}/Observation?page={page + 1}")

    client, seen = server(repeat_forever)
    pull = pull_ecgs(client, since=None)
    keys = []

    with pytest.raises(PagingLoopError):
        keys.extend(item.version.key for item in pull)
    assert keys == [("a", "1")]
    assert len(seen) == 3


def test_ordinary_paging_with_one_empty_page_on_the_way_is_followed_to_its_end():
    pages = [
        searchset(observation("a"), observation("b"), next_url=f"{BASE_URL}/Observation?page=2"),
        searchset(next_url=f"{BASE_URL}/Observation?page=3"),
        searchset(observation("b"), observation("c"), next_url=f"{BASE_URL}/Observation?page=4"),  # b shifted in
        searchset(observation("a", version_id="2")),  # a new version is a new entry
    ]
    client, seen = server(lambda url: pages[int(url.params.get("page", "1")) - 1])

    bundles = list(client.search_pages("Observation", {}))

    assert len(bundles) == len(seen) == 4


def test_urls_that_differ_only_in_parameter_order_or_fragment_are_the_same_link():
    assert normalized_url("https://h/x?b=2&a=1#top") == normalized_url("https://h/x?a=1&b=2")
    assert normalized_url("https://h/x?a=1&a=2") != normalized_url("https://h/x?a=1")
