"""A base URL with basic-auth credentials: the password is sent, but never shown in an error."""

from __future__ import annotations

import httpx
import pytest

from integrations.fhir import FhirClient, FhirConfig, FhirHttpError, FhirUnavailableError, RetryPolicy

CREDENTIALED_BASE_URL = "https://svc-ecg:hunter2@fhir.example.org/r4"


def client_answering(status: int, seen: list[httpx.Request]) -> FhirClient:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json={}, headers={"Content-Type": "application/fhir+json"})

    config = FhirConfig(base_url=CREDENTIALED_BASE_URL, retry=RetryPolicy(max_attempts=1))
    return FhirClient(config, transport=httpx.MockTransport(handle))


@pytest.mark.parametrize(("status", "error"), [(503, FhirUnavailableError), (404, FhirHttpError)])
def test_errors_name_the_account_but_not_its_password(status, error):
    seen: list[httpx.Request] = []
    with pytest.raises(error) as caught:
        client_answering(status, seen).read("Observation", "o1")
    assert "https://svc-ecg@fhir.example.org/r4/Observation/o1" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert seen[0].headers["Authorization"].startswith("Basic ")  # the credentials still travel, as basic auth
