"""Authentication as :class:`httpx.Auth` flows: a static bearer token, or SMART Backend Services.

SMART Backend Services (``client_credentials`` with a signed JWT client assertion) fetches an access
token from the token endpoint through the same client and transport as the FHIR calls, caches it until
``expires_in`` minus a skew, and fetches a new one once if the server answers 401 to a cached token
(it may have been revoked or the clocks disagree). The agent's write-back threads share one instance
without a lock: the cache is one reference swapped whole, so a race between two threads costs at most
one extra token request, never a torn token.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from integrations.fhir.config import SmartBackendConfig
from integrations.fhir.errors import FhirAuthError

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class BearerTokenAuth(httpx.Auth):
    """A static bearer token (tests, or a token minted by something else)."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str
    expires_at_s: float


def load_signing_key(config: SmartBackendConfig) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """Read the PEM private key and check it fits ``config.algorithm`` (RSA for RS384, P-384 for ES384)."""
    try:
        key = serialization.load_pem_private_key(config.private_key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise FhirAuthError(config.token_url, f"cannot load private key {config.private_key_path}: {exc}") from exc
    if config.algorithm == "RS384" and isinstance(key, rsa.RSAPrivateKey):
        return key
    if config.algorithm == "ES384" and isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1":
        return key
    raise FhirAuthError(
        config.token_url,
        f"{config.private_key_path} holds a {type(key).__name__}, which cannot sign {config.algorithm}",
    )


class SmartBackendAuth(httpx.Auth):
    """SMART Backend Services client: signs a JWT assertion, trades it for a cached access token."""

    # The token answer is read explicitly in auth_flow; httpx's requires_response_body would read every
    # answer, and so load a streamed Bulk Data download whole into memory.
    requires_response_body = False

    def __init__(self, config: SmartBackendConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._key = load_signing_key(config)
        self._clock = clock
        self._token: AccessToken | None = None

    def client_assertion(self) -> str:
        """A fresh signed JWT: iss = sub = client_id, aud = the token URL, a short exp and a unique jti."""
        now_s = self._clock()
        claims = {
            "iss": self._config.client_id,
            "sub": self._config.client_id,
            "aud": self._config.token_url,
            "exp": int(now_s + self._config.assertion_lifetime_s),
            "jti": uuid.uuid4().hex,
        }
        headers = {"kid": self._config.key_id, "typ": "JWT"}
        return jwt.encode(claims, self._key, algorithm=self._config.algorithm, headers=headers)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._valid_token()
        if token is None:
            token = self._store((yield self._token_request()))
        request.headers["Authorization"] = f"Bearer {token.value}"
        response = yield request
        if response.status_code == httpx.codes.UNAUTHORIZED:
            token = self._store((yield self._token_request()))
            request.headers["Authorization"] = f"Bearer {token.value}"
            yield request

    def _valid_token(self) -> AccessToken | None:
        if self._token is not None and self._clock() < self._token.expires_at_s:
            return self._token
        return None

    def _token_request(self) -> httpx.Request:
        form = {
            "grant_type": "client_credentials",
            "scope": " ".join(self._config.scopes),
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self.client_assertion(),
        }
        return httpx.Request("POST", self._config.token_url, data=form, headers={"Accept": "application/json"})

    def _store(self, response: httpx.Response) -> AccessToken:
        token_url = self._config.token_url
        response.read()
        if response.status_code != httpx.codes.OK:
            raise FhirAuthError(token_url, f"HTTP {response.status_code}: {response.text[:300]}")
        try:
            body = response.json()
            value = body["access_token"]
            expires_in_s = float(body.get("expires_in", 0))
        except (ValueError, KeyError, TypeError) as exc:
            raise FhirAuthError(token_url, f"answer is not a token response: {response.text[:300]}") from exc
        if not isinstance(value, str) or not value:
            raise FhirAuthError(token_url, "answer has no access_token")
        # Without expires_in the token is used for this request only, never cached.
        expires_at_s = self._clock() + expires_in_s - self._config.token_expiry_skew_s
        self._token = AccessToken(value, expires_at_s)
        return self._token
