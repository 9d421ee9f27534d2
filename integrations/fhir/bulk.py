"""FHIR Bulk Data Access (``$export``, HL7 Bulk Data Access IG v2): kick-off, polling, NDJSON download.

The asynchronous request pattern, one function per step, all through a :class:`FhirClient` (its auth, bearer
or SMART Backend Services, its retries and flow control)::

    status_url = kick_off(client, BulkExportRequest(types=("Observation",), type_filters=(...,)))
    manifest = poll(client, status_url, max_wait_s=3600)    # 202 + Retry-After ... then 200 + manifest
    download(client, manifest, dest_dir)                     # NDJSON files on disk, streamed, resumable
    for resource in iter_ndjson(path): ...                   # one resource per line
    cancel(client, status_url)                               # DELETE: the server may drop the files

:func:`download` writes each file to ``<name>.part`` and renames it when complete, so a killed download
leaves only complete files under their names, and a rerun with the same manifest (saved beside them, see
:func:`saved_manifest`) skips them. The files are never held in memory.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from integrations.fhir.client import FHIR_JSON, FhirClient
from integrations.fhir.errors import (
    BulkExportError,
    BulkExportFailedError,
    BulkExportIncompleteError,
    BulkExportRefusedError,
    BulkExportTimeoutError,
    FhirHttpError,
    FhirProtocolError,
    FhirUnavailableError,
    NdjsonLineError,
)
from integrations.fhir.pull import fhir_instant
from integrations.fhir.retry import retry_after_s

logger = logging.getLogger(__name__)

NDJSON = "application/fhir+ndjson"
#: Polling faster than this helps nobody, whatever Retry-After says (0, or a date in the past).
DEFAULT_MIN_INTERVAL_S = 1.0
#: Polling slower than this lets a finished job's files expire unseen, whatever Retry-After says.
DEFAULT_MAX_INTERVAL_S = 300.0
#: A night's export of a large archive can take hours at the server.
DEFAULT_MAX_WAIT_S = 6 * 3600.0
SAVED_MANIFEST = "export.json"
_BLOCKING_SEVERITIES = frozenset({"fatal", "error"})


class ExportLevel(StrEnum):
    """Whose data: the whole system, every patient's compartment, or a Group's members' compartments."""

    SYSTEM = "system"
    PATIENT = "patient"
    GROUP = "group"


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkExportRequest:
    """What to export. ``type_filters`` are FHIR queries, ``Observation?code=http://loinc.org|11524-6``.

    Several filters for one type are joined by OR at the server; ``lenient`` asks it to report unsupported
    types in the manifest's errors instead of refusing the kick-off (``Prefer: handling=lenient``).
    """

    level: ExportLevel = ExportLevel.SYSTEM
    group_id: str | None = None
    types: tuple[str, ...] = ()
    type_filters: tuple[str, ...] = ()
    since: datetime | None = None
    output_format: str = NDJSON
    lenient: bool = False

    def __post_init__(self) -> None:
        if (self.level is ExportLevel.GROUP) != bool(self.group_id):
            raise ValueError("group_id is required for a Group-level export, and only for it")
        for query in self.type_filters:
            filter_type = query.split("?", 1)[0]
            if "?" not in query or not filter_type:
                raise ValueError(f"a type filter is a FHIR query such as Observation?code=...; got {query!r}")
            if self.types and filter_type not in self.types:
                raise ValueError(f"type filter {query!r} is for a type not in types {self.types}")

    def url(self) -> str:
        """The kick-off URL relative to the FHIR base, parameters encoded."""
        paths = {ExportLevel.SYSTEM: "$export", ExportLevel.PATIENT: "Patient/$export"}
        path = paths.get(self.level) or f"Group/{quote(self.group_id or '', safe='')}/$export"
        query: list[tuple[str, str]] = [("_outputFormat", self.output_format)]
        if self.types:
            query.append(("_type", ",".join(self.types)))
        query.extend(("_typeFilter", type_filter) for type_filter in self.type_filters)
        if self.since is not None:
            query.append(("_since", fhir_instant(self.since)))
        return f"{path}?{urlencode(query)}"


@dataclass(frozen=True, slots=True)
class BulkFile:
    """One file of the manifest: its resource type, where to get it, and how many resources (if said)."""

    type: str
    url: str
    count: int | None


@dataclass(frozen=True, slots=True)
class BulkManifest:
    """The completed job's manifest; ``raw`` is the server's JSON, kept to save beside the files."""

    status_url: str
    transaction_time: datetime
    request: str
    requires_access_token: bool
    output: tuple[BulkFile, ...]
    error: tuple[BulkFile, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: object, *, status_url: str) -> BulkManifest:
        """Read a manifest, or raise :class:`FhirProtocolError` saying what is missing."""
        try:
            if not isinstance(body, dict):
                raise TypeError("not a JSON object")
            transaction_time = datetime.fromisoformat(body["transactionTime"])
            requires_access_token = _boolean(body["requiresAccessToken"])
            output = tuple(_bulk_file(item) for item in body["output"])
            error = tuple(_bulk_file(item) for item in body.get("error") or ())
            request = str(body["request"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FhirProtocolError(status_url, f"not a Bulk Data manifest: {type(exc).__name__}: {exc}") from exc
        return cls(status_url, transaction_time, request, requires_access_token, output, error, body)


def _boolean(value: object) -> bool:
    """A JSON boolean, or the strings "true"/"false" that one vendor's documented manifests carry instead."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise TypeError(f"requiresAccessToken {value!r} is not a boolean")


def _bulk_file(item: Any) -> BulkFile:
    count = item.get("count")
    if count is not None and not isinstance(count, int):
        raise TypeError(f"count {count!r} is not an integer")
    return BulkFile(type=str(item["type"]), url=str(item["url"]), count=count)


@dataclass(frozen=True, slots=True)
class DownloadedFile:
    """A complete file on disk; ``skipped`` when an earlier run had already downloaded it."""

    type: str
    path: Path
    skipped: bool


@dataclass(frozen=True, slots=True)
class BulkDownload:
    """The output files on disk, in manifest order, and the server's non-blocking messages (warnings)."""

    manifest: BulkManifest
    files: tuple[DownloadedFile, ...]
    notes: tuple[str, ...]


def kick_off(client: FhirClient, request: BulkExportRequest) -> str:
    """Start the export; return the absolute status URL (``Content-Location`` of the 202)."""
    prefer = "respond-async, handling=lenient" if request.lenient else "respond-async"
    try:
        response = client.request("GET", request.url(), headers={"Accept": FHIR_JSON, "Prefer": prefer})
    except FhirHttpError as exc:
        raise BulkExportRefusedError(exc.url, exc.status, exc.outcome_text) from exc
    url = str(response.url)
    if response.status_code != httpx.codes.ACCEPTED:
        raise FhirProtocolError(url, f"expected 202 Accepted with a status URL, got HTTP {response.status_code}")
    location = response.headers.get("Content-Location")
    if not location:
        raise FhirProtocolError(url, "202 Accepted without a Content-Location status URL")
    return str(response.url.join(location))


def poll(
    client: FhirClient,
    status_url: str,
    *,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
    min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
    max_interval_s: float = DEFAULT_MAX_INTERVAL_S,
    on_progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> BulkManifest:
    """Poll ``status_url`` until the manifest comes; wait as each 202's ``Retry-After`` says.

    ``Retry-After`` (seconds or an HTTP date, read against ``clock``, wall time) is kept within
    [``min_interval_s``, ``max_interval_s``]; without one, the wait doubles from ``min_interval_s``.
    ``on_progress`` receives each ``X-Progress`` text. Raises :class:`BulkExportTimeoutError` rather than wait
    beyond ``max_wait_s`` (the job is left running: poll again, or :func:`cancel` it), and
    :class:`BulkExportFailedError` if the server reports the job failed.
    """
    started_s = clock()
    fallback_s = min_interval_s
    while True:
        response = _status(client, status_url)
        if response.status_code == httpx.codes.OK:
            return _manifest(response, status_url)
        if response.status_code != httpx.codes.ACCEPTED:
            raise FhirProtocolError(status_url, f"expected 202 or 200 from the status URL, got {response.status_code}")
        progress = response.headers.get("X-Progress")
        if progress and on_progress is not None:
            on_progress(progress)
        hint_s = retry_after_s(response.headers.get("Retry-After"), clock())
        delay_s = min(max(hint_s if hint_s is not None else fallback_s, min_interval_s), max_interval_s)
        waited_s = clock() - started_s
        if waited_s + delay_s > max_wait_s:
            raise BulkExportTimeoutError(status_url, waited_s, progress)
        logger.debug("bulk export %s in progress (%s); next poll in %.1f s", status_url, progress, delay_s)
        sleep(delay_s)
        fallback_s = min(fallback_s * 2, max_interval_s)


def _status(client: FhirClient, status_url: str) -> httpx.Response:
    try:
        return client.request("GET", status_url, headers={"Accept": "application/json"})
    except FhirHttpError as exc:
        raise BulkExportFailedError(status_url, f"HTTP {exc.status}: {exc.outcome_text}") from exc


def _manifest(response: httpx.Response, status_url: str) -> BulkManifest:
    try:
        body = response.json()
    except ValueError as exc:
        raise FhirProtocolError(status_url, f"manifest is not JSON: {exc}") from exc
    return BulkManifest.from_json(body, status_url=status_url)


def cancel(client: FhirClient, status_url: str) -> None:
    """DELETE the job: a running one stops, a completed one's files may be removed by the server."""
    client.request("DELETE", status_url)


def download(client: FhirClient, manifest: BulkManifest, dest_dir: Path, *, resume: bool = True) -> BulkDownload:
    """Stream every output and error file of ``manifest`` into ``dest_dir``; read the error files.

    With ``resume`` a file already complete in ``dest_dir`` (from an earlier, interrupted run of the same
    export) is not fetched again; ``dest_dir`` holding another export's files is a :class:`BulkExportError`.
    Raises :class:`BulkExportIncompleteError` after downloading when the error files report errors.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    _claim(dest_dir, manifest, resume=resume)
    files = tuple(
        _download_file(client, manifest, item, dest_dir / f"output-{i:04d}-{item.type}.ndjson", resume=resume)
        for i, item in enumerate(manifest.output)
    )
    blocking: list[str] = []
    notes: list[str] = []
    for i, item in enumerate(manifest.error):
        error_file = _download_file(
            client, manifest, item, dest_dir / f"error-{i:04d}-{item.type}.ndjson", resume=resume
        )
        for severity, text in _issues(error_file.path):
            (blocking if severity in _BLOCKING_SEVERITIES else notes).append(f"{severity}: {text}")
    for note in notes:
        logger.warning("bulk export %s: %s", manifest.status_url, note)
    if blocking:
        raise BulkExportIncompleteError(tuple(blocking), tuple(file.path for file in files))
    return BulkDownload(manifest, files, tuple(notes))


def saved_manifest(dest_dir: Path) -> BulkManifest | None:
    """The manifest an earlier :func:`download` into ``dest_dir`` saved, to resume it; None if there is none."""
    path = dest_dir / SAVED_MANIFEST
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
        return BulkManifest.from_json(saved["manifest"], status_url=saved["status_url"])
    except (OSError, ValueError, KeyError, TypeError, FhirProtocolError) as exc:
        raise BulkExportError(f"{path}: not a manifest saved by a download: {exc}") from exc


def _claim(dest_dir: Path, manifest: BulkManifest, *, resume: bool) -> None:
    """Save the manifest in ``dest_dir``, unless it holds another export's that a resume would mix in."""
    previous = saved_manifest(dest_dir)
    if resume and previous is not None and _export_identity(previous) != _export_identity(manifest):
        raise BulkExportError(
            f"{dest_dir} holds the files of another export ({previous.status_url}, "
            f"transactionTime {previous.transaction_time.isoformat()}); download into an empty directory"
        )
    saved = {"status_url": manifest.status_url, "manifest": manifest.raw}
    part = dest_dir / f"{SAVED_MANIFEST}.part"
    part.write_text(json.dumps(saved, indent=2))
    os.replace(part, dest_dir / SAVED_MANIFEST)


def _export_identity(manifest: BulkManifest) -> tuple[object, ...]:
    """What makes two manifests the same export's, file by file; file URLs may be re-signed at every poll."""
    types = tuple(item.type for item in manifest.output) + tuple(item.type for item in manifest.error)
    return (manifest.status_url, manifest.transaction_time, manifest.request, types)


def _download_file(
    client: FhirClient, manifest: BulkManifest, item: BulkFile, path: Path, *, resume: bool
) -> DownloadedFile:
    if resume and path.exists():
        logger.info("bulk export file %s already complete; skipped", path)
        return DownloadedFile(item.type, path, skipped=True)
    part = path.with_name(f"{path.name}.part")
    headers = {"Accept": NDJSON}
    with client.stream(item.url, headers=headers, authenticated=manifest.requires_access_token) as response:
        received = 0
        try:
            with part.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    received += len(chunk)
                out.flush()
                os.fsync(out.fileno())
        except httpx.HTTPError as exc:
            failure = f"{type(exc).__name__}: {exc} after {received} bytes"
            raise FhirUnavailableError("GET", item.url, 1, failure) from exc
    os.replace(part, path)
    return DownloadedFile(item.type, path, skipped=False)


def _issues(path: Path) -> Iterator[tuple[str, str]]:
    """(severity, text) of every issue of every OperationOutcome in an error file."""
    for outcome in iter_ndjson(path):
        for issue in outcome.get("issue") or ():
            text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code")
            yield str(issue.get("severity") or "error"), str(text)


def iter_ndjson(path: Path) -> Iterator[dict[str, Any]]:
    """Each line of an NDJSON file as a resource; blank lines skipped, anything else a :class:`NdjsonLineError`."""
    with Path(path).open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                raise NdjsonLineError(str(path), number, f"not JSON: {exc}") from exc
            if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
                raise NdjsonLineError(str(path), number, "not a FHIR resource (a JSON object with a resourceType)")
            yield value
