"""Write model results back as R4 Observations, idempotently.

For one scored ECG: a Device for the model version, one Observation per diagnosis and one per
predicted lab abnormality, sent as transaction Bundles. Every entry is a conditional create
(``request.ifNoneExist`` on a deterministic identifier: ECG id / ECG version / model version / target), so a retry
or a second run finds the resources already there and creates nothing. Entries refer to each other
by ``urn:uuid`` fullUrls, which the server rewrites to the stored ids (or to the existing matches).
Servers cap the size of such transactions (Medplum: 8 entries), so a larger write-back goes as several
transactions in dependency order; each is atomic, and the whole is idempotent, so a failure half-way
is repaired by running it again.

The explaining lab Observations are linked from a diagnosis with ``derivedFrom``, not ``hasMember``:
in R4, ``hasMember`` makes the parent a grouping (a panel whose members are its content), while
``derivedFrom`` says "this value was derived from that measurement", which is how the explanation
reads: the diagnosis probability is supported by these predicted labs. It also keeps every input of a
finding, the ECG and the labs, in one list that consumers already follow for provenance.

Each Observation is shaped by :mod:`integrations.fhir.ai_finding` (our own code, never a lab's LOINC;
the probability with unit ``1``; an AI-assessment category; AIAST; notes), status ``preliminary``
(configurable), ``derivedFrom`` the ECG version (its Observation here, or its identifier when it
reached us as HL7 v2) and ``device`` the model Device. Besides its own identifier, every finding
carries the ECG's (:data:`ECG_IDENTIFIER_SYSTEM`), so the findings of a corrected ECG's earlier
versions are found and retired (:mod:`integrations.fhir.supersede`). The codes come from the caller
(the model manifest): this package imports nothing of ours, hence the input dataclasses.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlencode

import orjson

from integrations.fhir.ai_finding import Finding, ModelNames, check_token_safe, finding_observation
from integrations.fhir.client import FhirClient
from integrations.fhir.errors import FhirProtocolError, FhirResourceInvalidError
from integrations.fhir.validation import validate_r4

DEFAULT_FINDING_IDENTIFIER_SYSTEM = "urn:ecg-clinical-knowledge:finding"
DEFAULT_DEVICE_IDENTIFIER_SYSTEM = "urn:ecg-clinical-knowledge:model-sha256"
DEFAULT_MAX_TRANSACTION_ENTRIES = 8
#: Every finding also carries ``{this system}|{ECG key}``: one search finds an ECG's findings of every version.
ECG_IDENTIFIER_SYSTEM = "urn:ecg-clinical-knowledge:finding-ecg"
#: Namespace for the urn:uuid fullUrls, so a rebuilt Bundle is byte-identical.
_URN_NAMESPACE = uuid.UUID("6f1f7c1e-3f0e-4a53-9d1c-2f3f0a1b5c7d")
#: R4 ``id``: what the ECG Observation's id must be, so the identifiers and references built from it are valid.
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
#: Placeholders for the per-ECG values when a resource's shape is validated (see :func:`_validate_shape`).
_PLACEHOLDER_STRING = "x"
_PLACEHOLDER_REFERENCE = "Observation/x"
_PLACEHOLDER_DATETIME = "2000-01-01T00:00:00+00:00"
_PLACEHOLDER_PROBABILITY = 0.5

ObservationStatus = Literal["preliminary", "final"]
Json = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelInfo:
    """The model version that produced the findings; ``sha256`` is its artifact's digest."""

    name: str
    version: str
    sha256: str

    def __post_init__(self) -> None:
        check_token_safe("model version", self.version)
        check_token_safe("sha256", self.sha256)


@dataclass(frozen=True, slots=True, kw_only=True)
class EcgReference:
    """The scored ECG, its subject and when it was taken.

    The ECG is either an Observation on this server (``observation_id``: ``derivedFrom`` points at it)
    or, for an ECG that reached us another way (an HL7 v2 message), known only by an identifier
    (``ecg_identifier``, ``(system, value)``: ``derivedFrom`` carries it as a logical reference,
    ``Reference.identifier``). Exactly one of the two is given.

    ``version`` is the version of the ECG the findings were computed on (the Observation's
    ``meta.versionId``; for a message, the study's version): it goes into every finding identifier
    and into ``derivedFrom`` (``Observation/{id}/_history/{version}``), so the findings of a
    corrected ECG are new resources and the old ones can be retired (:func:`retire_superseded`).
    """

    observation_id: str | None = None
    ecg_identifier: tuple[str, str] | None = None
    version: str | None = None
    subject_reference: str | None
    effective_at: datetime

    def __post_init__(self) -> None:
        # These values vary per ECG and are not validated with the resource's shape: check them here.
        if (self.observation_id is None) == (self.ecg_identifier is None):
            raise ValueError("an ECG reference needs exactly one of observation_id and ecg_identifier")
        if self.observation_id is not None and not _FHIR_ID.fullmatch(self.observation_id):
            raise ValueError(f"ECG Observation id {self.observation_id!r} is not a FHIR id ([A-Za-z0-9-.]{{1,64}})")
        if self.ecg_identifier is not None and not all(part and part == part.strip() for part in self.ecg_identifier):
            raise ValueError(f"ECG identifier {self.ecg_identifier!r} has an empty or whitespace-padded part")
        if self.version is not None and not _FHIR_ID.fullmatch(self.version):
            raise ValueError(f"ECG version {self.version!r} is not a FHIR id ([A-Za-z0-9-.]{{1,64}})")
        if self.subject_reference is not None and (
            not self.subject_reference or self.subject_reference != self.subject_reference.strip()
        ):
            raise ValueError(f"subject reference {self.subject_reference!r} is empty or padded with whitespace")

    @property
    def key(self) -> str:
        """What the deterministic finding identifiers and fullUrls are built from: the Observation id, or a
        digest of the identifier (token-safe whatever characters the identifier holds)."""
        if self.observation_id is not None:
            return self.observation_id
        system, value = self.ecg_identifier  # type: ignore[misc]
        return "ecg-" + hashlib.sha256(f"{system}|{value}".encode()).hexdigest()[:32]

    @property
    def finding_prefix(self) -> str:
        """What every finding identifier of this ECG version starts with."""
        return f"{self.key}/{self.version}/" if self.version is not None else f"{self.key}/"

    def derived_from(self) -> Json:
        """The ``derivedFrom`` entry naming this ECG: a literal reference, or a logical one."""
        if self.observation_id is not None:
            history = f"/_history/{self.version}" if self.version is not None else ""
            return {"reference": f"Observation/{self.observation_id}{history}"}
        system, value = self.ecg_identifier  # type: ignore[misc]
        return {"type": "Observation", "identifier": {"system": system, "value": value}}


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteBackConfig:
    """Identifier systems, and the most entries one transaction may carry.

    Medplum refuses a transaction of conditional creates with more than 8 entries ("requires strict
    isolation"), other servers have their own caps; larger write-backs are split (see :func:`write_back`).
    """

    finding_identifier_system: str = DEFAULT_FINDING_IDENTIFIER_SYSTEM
    device_identifier_system: str = DEFAULT_DEVICE_IDENTIFIER_SYSTEM
    max_transaction_entries: int = DEFAULT_MAX_TRANSACTION_ENTRIES
    #: ``preliminary`` until a clinician confirms, the safe default for AI output; ``final`` where policy says so.
    observation_status: ObservationStatus = "preliminary"

    def __post_init__(self) -> None:
        if self.max_transaction_entries < 1:
            raise ValueError(f"max_transaction_entries must be positive, got {self.max_transaction_entries}")


@dataclass(frozen=True, slots=True)
class WriteBackResult:
    """What the server holds now: ids by target, and how many resources this call created."""

    device_id: str
    observation_ids: dict[str, str]
    created: int
    already_present: int


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    full_url: str
    resource: Json
    if_none_exist: str
    target: str | None = None


@dataclass(slots=True)
class _BundleBuilder:
    ecg: EcgReference
    model: ModelInfo
    config: WriteBackConfig
    entries: list[_Entry] = field(default_factory=list)

    def urn(self, key: str) -> str:
        return f"urn:uuid:{uuid.uuid5(_URN_NAMESPACE, self.finding_identifier(key))}"

    def finding_identifier(self, target: str) -> str:
        return f"{self.ecg.finding_prefix}{self.model.version}/{target}"


def build_writeback_bundle(
    ecg: EcgReference, model: ModelInfo, findings: Sequence[Finding], *, config: WriteBackConfig | None = None
) -> Json:
    """The transaction Bundle for one ECG's findings, every resource validated as R4 (see :func:`_validate_shape`)."""
    builder = _build(ecg, model, findings, config or WriteBackConfig())
    return _transaction(builder.entries)


def write_back(
    client: FhirClient,
    ecg: EcgReference,
    model: ModelInfo,
    findings: Sequence[Finding],
    *,
    config: WriteBackConfig | None = None,
) -> WriteBackResult:
    """Send one ECG's findings as transactions of at most ``max_transaction_entries``; safe to repeat.

    Entries go in dependency order (Device, labs, diagnoses). A later transaction refers to what an
    earlier one stored by its resolved ``Type/id``; within one, by ``urn:uuid``.
    """
    config = config or WriteBackConfig()
    builder = _build(ecg, model, findings, config)
    resolved: dict[str, str] = {}
    stored: list[tuple[str, bool]] = []
    for start in range(0, len(builder.entries), config.max_transaction_entries):
        chunk = [_resolve(entry, resolved) for entry in builder.entries[start : start + config.max_transaction_entries]]
        response = client.transaction(_transaction(chunk))
        answers = _read_response(chunk, response, client.config.base_url)
        resolved |= {
            e.full_url: f"{e.resource['resourceType']}/{id_}" for e, (id_, _) in zip(chunk, answers, strict=True)
        }
        stored += answers
    return _result(builder.entries, stored)


def _build(ecg: EcgReference, model: ModelInfo, findings: Sequence[Finding], config: WriteBackConfig) -> _BundleBuilder:
    _check_explanations(findings)
    builder = _BundleBuilder(ecg, model, config)
    device_urn = builder.urn("device")
    builder.entries.append(_device_entry(builder, device_urn))
    # Labs first, so each diagnosis can point at the urn:uuid of the labs that explain it.
    lab_urns = {f.target: builder.urn(f.target) for f in findings if f.kind == "lab"}
    for finding in sorted(findings, key=lambda f: f.kind != "lab"):
        explained_by = [lab_urns[target] for target in finding.explained_by]
        builder.entries.append(_finding_entry(builder, finding, device_urn, explained_by))
    for entry in builder.entries:
        _validate_shape(entry.resource, entry.name)
    return builder


def _check_explanations(findings: Sequence[Finding]) -> None:
    targets = [f.target for f in findings]
    if len(set(targets)) != len(targets):
        raise ValueError(f"findings repeat a target: {sorted(t for t in set(targets) if targets.count(t) > 1)}")
    labs = {f.target for f in findings if f.kind == "lab"}
    for finding in findings:
        unknown = [target for target in finding.explained_by if target not in labs]
        if unknown:
            raise ValueError(f"finding {finding.target!r} is explained by {unknown}, which are not lab findings here")


def _device_entry(builder: _BundleBuilder, device_urn: str) -> _Entry:
    model, system = builder.model, builder.config.device_identifier_system
    device = {
        "resourceType": "Device",
        "identifier": [{"system": system, "value": model.sha256}],
        "status": "active",
        "deviceName": [{"name": model.name, "type": "model-name"}],
        "type": {"text": "ECG machine-learning model"},
        "version": [{"value": model.version}],
    }
    return _Entry(
        f"Device for model {model.name} {model.version}", device_urn, device, _identifier_query(system, model.sha256)
    )


def _finding_entry(builder: _BundleBuilder, finding: Finding, device_urn: str, explained_by: list[str]) -> _Entry:
    ecg, system = builder.ecg, builder.config.finding_identifier_system
    identifier = builder.finding_identifier(finding.target)
    observation = finding_observation(
        finding,
        identifiers=[{"system": system, "value": identifier}, {"system": ECG_IDENTIFIER_SYSTEM, "value": ecg.key}],
        status=builder.config.observation_status,
        model=ModelNames(builder.model.name, builder.model.version),
        effective=_fhir_datetime(ecg.effective_at),
        device_reference=device_urn,
        derived_from=[ecg.derived_from()] + [{"reference": urn} for urn in explained_by],
        subject_reference=ecg.subject_reference,
    )
    name = f"Observation {identifier!r}"
    return _Entry(name, builder.urn(finding.target), observation, _identifier_query(system, identifier), finding.target)


def _transaction(entries: list[_Entry]) -> Json:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": entry.full_url,
                "resource": entry.resource,
                "request": {
                    "method": "POST",
                    "url": entry.resource["resourceType"],
                    "ifNoneExist": entry.if_none_exist,
                },
            }
            for entry in entries
        ],
    }
    _validate_shape(bundle, "write-back transaction Bundle")
    return bundle


def _resolve(entry: _Entry, resolved: dict[str, str]) -> _Entry:
    """``entry`` with urn:uuid references to resources stored by an earlier transaction replaced by ``Type/id``."""
    if entry.resource["resourceType"] != "Observation":
        return entry
    resource = dict(entry.resource)
    resource["device"] = _resolved_reference(resource["device"], resolved)
    resource["derivedFrom"] = [_resolved_reference(reference, resolved) for reference in resource["derivedFrom"]]
    return replace(entry, resource=resource)


def _resolved_reference(reference: Json, resolved: dict[str, str]) -> Json:
    if "reference" not in reference:  # a logical reference (``identifier``): nothing to resolve
        return reference
    return {"reference": resolved.get(reference["reference"], reference["reference"])}


def _read_response(entries: list[_Entry], response: Json, base_url: str) -> list[tuple[str, bool]]:
    """(stored id, created by this call) for each entry sent."""
    answers = response.get("entry") or []
    if len(answers) != len(entries):
        raise FhirProtocolError(base_url, f"transaction answered {len(answers)} entries for {len(entries)} sent")
    return [
        (_stored_id(base_url, entry, answer), str((answer.get("response") or {}).get("status", "")).startswith("201"))
        for entry, answer in zip(entries, answers, strict=True)
    ]


def _result(entries: list[_Entry], stored: list[tuple[str, bool]]) -> WriteBackResult:
    created = sum(was_created for _, was_created in stored)
    return WriteBackResult(
        device_id=stored[0][0],
        observation_ids={entry.target: id_ for entry, (id_, _) in zip(entries, stored, strict=True) if entry.target},
        created=created,
        already_present=len(entries) - created,
    )


def _stored_id(base_url: str, entry: _Entry, answer: Json) -> str:
    """The logical id from ``response.location`` (``Type/id/_history/v``) or the returned resource."""
    location = str((answer.get("response") or {}).get("location") or "")
    resource_type = entry.resource["resourceType"]
    parts = location.split("/")
    if resource_type in parts and parts.index(resource_type) + 1 < len(parts):
        return parts[parts.index(resource_type) + 1]
    resource_id = (answer.get("resource") or {}).get("id")
    if not resource_id:
        raise FhirProtocolError(base_url, f"transaction response names no id for {entry.name}")
    return str(resource_id)


def _identifier_query(system: str, value: str) -> str:
    return urlencode({"identifier": f"{system}|{value}"})


def _fhir_datetime(moment: datetime) -> str:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.isoformat()


def _validate_shape(resource: Json, resource_name: str) -> None:
    """Validate ``resource`` as R4 once per shape: its content with the per-ECG values set to placeholders.

    Full R4 validation costs about half a millisecond per Observation, more than scoring the ECG, and a
    night's write-back is thousands of resources built from a few dozen shapes (one per target and
    model version). Everything but the per-ECG values (ids, subject, time, probability, references)
    comes from the manifest and this module, so a shape that validated once stays valid; the per-ECG
    values are checked where they enter (:class:`EcgReference`, :class:`Finding`) and have fixed formats
    by construction (FHIR ids, ``isoformat`` of an aware time, a rounded float in [0, 1]).
    """
    try:
        _validate_shape_json(orjson.dumps(_shape_of(resource), option=orjson.OPT_SORT_KEYS))
    except FhirResourceInvalidError:
        validate_r4(resource, resource_name)  # the error, naming the resource and its real values
        raise


@lru_cache(maxsize=4096)
def _validate_shape_json(shape: bytes) -> None:
    validate_r4(orjson.loads(shape), "resource shape")


def _shape_of(resource: Json) -> Json:
    if resource["resourceType"] == "Bundle":
        # The envelope only: its resources were validated when they were built (:func:`_build`).
        requests = sorted({(entry["request"]["method"], entry["request"]["url"]) for entry in resource["entry"]})
        entries = [
            {
                "fullUrl": _PLACEHOLDER_REFERENCE,
                "request": {"method": method, "url": url, "ifNoneExist": _PLACEHOLDER_STRING},
            }
            for method, url in requests
        ]
        return {**resource, "entry": entries}
    if resource["resourceType"] != "Observation":
        return resource  # the Device: one per model version, nothing per ECG
    shape = dict(resource)
    shape["identifier"] = [{**identifier, "value": _PLACEHOLDER_STRING} for identifier in resource["identifier"]]
    shape["effectiveDateTime"] = _PLACEHOLDER_DATETIME
    shape["valueQuantity"] = {**resource["valueQuantity"], "value": _PLACEHOLDER_PROBABILITY}
    shape["device"] = {"reference": _PLACEHOLDER_REFERENCE}
    shape["derivedFrom"] = [_reference_shape(reference) for reference in resource["derivedFrom"]]
    if "subject" in resource:
        shape["subject"] = {"reference": _PLACEHOLDER_REFERENCE}
    if "note" in resource:  # the signal notes vary per ECG; any non-empty markdown is valid
        shape["note"] = [{"text": _PLACEHOLDER_STRING}]
    return shape


def _reference_shape(reference: Json) -> Json:
    """A literal reference as the placeholder; a logical one keeps its type and system, its value a placeholder."""
    if "reference" in reference:
        return {"reference": _PLACEHOLDER_REFERENCE}
    return {**reference, "identifier": {**reference["identifier"], "value": _PLACEHOLDER_STRING}}
