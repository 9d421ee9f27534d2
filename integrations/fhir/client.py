"""The FHIR R4 REST client: httpx underneath, retries, flow control and error translation in one place.

Every request goes through :meth:`FhirClient._send`, which retries connection errors, 429 and 5xx
(see :mod:`integrations.fhir.retry`) and turns every other failure into :mod:`integrations.fhir.errors`.
Each attempt takes a slot from the client's flow control (:mod:`integrations.fhir.flow`): an adaptive
concurrency limit and a circuit breaker shared by all threads using the client.
Resources travel as JSON objects (``dict``); the typed views live in the mapping modules. Bodies are parsed and
written with orjson: a pulled ECG is ~250 kB of JSON (12 SampledData strings of 5,000 numbers), which the
standard library's parser takes several times longer to read. FHIR JSON is UTF-8, the one encoding
orjson reads.
"""

from __future__ import annotations

import codecs
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from integrations.fhir.config import FhirConfig
from integrations.fhir.errors import FhirError, FhirHttpError, FhirProtocolError, FhirUnavailableError
from integrations.fhir.flow import FlowControl, Outcome, Slot
from integrations.fhir.paging import PagingGuard
from integrations.fhir.retry import RETRYABLE_TRANSPORT_ERRORS, backoff_delay_s, is_retryable_status, retry_after_s

logger = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
_OUTCOME_TEXT_MAX_CHARS = 500

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class CreateOutcome:
    """What a (conditional) create returned: the stored resource, and whether this call created it."""

    resource: JsonObject
    created: bool


class FhirClient:
    """A FHIR R4 server at ``config.base_url``; safe to share between threads (they share its flow control).

    ``transport``, ``sleep``, ``clock`` (wall time, for ``Retry-After`` dates), ``monotonic`` (for budgets,
    holds and cool-downs) and ``rng`` are injectable so unit tests run against an :class:`httpx.MockTransport`
    without waiting.
    """

    def __init__(
        self,
        config: FhirConfig,
        *,
        auth: httpx.Auth | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._sleep = sleep
        self._clock = clock
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        self.flow = FlowControl(config.flow, abandoned_hold_s=config.abandoned_hold_s, clock=monotonic)
        self._http = httpx.Client(
            base_url=config.base_url.rstrip("/") + "/",
            auth=auth,
            transport=transport,
            timeout=config.httpx_timeout,
            verify=config.httpx_verify(),
            headers={"Accept": FHIR_JSON},
        )

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def read(self, resource_type: str, resource_id: str) -> JsonObject:
        return self._json(self._send("GET", f"{resource_type}/{resource_id}"), expect=resource_type)

    def search_pages(self, resource_type: str, params: dict[str, str]) -> Iterator[JsonObject]:
        """Searchset Bundles, first page then each ``next`` link, followed as an opaque URL.

        Raises :class:`PagingLoopError` instead of following a link already followed, or on from
        pages that bring no new entry (see :mod:`integrations.fhir.paging`).
        """
        response = self._send("GET", resource_type, params=params)
        guard = PagingGuard(shown_url(response.request.url))
        while True:
            bundle = self._json(response, expect="Bundle")
            yield bundle
            next_url = next_link(bundle)
            if next_url is None:
                return
            guard.check(shown_url(response.request.url), bundle, self._shown_url(next_url))
            response = self._send("GET", next_url)

    def create(self, resource: JsonObject, *, if_none_exist: str | None = None) -> CreateOutcome:
        """POST a resource; with ``if_none_exist`` (a query string) the server returns a match instead (200)."""
        headers = {"Content-Type": FHIR_JSON}
        if if_none_exist is not None:
            headers["If-None-Exist"] = if_none_exist
        resource_type = resource["resourceType"]
        response = self._send("POST", resource_type, content=json_body(resource), headers=headers)
        stored = self._json(response, expect=resource_type)
        return CreateOutcome(stored, created=response.status_code == httpx.codes.CREATED)

    def transaction(self, bundle: JsonObject) -> JsonObject:
        """POST a transaction Bundle to the base; returns the transaction-response Bundle."""
        headers = {"Content-Type": FHIR_JSON}
        response = self._send("POST", "", content=json_body(bundle), headers=headers)
        return self._json(response, expect="Bundle")

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None) -> httpx.Response:
        """A raw request (absolute URL, or relative to the base) with the client's auth and retries.

        For exchanges that are not one FHIR resource (the Bulk Data kick-off, its status URL): returns the
        2xx response as is, or raises like every other call.
        """
        return self._send(method, url, headers=headers)

    @contextmanager
    def stream(
        self, url: str, *, headers: dict[str, str] | None = None, authenticated: bool = True
    ) -> Iterator[httpx.Response]:
        """GET ``url`` with the body left unread, to be streamed (a Bulk Data file); closed on exit.

        Retries and errors as every call, until the answer's head arrives: a failure while the body streams
        is the caller's (httpx errors). ``authenticated=False`` sends no credentials at all, for file servers
        that must not see the FHIR server's token. The flow-control slot is held for the head only.
        """
        auth: Any = httpx.USE_CLIENT_DEFAULT if authenticated else None
        response = self._send("GET", url, headers=headers, stream=True, auth=auth)
        try:
            yield response
        finally:
            response.close()

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send with retries; return a 2xx response or raise a :class:`FhirError`.

        :class:`~integrations.fhir.errors.FhirCircuitOpenError` (the breaker is open) is raised at once,
        never retried: the server has already been given its chances.
        """
        policy = self.config.retry
        spent_s = 0.0  # attempts and back-off: the budget covers the request's whole life
        attempt = 1
        while True:
            started_s = self._monotonic()
            response, failure, wait_hint_s = self._attempt(method, url, **kwargs)
            spent_s += self._monotonic() - started_s
            if response is not None:
                return response
            delay_s = wait_hint_s if wait_hint_s is not None else backoff_delay_s(policy, attempt, self._rng)
            if attempt >= policy.max_attempts or spent_s + delay_s > policy.budget_s:
                raise FhirUnavailableError(method, self._shown_url(url), attempt, failure)
            logger.warning("%s %s failed (%s); retry %d in %.2f s", method, url, failure, attempt, delay_s)
            self._sleep(delay_s)
            spent_s += delay_s
            attempt += 1

    def _attempt(
        self,
        method: str,
        url: str,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        **kwargs: Any,
    ) -> tuple[httpx.Response | None, str, float | None]:
        """One try: (response, "", None) on success, (None, failure, Retry-After seconds) if worth a retry."""
        with self.flow.slot(method, self._shown_url(url)) as slot:
            try:
                request = self._http.build_request(method, url, **kwargs)
                response = self._http.send(request, stream=stream, auth=auth)
                if stream and not response.is_success:
                    response.read()  # an error's body is small and its text goes into the error
                    response.close()
            except RETRYABLE_TRANSPORT_ERRORS as exc:
                slot.outcome = _transport_outcome(exc)
                return None, f"{type(exc).__name__}: {exc}", None
            except httpx.HTTPError as exc:
                raise FhirError(f"{method} {self._shown_url(url)}: {type(exc).__name__}: {exc}") from exc
            return self._judge(method, response, slot)

    def _judge(
        self, method: str, response: httpx.Response, slot: Slot
    ) -> tuple[httpx.Response | None, str, float | None]:
        """Sort an answer into success, worth a retry, or a :class:`FhirHttpError`, and tell the slot."""
        if not is_retryable_status(response.status_code):
            slot.outcome = Outcome.ANSWERED
            if response.is_success:
                return response, "", None
            raise FhirHttpError(method, shown_url(response.request.url), response.status_code, outcome_text(response))
        overloaded = response.status_code in (httpx.codes.TOO_MANY_REQUESTS, httpx.codes.SERVICE_UNAVAILABLE)
        slot.outcome = Outcome.OVERLOADED if overloaded else Outcome.FAILED
        wait_hint_s = retry_after_s(response.headers.get("Retry-After"), self._clock())
        return None, f"HTTP {response.status_code}", wait_hint_s

    def _shown_url(self, url: str) -> str:
        """``url`` resolved against the base, as errors show it (without a password)."""
        return shown_url(self._http.base_url.join(url))

    @staticmethod
    def _json(response: httpx.Response, *, expect: str) -> JsonObject:
        """The response body as a resource of type ``expect``, or :class:`FhirProtocolError`."""
        url = shown_url(response.request.url)
        content_type = response.headers.get("Content-Type", "")
        if "json" not in content_type:
            raise FhirProtocolError(url, f"expected FHIR JSON, got {content_type or 'no content type'}")
        try:
            body = orjson.loads(response.content.removeprefix(codecs.BOM_UTF8))  # a BOM is allowed, and read by httpx
        except orjson.JSONDecodeError as exc:
            raise FhirProtocolError(url, f"body is not JSON: {exc}") from exc
        if not isinstance(body, dict) or body.get("resourceType") != expect:
            found = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
            raise FhirProtocolError(url, f"expected a {expect}, got {found}")
        return body


def json_body(resource: JsonObject) -> bytes:
    """``resource`` as UTF-8 JSON; numpy scalars (a probability straight from the model) written as numbers."""
    return orjson.dumps(resource, option=orjson.OPT_SERIALIZE_NUMPY)


def shown_url(url: httpx.URL) -> str:
    """``url`` as error messages show it: the user name kept (it says which account), a password never."""
    if not url.password:
        return str(url)
    return str(url.copy_with(userinfo=url.userinfo.split(b":", 1)[0]))


def _transport_outcome(error: httpx.TransportError) -> Outcome:
    """A read or write timeout leaves the request with the server; a connect timeout is a server too busy to accept."""
    if isinstance(error, httpx.ReadTimeout | httpx.WriteTimeout):
        return Outcome.ABANDONED
    if isinstance(error, httpx.TimeoutException):
        return Outcome.OVERLOADED
    return Outcome.FAILED


def next_link(bundle: JsonObject) -> str | None:
    for link in bundle.get("link") or ():
        if link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


def outcome_text(response: httpx.Response) -> str:
    """The OperationOutcome's diagnostics/details, or the start of whatever body came back."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:_OUTCOME_TEXT_MAX_CHARS] or response.reason_phrase
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        texts = [_issue_text(issue) for issue in body.get("issue") or () if isinstance(issue, dict)]
        return "; ".join(text for text in texts if text)[:_OUTCOME_TEXT_MAX_CHARS]
    return response.text[:_OUTCOME_TEXT_MAX_CHARS]


def _issue_text(issue: dict[str, Any]) -> str:
    """``Observation.code: Missing required property``: where (if given) and what."""
    text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code") or ""
    where = ", ".join(issue.get("expression") or ())
    return f"{where}: {text}" if where else str(text)
