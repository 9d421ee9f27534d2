"""FHIR R4: the client (retries, auth), ECG Observation mapping, incremental pull and result write-back.

- :mod:`.config`: :class:`FhirConfig`, :class:`RetryPolicy`, :class:`FlowPolicy`, :class:`SmartBackendConfig`
- :mod:`.auth`: :class:`BearerTokenAuth`, :class:`SmartBackendAuth` (httpx auth flows)
- :mod:`.client`: :class:`FhirClient` (flow control in :mod:`.flow`, paging guard in :mod:`.paging`)
- :mod:`.ecg_mapping`: ECG Observation ⇄ :class:`~integrations.ecg.EcgRecord`
- :mod:`.ecg_leads`: which lead a component's code names (MDC, LOINC, SNOMED CT)
- :mod:`.pull`: :func:`pull_ecgs`, the incremental pull
- :mod:`.writeback`: :func:`write_back`, findings as AI-asserted Observations (their shape: :mod:`.ai_finding`)
- :mod:`.supersede`: :func:`retire_superseded`, the findings of a corrected ECG's earlier versions retired
- :mod:`.bulk`: Bulk Data ``$export``: ``kick_off``, ``poll``, ``download``, ``iter_ndjson``, ``cancel``
- :mod:`.errors`: the FHIR subtree of the exception tree
"""

from integrations.fhir.auth import BearerTokenAuth, SmartBackendAuth
from integrations.fhir.bulk import BulkDownload, BulkExportRequest, BulkFile, BulkManifest, DownloadedFile, ExportLevel
from integrations.fhir.client import CreateOutcome, FhirClient
from integrations.fhir.config import FhirConfig, FlowPolicy, RetryPolicy, SmartBackendConfig
from integrations.fhir.ecg_mapping import ecg_to_observation, observation_to_ecg
from integrations.fhir.errors import (
    BulkExportError,
    BulkExportFailedError,
    BulkExportIncompleteError,
    BulkExportRefusedError,
    BulkExportTimeoutError,
    EcgRejectReason,
    FhirAuthError,
    FhirCircuitOpenError,
    FhirError,
    FhirHttpError,
    FhirProtocolError,
    FhirResourceInvalidError,
    FhirUnavailableError,
    InvalidEcgObservation,
    NdjsonLineError,
    PagingLoopError,
)
from integrations.fhir.pull import (
    EcgPull,
    EcgPullConfig,
    ObservationVersion,
    PulledEcg,
    PullItem,
    RejectedObservation,
    pull_ecgs,
)
from integrations.fhir.supersede import retire_superseded
from integrations.fhir.writeback import (
    EcgReference,
    Finding,
    ModelInfo,
    WriteBackConfig,
    WriteBackResult,
    build_writeback_bundle,
    write_back,
)

__all__ = [
    "BearerTokenAuth",
    "BulkDownload",
    "BulkExportError",
    "BulkExportFailedError",
    "BulkExportIncompleteError",
    "BulkExportRefusedError",
    "BulkExportRequest",
    "BulkExportTimeoutError",
    "BulkFile",
    "BulkManifest",
    "CreateOutcome",
    "DownloadedFile",
    "EcgPull",
    "EcgPullConfig",
    "EcgReference",
    "EcgRejectReason",
    "ExportLevel",
    "FhirAuthError",
    "FhirCircuitOpenError",
    "FhirClient",
    "FhirConfig",
    "FhirError",
    "FhirHttpError",
    "FhirProtocolError",
    "FhirResourceInvalidError",
    "FhirUnavailableError",
    "Finding",
    "FlowPolicy",
    "InvalidEcgObservation",
    "ModelInfo",
    "NdjsonLineError",
    "ObservationVersion",
    "PagingLoopError",
    "PullItem",
    "PulledEcg",
    "RejectedObservation",
    "RetryPolicy",
    "SmartBackendAuth",
    "SmartBackendConfig",
    "WriteBackConfig",
    "WriteBackResult",
    "build_writeback_bundle",
    "ecg_to_observation",
    "observation_to_ecg",
    "pull_ecgs",
    "retire_superseded",
    "write_back",
]
