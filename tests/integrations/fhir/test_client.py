"""The client's retries and error translation, against an httpx.MockTransport (no network, no waiting)."""

from __future__ import annotations

import json
import random
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from integrations.fhir import (
    FhirClient,
    FhirConfig,
    FhirError,
    FhirHttpError,
    FhirProtocolError,
    FhirUnavailableError,
    RetryPolicy,
)
from integrations.fhir.retry import retry_after_s

BASE_URL = "https://fhir.example.org/r4"
NOW_S = 1_700_000_000.0
BUNDLE = {"resourceType": "Bundle", "type": "searchset", "entry": []}


class FakeTime:
    """A clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now_s = NOW_S
        self.sleeps_s: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps_s.append(seconds)
        self.now_s += seconds

    def clock(self) -> float:
        return self.now_s


def fhir_json(body: dict, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers={"Content-Type": "application/fhir+json", **headers})


def scripted(*answers: httpx.Response | Exception) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport that gives ``answers`` in order (an exception is raised), recording each request."""
    queue = list(answers)
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handle), seen


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make_client(fake_time: FakeTime) -> Callable[..., FhirClient]:
    def make(transport: httpx.MockTransport, **policy: float) -> FhirClient:
        retry = RetryPolicy(**({"max_attempts": 4, "base_delay_s": 1.0, "max_delay_s": 8.0, "budget_s": 60.0} | policy))
        config = FhirConfig(base_url=BASE_URL, retry=retry)
        return FhirClient(
            config, transport=transport, sleep=fake_time.sleep, clock=fake_time.clock, rng=random.Random(0)
        )

    return make


def test_a_429_with_retry_after_seconds_waits_exactly_that_long(make_client, fake_time):
    transport, seen = scripted(fhir_json({}, 429, **{"Retry-After": "7"}), fhir_json(BUNDLE))

    pages = list(make_client(transport).search_pages("Observation", {"code": "x"}))

    assert pages == [BUNDLE]
    assert fake_time.sleeps_s == [7.0]
    assert len(seen) == 2


def test_a_retry_after_http_date_is_honoured_relative_to_the_clock(make_client, fake_time):
    when = format_datetime(datetime.fromtimestamp(NOW_S + 12, UTC), usegmt=True)
    transport, _ = scripted(fhir_json({}, 503, **{"Retry-After": when}), fhir_json(BUNDLE))

    list(make_client(transport).search_pages("Observation", {}))

    assert fake_time.sleeps_s == [pytest.approx(12.0)]


def test_5xx_answers_back_off_exponentially_with_jitter_then_succeed(make_client, fake_time):
    transport, seen = scripted(fhir_json({}, 502), fhir_json({}, 500), fhir_json({}, 504), fhir_json(BUNDLE))

    list(make_client(transport).search_pages("Observation", {}))

    assert len(seen) == 4
    ceilings_s = [1.0, 2.0, 4.0]
    assert all(0.0 <= wait <= ceiling for wait, ceiling in zip(fake_time.sleeps_s, ceilings_s, strict=True))
    assert len(set(fake_time.sleeps_s)) == 3  # jittered, not a fixed schedule


def test_connection_errors_are_retried(make_client):
    transport, seen = scripted(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), fhir_json(BUNDLE))

    assert list(make_client(transport).search_pages("Observation", {})) == [BUNDLE]
    assert len(seen) == 3


def test_when_the_attempts_run_out_the_error_says_unavailable_with_the_last_failure(make_client):
    transport, seen = scripted(*[httpx.ConnectError("refused")] * 4)

    with pytest.raises(FhirUnavailableError, match=r"after 4 attempt\(s\); last failure: ConnectError: refused"):
        make_client(transport).read("Observation", "o1")
    assert len(seen) == 4


def test_a_retry_after_beyond_the_budget_gives_up_at_once_instead_of_sleeping(make_client, fake_time):
    transport, _ = scripted(fhir_json({}, 429, **{"Retry-After": "3600"}))

    with pytest.raises(FhirUnavailableError) as caught:
        make_client(transport, budget_s=60.0).read("Observation", "o1")
    assert fake_time.sleeps_s == []
    assert caught.value.attempts == 1 and caught.value.last_failure == "HTTP 429"


def test_a_4xx_is_not_retried_and_carries_the_operation_outcome_text(make_client):
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "not-found", "diagnostics": "Observation/o1 is gone"}],
    }
    transport, seen = scripted(fhir_json(outcome, 404))

    with pytest.raises(FhirHttpError) as caught:
        make_client(transport).read("Observation", "o1")
    assert (caught.value.status, caught.value.outcome_text) == (404, "Observation/o1 is gone")
    assert len(seen) == 1


def test_501_not_implemented_is_not_retried(make_client):
    transport, seen = scripted(fhir_json({}, 501))

    with pytest.raises(FhirHttpError):
        make_client(transport).read("Observation", "o1")
    assert len(seen) == 1


def test_an_html_page_where_json_was_expected_is_a_protocol_error(make_client):
    page = httpx.Response(200, text="<html><body>Login</body></html>", headers={"Content-Type": "text/html"})
    transport, _ = scripted(page)

    with pytest.raises(FhirProtocolError, match="expected FHIR JSON, got text/html"):
        make_client(transport).read("Observation", "o1")


def test_broken_json_and_the_wrong_resource_type_are_protocol_errors(make_client):
    broken = httpx.Response(200, text="{not json", headers={"Content-Type": "application/fhir+json"})
    transport, _ = scripted(broken, fhir_json({"resourceType": "Patient"}))
    client = make_client(transport)

    with pytest.raises(FhirProtocolError, match="not JSON"):
        client.read("Observation", "o1")
    with pytest.raises(FhirProtocolError, match="expected a Observation, got Patient"):
        client.read("Observation", "o1")


def test_a_body_with_a_byte_order_mark_or_non_ascii_text_reads_as_the_same_resource(make_client):
    # Some servers (.NET ones among them) start UTF-8 JSON with a byte order mark; names carry any script.
    text = '{"resourceType": "Patient", "id": "p1", "name": [{"family": "Müller-Ødegård 李"}]}'
    with_bom = httpx.Response(
        200, content=b"\xef\xbb\xbf" + text.encode(), headers={"Content-Type": "application/fhir+json"}
    )
    transport, _ = scripted(
        with_bom, httpx.Response(200, content=text.encode(), headers={"Content-Type": "application/fhir+json"})
    )
    client = make_client(transport)

    assert client.read("Patient", "p1")["name"][0]["family"] == "Müller-Ødegård 李"
    assert client.read("Patient", "p1") == json.loads(text)


def test_a_transaction_goes_as_utf8_json_that_reads_back_as_the_bundle_sent(make_client):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "valueQuantity": {"value": np.float64(0.25)},
                      "note": [{"text": "Ableitung V1 verrauscht – ±0.5 mV"}]}}]}  # fmt: skip
    transport, seen = scripted(fhir_json({"resourceType": "Bundle", "type": "transaction-response", "entry": []}))

    make_client(transport).transaction(bundle)

    assert seen[0].headers["Content-Type"] == "application/fhir+json"
    assert json.loads(seen[0].content.decode("utf-8")) == bundle


def test_next_links_are_followed_as_opaque_urls(make_client):
    opaque = "https://other-host.example.org/page?token=abc%7C123"
    first = {**BUNDLE, "link": [{"relation": "self", "url": "x"}, {"relation": "next", "url": opaque}]}
    transport, seen = scripted(fhir_json(first), fhir_json(BUNDLE))

    pages = list(make_client(transport).search_pages("Observation", {"_count": "2"}))

    assert len(pages) == 2
    assert str(seen[1].url) == opaque


def test_a_conditional_create_sends_if_none_exist_and_reports_whether_it_created(make_client):
    stored = {"resourceType": "Device", "id": "d1"}
    transport, seen = scripted(fhir_json(stored, 201), fhir_json(stored, 200))
    client = make_client(transport)

    first = client.create({"resourceType": "Device"}, if_none_exist="identifier=a|b")
    second = client.create({"resourceType": "Device"}, if_none_exist="identifier=a|b")

    assert (first.created, second.created) == (True, False)
    assert seen[0].headers["If-None-Exist"] == "identifier=a|b"
    assert str(seen[0].url) == f"{BASE_URL}/Device"


def test_an_unsupported_url_scheme_is_a_fhir_error_not_an_httpx_one(make_client):
    transport, _ = scripted(httpx.UnsupportedProtocol("ftp"))

    with pytest.raises(FhirError, match="UnsupportedProtocol"):
        make_client(transport).read("Observation", "o1")


@pytest.mark.parametrize(("header", "expected_s"), [(None, None), ("5", 5.0), ("soon", None)])
def test_retry_after_reads_seconds_and_ignores_what_it_cannot_read(header, expected_s):
    assert retry_after_s(header, NOW_S) == expected_s


def self_signed_ca_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Hospital CA")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2024, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2034, 1, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def test_a_ca_bundle_gives_a_verifying_context_that_trusts_exactly_that_ca(tmp_path):
    ca_path = tmp_path / "hospital-ca.pem"
    ca_path.write_bytes(self_signed_ca_pem())

    context = FhirConfig(base_url=BASE_URL, ca_bundle_path=ca_path).httpx_verify()

    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 1


def test_tls_verification_is_on_by_default_and_a_ca_bundle_needs_it():
    assert FhirConfig(base_url=BASE_URL).verify_tls is True
    with pytest.raises(ValueError, match="TLS verification is off"):
        FhirConfig(base_url=BASE_URL, verify_tls=False, ca_bundle_path="ca.pem")  # type: ignore[arg-type]
