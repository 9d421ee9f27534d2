"""SMART Backend Services and bearer auth, against a MockTransport token endpoint that checks the JWT assertion."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from integrations.fhir import (
    BearerTokenAuth,
    FhirAuthError,
    FhirClient,
    FhirConfig,
    SmartBackendAuth,
    SmartBackendConfig,
)
from integrations.fhir.auth import CLIENT_ASSERTION_TYPE

BASE_URL = "https://fhir.example.org/r4"
TOKEN_URL = "https://auth.example.org/token"
CLIENT_ID = "ecg-agent"
OBSERVATION = {"resourceType": "Observation", "id": "o1"}


class Clock:
    """Starts at the real time (PyJWT checks ``exp`` against it) and moves only when a test moves it."""

    def __init__(self) -> None:
        self.now_s = time.time()

    def __call__(self) -> float:
        return self.now_s


class FakeAuthorizationServer:
    """Issues tokens for valid assertions and serves FHIR reads only to the current token."""

    def __init__(self, public_key: object, algorithm: str, *, expires_in_s: int = 300) -> None:
        self.public_key = public_key
        self.algorithm = algorithm
        self.expires_in_s = expires_in_s
        self.claims: list[dict] = []
        self.headers: list[dict] = []
        self.forms: list[dict[str, str]] = []
        self.revoked: set[str] = set()

    def handle(self, request: httpx.Request) -> httpx.Response:
        if str(request.url) == TOKEN_URL:
            return self.token(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in {f"token-{n}" for n in range(1, len(self.claims) + 1)} or token in self.revoked:
            return httpx.Response(401, json={"resourceType": "OperationOutcome", "issue": []})
        return httpx.Response(200, json=OBSERVATION, headers={"Content-Type": "application/fhir+json"})

    def token(self, request: httpx.Request) -> httpx.Response:
        form = {key: values[0] for key, values in parse_qs(request.content.decode()).items()}
        self.forms.append(form)
        assertion = form["client_assertion"]
        self.headers.append(jwt.get_unverified_header(assertion))
        claims = jwt.decode(
            assertion,
            self.public_key,
            algorithms=[self.algorithm],
            audience=TOKEN_URL,
            options={"require": ["exp", "jti"]},
        )
        self.claims.append(claims)
        return httpx.Response(200, json={"access_token": f"token-{len(self.claims)}", "expires_in": self.expires_in_s})


def write_key(tmp_path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Path:
    path = tmp_path / "client-key.pem"
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    return path


def smart_config(key_path: Path, algorithm: str = "RS384") -> SmartBackendConfig:
    return SmartBackendConfig(
        token_url=TOKEN_URL, client_id=CLIENT_ID, private_key_path=key_path, key_id="key-1", algorithm=algorithm
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def client_for(server: FakeAuthorizationServer, auth: httpx.Auth) -> FhirClient:
    return FhirClient(FhirConfig(base_url=BASE_URL), auth=auth, transport=httpx.MockTransport(server.handle))


@pytest.mark.parametrize("algorithm", ["RS384", "ES384"])
def test_the_client_assertion_is_signed_and_names_the_client_and_the_token_url(tmp_path, rsa_key, algorithm):
    key = rsa_key if algorithm == "RS384" else ec.generate_private_key(ec.SECP384R1())
    server = FakeAuthorizationServer(key.public_key(), algorithm)
    clock = Clock()
    auth = SmartBackendAuth(smart_config(write_key(tmp_path, key), algorithm), clock=clock)

    assert client_for(server, auth).read("Observation", "o1") == OBSERVATION

    (claims,) = server.claims
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == TOKEN_URL
    assert clock.now_s < claims["exp"] <= clock.now_s + 300
    assert server.headers[0] == {"alg": algorithm, "kid": "key-1", "typ": "JWT"}
    assert server.forms[0]["grant_type"] == "client_credentials"
    assert server.forms[0]["client_assertion_type"] == CLIENT_ASSERTION_TYPE
    assert server.forms[0]["scope"] == "system/Observation.rs system/Observation.c system/Device.crs"


def test_the_token_is_cached_until_it_expires_less_the_skew(tmp_path, rsa_key):
    server = FakeAuthorizationServer(rsa_key.public_key(), "RS384", expires_in_s=300)
    clock = Clock()
    client = client_for(server, SmartBackendAuth(smart_config(write_key(tmp_path, rsa_key)), clock=clock))

    client.read("Observation", "o1")
    clock.now_s += 269  # still inside 300 s - 30 s skew
    client.read("Observation", "o1")
    assert len(server.claims) == 1

    clock.now_s += 2
    client.read("Observation", "o1")
    assert len(server.claims) == 2
    assert server.claims[0]["jti"] != server.claims[1]["jti"]


def test_a_401_on_a_cached_token_fetches_a_new_token_once(tmp_path, rsa_key):
    server = FakeAuthorizationServer(rsa_key.public_key(), "RS384")
    client = client_for(server, SmartBackendAuth(smart_config(write_key(tmp_path, rsa_key)), clock=Clock()))
    client.read("Observation", "o1")
    server.revoked.add("token-1")

    assert client.read("Observation", "o1") == OBSERVATION
    assert len(server.claims) == 2


def test_a_refused_token_request_is_an_auth_error_naming_the_endpoint(tmp_path, rsa_key):
    refuse = httpx.MockTransport(lambda request: httpx.Response(400, json={"error": "invalid_client"}))
    auth = SmartBackendAuth(smart_config(write_key(tmp_path, rsa_key)), clock=Clock())
    client = FhirClient(FhirConfig(base_url=BASE_URL), auth=auth, transport=refuse)

    with pytest.raises(
        FhirAuthError, match=r"token endpoint https://auth.example.org/token: HTTP 400: .*invalid_client"
    ):
        client.read("Observation", "o1")


def test_a_key_that_cannot_sign_the_algorithm_is_refused_up_front(tmp_path, rsa_key):
    with pytest.raises(FhirAuthError, match="cannot sign ES384"):
        SmartBackendAuth(smart_config(write_key(tmp_path, rsa_key), "ES384"))


def test_an_unreadable_key_file_is_an_auth_error(tmp_path):
    with pytest.raises(FhirAuthError, match="cannot load private key"):
        SmartBackendAuth(smart_config(tmp_path / "missing.pem"))


def test_a_static_bearer_token_is_sent_on_every_request():
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json=OBSERVATION, headers={"Content-Type": "application/fhir+json"})

    client = FhirClient(
        FhirConfig(base_url=BASE_URL), auth=BearerTokenAuth("s3cret"), transport=httpx.MockTransport(handle)
    )
    client.read("Observation", "o1")
    client.read("Observation", "o1")

    assert seen == ["Bearer s3cret", "Bearer s3cret"]


class _NdjsonChunks(httpx.SyncByteStream):
    def __iter__(self):
        yield b'{"resourceType":"Observation","id":"o1"}\n'
        yield b'{"resourceType":"Observation","id":"o2"}\n'


def test_a_streamed_answer_is_handed_over_unread_so_a_bulk_data_file_never_sits_in_memory(tmp_path, rsa_key):
    server = FakeAuthorizationServer(rsa_key.public_key(), "RS384")

    def handle(request: httpx.Request) -> httpx.Response:
        answer = server.handle(request)  # the token endpoint, and the token check
        if request.url.path.endswith("/files/1.ndjson") and answer.status_code == 200:
            return httpx.Response(200, stream=_NdjsonChunks())
        return answer

    auth = SmartBackendAuth(smart_config(write_key(tmp_path, rsa_key)), clock=Clock())
    client = FhirClient(FhirConfig(base_url=BASE_URL), auth=auth, transport=httpx.MockTransport(handle))
    with client.stream(f"{BASE_URL}/files/1.ndjson") as response:
        assert response.status_code == 200 and not response.is_stream_consumed
        assert list(response.iter_lines()) == [
            '{"resourceType":"Observation","id":"o1"}',
            '{"resourceType":"Observation","id":"o2"}',
        ]
    assert len(server.claims) == 1  # the token answer itself was read
