"""A corrected ECG supersedes its findings: the earlier versions' findings are retired, the FHIR way.

The findings of each ECG version are their own resources (the ECG version is in the identifier and in
``derivedFrom``), so after a correction the new version's findings are created by the usual
conditional creates, and every finding of an earlier version still active is updated in place to
status ``entered-in-error`` with a note naming the correction. Why not ``cancelled``: R4 reserves it
for an observation that was never completed, while ``entered-in-error`` is what EHRs drop from the
chart and flag to whoever saw the value ("withdrawn following previous release"), which is what a
result computed on a signal the sender has since corrected is. Why not a new version of the same
resource: a finding positive on the old ECG may be negative on the new one (then there is nothing to
replace it with), and a per-version identifier keeps the write-back a set of conditional creates,
idempotent without reading anything first.

The earlier findings are found on the server, by :data:`~integrations.fhir.writeback.ECG_IDENTIFIER_SYSTEM`
(every finding carries the ECG's key), and, for findings written before that identifier existed,
by ``derived-from`` the ECG Observation; only resources carrying our finding identifier are touched.
A retry finds nothing active left and changes nothing. Each update is conditional on the version
read (``If-Match``), so a concurrent change fails the transaction instead of being overwritten.
"""

from __future__ import annotations

from collections.abc import Iterator

from integrations.fhir.client import FhirClient
from integrations.fhir.validation import validate_r4
from integrations.fhir.writeback import ECG_IDENTIFIER_SYSTEM, EcgReference, Json, WriteBackConfig

RETIRED_STATUS = "entered-in-error"
#: Statuses an EHR shows as a current result.
ACTIVE_STATUSES = frozenset({"registered", "preliminary", "final", "amended", "corrected"})
_PAGE_SIZE = "200"


def retire_superseded(client: FhirClient, ecg: EcgReference, *, config: WriteBackConfig | None = None) -> list[str]:
    """Retire every active finding of ``ecg`` that was not computed on its ``version``; the ids retired.

    Safe to repeat: a retired finding is no longer active, so a second call sends nothing.
    """
    if ecg.version is None:
        raise ValueError("retiring superseded findings needs the ECG's current version")
    config = config or WriteBackConfig()
    stale = [resource for resource in _our_findings(client, ecg, config) if _superseded(resource, ecg, config)]
    for start in range(0, len(stale), config.max_transaction_entries):
        chunk = stale[start : start + config.max_transaction_entries]
        client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": [_retire(r, ecg) for r in chunk]})
    return [str(resource["id"]) for resource in stale]


def _our_findings(client: FhirClient, ecg: EcgReference, config: WriteBackConfig) -> list[Json]:
    searches = [{"identifier": f"{ECG_IDENTIFIER_SYSTEM}|{ecg.key}"}]
    if ecg.observation_id is not None:  # findings written before they carried the ECG identifier
        searches.append({"derived-from": f"Observation/{ecg.observation_id}"})
    by_id: dict[str, Json] = {}
    for params in searches:
        for resource in _search(client, params | {"_count": _PAGE_SIZE}):
            if _finding_identifier(resource, config) is not None:
                by_id[str(resource["id"])] = resource
    return [by_id[key] for key in sorted(by_id)]


def _search(client: FhirClient, params: dict[str, str]) -> Iterator[Json]:
    for bundle in client.search_pages("Observation", params):
        for entry in bundle.get("entry") or []:
            if (entry.get("search") or {}).get("mode", "match") == "match":
                yield entry["resource"]


def _finding_identifier(resource: Json, config: WriteBackConfig) -> str | None:
    for identifier in resource.get("identifier") or []:
        if identifier.get("system") == config.finding_identifier_system:
            return str(identifier.get("value", ""))
    return None


def _superseded(resource: Json, ecg: EcgReference, config: WriteBackConfig) -> bool:
    identifier = _finding_identifier(resource, config) or ""
    return resource.get("status") in ACTIVE_STATUSES and not identifier.startswith(ecg.finding_prefix)


def _retire(resource: Json, ecg: EcgReference) -> Json:
    retired = {key: value for key, value in resource.items() if key != "meta"}
    retired["meta"] = {"security": (resource.get("meta") or {}).get("security", [])}
    retired["status"] = RETIRED_STATUS
    retired["note"] = [*resource.get("note", []), {"text": _retraction_note(ecg)}]
    validate_r4(retired, f"retired Observation/{resource['id']}")
    request: Json = {"method": "PUT", "url": f"Observation/{resource['id']}"}
    version_id = (resource.get("meta") or {}).get("versionId")
    if version_id:
        request["ifMatch"] = f'W/"{version_id}"'
    return {"resource": retired, "request": request}


def _retraction_note(ecg: EcgReference) -> str:
    ecg_name = f"Observation/{ecg.observation_id}" if ecg.observation_id else "the ECG"
    return (
        f"Retracted: {ecg_name} was corrected (version {ecg.version}); this finding was computed on an earlier "
        "version and is replaced by the findings on the corrected ECG."
    )
