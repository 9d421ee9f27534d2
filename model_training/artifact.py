"""Read and verify a model artifact: ``model.ts`` (TorchScript) + ``manifest.json``.

The agent imports this module and nothing else of :mod:`model_training`, so it uses
torch and the standard library only (a test enforces it). The manifest types are
defined here and :mod:`model_training.export` builds them, so the writer and the
reader share one schema.

An artifact directory holds::

    model.ts        TorchScript archive; carries the manifest as the extra file
                    ``manifest.json``, *without* ``model_sha256`` (an archive cannot
                    contain its own hash)
    manifest.json   the same manifest plus ``model_sha256`` of the model.ts bytes

:func:`load_artifact` reads model.ts once, checks its sha256 against manifest.json,
loads the archive from those same bytes, checks that the embedded manifest equals
manifest.json, and runs one probe window to check the output sizes against the
label lists. Errors::

    ArtifactError
    ├── ArtifactNotFoundError      model.ts or manifest.json missing (also a FileNotFoundError)
    ├── ManifestError              manifest.json unreadable, malformed or incomplete
    │   └── UnsupportedVersionError   schema or contract version this reader does not know
    ├── IntegrityError             model.ts bytes do not match the manifest's sha256 (tampered, truncated)
    ├── ManifestMismatchError      embedded manifest or the module's outputs disagree with manifest.json
    └── InputContractError         an ECG that does not meet the input contract (also a ValueError)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # numpy arrays are accepted, but this module must not need numpy to import
    import numpy as np

SCHEMA_VERSION = 2  # the manifest's layout; 2 added the release table, code parents and calibration
#: Layouts this reader accepts. A schema-1 manifest (exported before the release table) still loads, so such a
#: model can be verified, shadowed or rolled back to; it carries no release decision, so none of its labels is
#: charted (:attr:`DiagnosisLabel.charted` is False): an unvetted finding is not written into a patient's chart.
SUPPORTED_SCHEMA_VERSIONS: tuple[int, ...] = (1, 2)
CONTRACT_VERSION = 1  # the module's input/output contract: [B, 12, T] mV → (dx_prob, lab_prob, embedding)
MODEL_FILE = "model.ts"
MANIFEST_FILE = "manifest.json"
EMBEDDED_MANIFEST = "manifest.json"  # the name of the extra file inside the TorchScript archive
ICD10CM_SYSTEM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC_SYSTEM = "http://loinc.org"


# ---------------------------------------------------------------- errors


class ArtifactError(Exception):
    """Base of every error raised while loading or using an artifact; names the path and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ArtifactNotFoundError(ArtifactError, FileNotFoundError):
    """``model.ts`` or ``manifest.json`` is missing."""


class ManifestError(ArtifactError):
    """``manifest.json`` cannot be parsed into a :class:`Manifest`."""


class UnsupportedVersionError(ManifestError):
    """The manifest's schema or contract version is not the one this reader understands."""


class IntegrityError(ArtifactError):
    """The bytes of ``model.ts`` do not hash to the manifest's ``model_sha256``."""


class ManifestMismatchError(ArtifactError):
    """The archive's embedded manifest, or its output sizes, disagree with ``manifest.json``."""


class InputContractError(ArtifactError, ValueError):
    """An ECG handed to :meth:`Artifact.score` that does not meet the input contract."""


# ---------------------------------------------------------------- manifest


@dataclass(frozen=True, slots=True)
class ReleaseEntry:
    """How one label did on the validation fold at its operating threshold, and whether it is charted.

    Metrics a fold cannot define (no positive, nothing called positive) are None. ``ppv`` holds at
    ``prevalence``, the validation fold's share of positives among studies with a known label; at a
    site with prevalence q it becomes sens·q / (sens·q + (1 − spec)·(1 − q)).
    """

    auroc: float | None
    auroc_ci_low: float | None
    auroc_ci_high: float | None
    sensitivity: float | None
    specificity: float | None
    ppv: float | None
    prevalence: float | None
    n_positive: int
    n_known: int
    charted: bool  # True: written back to the chart; False: stored only
    reason: str  # which part of the rule decided, with the numbers


@dataclass(frozen=True, slots=True)
class ReleaseRule:
    """The rule that produced every :class:`ReleaseEntry` of a manifest (the training config's ``release:``)."""

    min_auroc_ci_low: float  # chart only when the lower bound of the AUROC's CI reaches this
    min_ppv: float  # ... and the PPV at the operating threshold reaches this
    min_positives: int  # ... and the fold holds at least this many positives (else the CI is not trustworthy)
    ci_level: float
    n_bootstrap: int
    seed: int
    fold: str = "validation"
    prevalence: str = "validation fold"


@dataclass(frozen=True, slots=True)
class DiagnosisLabel:
    """One output of ``dx_prob``: a code, its system, and the operating threshold chosen on validation.

    ``display`` and ``parents`` come from the ICD-10-CM code table; ``parents`` are the codes above
    this one, nearest first, written like ``code`` (no dot). ``release`` is None in a schema-1 manifest.
    """

    code: str
    display: str
    threshold: float
    system: str = ICD10CM_SYSTEM
    parents: tuple[str, ...] = ()
    release: ReleaseEntry | None = None

    @property
    def charted(self) -> bool:
        """Whether a positive call is written back to the chart (False without a release decision)."""
        return self.release is not None and self.release.charted


@dataclass(frozen=True, slots=True)
class LabTargetLabel:
    """One output of ``lab_prob``: ``<lab>_<direction>``, i.e. the lab value beyond its reference bound."""

    name: str
    lab: str
    loinc: str
    display: str
    direction: str  # "low" | "high"
    reference_bound: float  # the lab value the label was built against, in ``unit``
    unit: str
    threshold: float  # operating threshold on the probability, chosen on validation
    loinc_system: str = LOINC_SYSTEM
    release: ReleaseEntry | None = None  # None in a schema-1 manifest

    @property
    def charted(self) -> bool:
        """Whether a positive call is written back to the chart (False without a release decision)."""
        return self.release is not None and self.release.charted


@dataclass(frozen=True, slots=True)
class LabAssociation:
    """A lab abnormality the model predicts together with a diagnosis (validation fold)."""

    lab_target: str
    lift: float  # P(lab predicted | diagnosis) / P(lab predicted)
    support: int  # validation studies with both the diagnosis and the lab predicted


@dataclass(frozen=True, slots=True)
class InputContract:
    """What the module expects: float32 ``[batch, leads, samples]`` in ``units`` at ``fs_hz``, leads in order."""

    leads: tuple[str, ...]
    fs_hz: float
    window_s: float
    window_samples: int
    clip_mv: float
    min_duration_s: float  # one window; written out for readers that do not derive it
    units: str = "mV"
    dtype: str = "float32"
    layout: str = "batch, leads, samples"

    @property
    def min_samples(self) -> int:
        """The shortest input: one window."""
        return self.window_samples


@dataclass(frozen=True, slots=True)
class Manifest:
    """Everything the agent needs besides the weights; see the module docstring for the file layout."""

    model_name: str
    model_version: str
    created_at: str  # ISO 8601, UTC
    diagnoses: tuple[DiagnosisLabel, ...]
    lab_targets: tuple[LabTargetLabel, ...]
    threshold_rule: str
    explanations: dict[str, tuple[LabAssociation, ...]]  # diagnosis code → lab targets by lift, best first
    input: InputContract
    embedding_dim: int
    metrics: dict[str, float]
    data_fingerprint: str
    torch_version: str
    simulator_version: str | None = None  # the simulated hospital's version when trained on it; None on real data
    extra_files: dict[str, str] = field(default_factory=dict)  # other formats beside model.ts → their sha256
    model_sha256: str | None = None  # None only in the copy embedded in model.ts
    calibration: str | None = None  # how dx_prob/lab_prob were calibrated inside the module; None in schema 1
    release_rule: ReleaseRule | None = None  # None in schema 1
    schema_version: int = SCHEMA_VERSION
    contract_version: int = CONTRACT_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    def without_sha256(self) -> Manifest:
        """The copy that goes inside the archive."""
        return dataclasses.replace(self, model_sha256=None)

    @classmethod
    def from_json(cls, text: str, *, source: object = "manifest") -> Manifest:
        """Parse and validate; raises :class:`ManifestError` / :class:`UnsupportedVersionError`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(source, f"not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ManifestError(source, "not a JSON object")
        _check_versions(data, source)
        try:
            return _manifest_from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(source, f"malformed manifest: {exc!r}") from exc


def _check_versions(data: dict, source: object) -> None:
    for key, supported in (("schema_version", SUPPORTED_SCHEMA_VERSIONS), ("contract_version", (CONTRACT_VERSION,))):
        if data.get(key) not in supported:
            raise UnsupportedVersionError(source, f"{key} is {data.get(key)!r}; this reader supports {supported}")


#: Fields schema 2 added: a schema-2 manifest must carry them, a schema-1 manifest must not.
_SCHEMA_2_FIELDS: dict[type, frozenset[str]] = {
    Manifest: frozenset({"calibration", "release_rule"}),
    DiagnosisLabel: frozenset({"parents", "release"}),
    LabTargetLabel: frozenset({"release"}),
}


def _check_fields(cls: type, item: dict, schema_version: int) -> None:
    """Strict per schema: no unknown field, and exactly the fields that schema added (defaults aside)."""
    expected = {f.name for f in dataclasses.fields(cls)}
    added = _SCHEMA_2_FIELDS[cls]
    unknown = set(item) - (expected if schema_version >= 2 else expected - added)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)} in schema {schema_version}")
    missing = added - set(item) if schema_version >= 2 else set()
    if missing:
        raise ValueError(f"{cls.__name__} lacks {sorted(missing)}, required by schema {schema_version}")


def _diagnosis_from_dict(item: dict, schema_version: int) -> DiagnosisLabel:
    _check_fields(DiagnosisLabel, item, schema_version)
    values = dict(item)
    if schema_version >= 2:
        values["parents"] = tuple(str(code) for code in item["parents"])
        values["release"] = _release_from_dict(item["release"])
    return DiagnosisLabel(**values)


def _lab_target_from_dict(item: dict, schema_version: int) -> LabTargetLabel:
    _check_fields(LabTargetLabel, item, schema_version)
    values = dict(item)
    if schema_version >= 2:
        values["release"] = _release_from_dict(item["release"])
    return LabTargetLabel(**values)


def _release_from_dict(item: dict) -> ReleaseEntry:
    entry = ReleaseEntry(**item)
    if not isinstance(entry.charted, bool):
        raise TypeError(f"release.charted must be true or false, got {entry.charted!r}")
    return entry


def _manifest_from_dict(data: dict) -> Manifest:
    schema_version = data["schema_version"]
    _check_fields(Manifest, data, schema_version)
    values = dict(data)
    values["diagnoses"] = tuple(_diagnosis_from_dict(item, schema_version) for item in data["diagnoses"])
    values["lab_targets"] = tuple(_lab_target_from_dict(item, schema_version) for item in data["lab_targets"])
    if schema_version >= 2:
        values["release_rule"] = ReleaseRule(**data["release_rule"])
    values["explanations"] = {
        code: tuple(LabAssociation(**item) for item in items) for code, items in data["explanations"].items()
    }
    contract = dict(data["input"])
    contract["leads"] = tuple(contract["leads"])
    values["input"] = InputContract(**contract)
    values["metrics"] = {str(k): float(v) for k, v in data["metrics"].items()}
    return Manifest(**values)


# ---------------------------------------------------------------- loading


@dataclass(frozen=True, slots=True)
class Scores:
    """Model outputs on the CPU, columns in manifest order (``.numpy()`` for arrays)."""

    dx_prob: torch.Tensor  # [B, len(manifest.diagnoses)]
    lab_prob: torch.Tensor  # [B, len(manifest.lab_targets)]
    embedding: torch.Tensor  # [B, manifest.embedding_dim]


@dataclass(frozen=True)
class Artifact:
    """A verified model: its manifest and the loaded TorchScript module (in eval mode)."""

    manifest: Manifest
    module: torch.jit.ScriptModule
    path: Path
    device: torch.device

    def score(self, ecg_mv: np.ndarray | torch.Tensor) -> Scores:
        """Score preprocessed ECGs: ``[12, T]`` or ``[B, 12, T]`` in mV at ``manifest.input.fs_hz``."""
        batch = self._as_batch(ecg_mv)
        with torch.inference_mode():
            dx_prob, lab_prob, embedding = self.module(batch)
        return Scores(dx_prob.cpu(), lab_prob.cpu(), embedding.cpu())

    def _as_batch(self, ecg_mv: np.ndarray | torch.Tensor) -> torch.Tensor:
        batch = torch.as_tensor(ecg_mv, dtype=torch.float32, device=self.device)
        if batch.dim() == 2:
            batch = batch.unsqueeze(0)
        contract = self.manifest.input
        if batch.dim() != 3 or batch.size(1) != len(contract.leads):
            raise InputContractError(self.path, f"expected [B, {len(contract.leads)}, T], got {tuple(batch.shape)}")
        if batch.size(2) < contract.min_samples:
            raise InputContractError(
                self.path,
                f"{batch.size(2)} samples is shorter than {contract.min_samples} ({contract.min_duration_s} s)",
            )
        return batch


def load_artifact(path: Path, *, map_location: str | torch.device = "cpu") -> Artifact:
    """Load the artifact directory ``path`` (or its ``model.ts``), verifying it first.

    Raises a subclass of :class:`ArtifactError`: missing file, unsupported schema or
    contract version, sha256 mismatch, or manifest/archive disagreement.
    """
    directory = path.parent if path.name == MODEL_FILE else path
    manifest_path, model_path = directory / MANIFEST_FILE, directory / MODEL_FILE
    manifest = Manifest.from_json(_read_text(manifest_path), source=manifest_path)
    model_bytes = _read_bytes(model_path)
    _verify_sha256(model_path, model_bytes, manifest)
    module, embedded_text = _load_module(model_path, model_bytes, map_location)
    _verify_embedded(model_path, embedded_text, manifest)
    device = torch.device(map_location)
    _verify_outputs(model_path, module, manifest, device)
    return Artifact(manifest=manifest, module=module, path=directory, device=device)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ArtifactNotFoundError(path, "missing") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(path, f"unreadable: {exc}") from exc


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ArtifactNotFoundError(path, "missing") from exc
    except OSError as exc:
        raise ArtifactError(path, f"unreadable: {exc}") from exc


def _verify_sha256(path: Path, model_bytes: bytes, manifest: Manifest) -> None:
    actual = sha256_hex(model_bytes)
    if manifest.model_sha256 != actual:
        raise IntegrityError(path, f"sha256 {actual} does not match the manifest's {manifest.model_sha256}")


def _load_module(
    path: Path, model_bytes: bytes, map_location: str | torch.device
) -> tuple[torch.jit.ScriptModule, str]:
    """Load from the bytes already hashed, so the file cannot change between check and load."""
    extra_files = {EMBEDDED_MANIFEST: ""}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*TorchScript.*deprecated", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
            module = torch.jit.load(io.BytesIO(model_bytes), map_location=map_location, _extra_files=extra_files)
    except RuntimeError as exc:
        raise ArtifactError(path, f"not a loadable TorchScript archive: {exc}") from exc
    module.eval()
    embedded = extra_files[EMBEDDED_MANIFEST]
    return module, embedded.decode("utf-8") if isinstance(embedded, bytes) else embedded


def _verify_embedded(path: Path, embedded_text: str, manifest: Manifest) -> None:
    if not embedded_text:
        raise ManifestMismatchError(path, f"the archive carries no {EMBEDDED_MANIFEST}")
    embedded = Manifest.from_json(embedded_text, source=f"{path}!{EMBEDDED_MANIFEST}")
    expected = manifest.without_sha256()
    if embedded != expected:
        differing = [
            f.name for f in dataclasses.fields(Manifest) if getattr(embedded, f.name) != getattr(expected, f.name)
        ]
        raise ManifestMismatchError(path, f"embedded manifest differs from {MANIFEST_FILE} in {differing}")


def _verify_outputs(path: Path, module: torch.jit.ScriptModule, manifest: Manifest, device: torch.device) -> None:
    """One all-zero window through the module: its output sizes must match the manifest's label lists."""
    contract = manifest.input
    probe = torch.zeros(1, len(contract.leads), contract.min_samples, device=device)
    with torch.inference_mode():
        dx_prob, lab_prob, embedding = module(probe)
    expected = (len(manifest.diagnoses), len(manifest.lab_targets), manifest.embedding_dim)
    actual = (dx_prob.size(-1), lab_prob.size(-1), embedding.size(-1))
    if actual != expected:
        raise ManifestMismatchError(path, f"module outputs (dx, lab, embedding) sizes {actual}, manifest {expected}")
