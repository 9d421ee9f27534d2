"""Score ECGs with a loaded artifact: the shared preprocessing, the model, the manifest's thresholds.

Every record goes through :func:`integrations.ecg.preprocess` — the function training
used — with the manifest's input contract, so serving cannot drift from training.
Records of equal length are scored together in batches; the module averages its
non-overlapping windows itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agent.validation import ValidationRules
from integrations.ecg import EcgRecord, PreprocessConfig, preprocess
from model_training.artifact import Artifact, Manifest


@dataclass(frozen=True, slots=True)
class Finding:
    """One output of the model for one ECG, with the manifest's code and operating threshold applied."""

    kind: str  # "diagnosis" | "lab"
    code: str  # ICD-10-CM code, or the lab target name (``potassium_high``)
    probability: float
    positive: bool


@dataclass(frozen=True, slots=True)
class LabExplanation:
    """A predicted lab abnormality offered as the physiological explanation of a positive diagnosis."""

    diagnosis_code: str
    lab_target: str
    lab_probability: float
    lift: float


@dataclass(frozen=True, slots=True)
class ScoredEcg:
    record_id: str
    model_version: str
    findings: tuple[Finding, ...]
    explanations: tuple[LabExplanation, ...]

    def positives(self, kind: str) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.kind == kind and f.positive)


def preprocess_config(manifest: Manifest) -> PreprocessConfig:
    """The shared preprocessing, configured by the artifact's input contract."""
    contract = manifest.input
    return PreprocessConfig(
        fs_hz=contract.fs_hz, lead_order=contract.leads, clip_mv=contract.clip_mv, window_s=contract.window_s
    )


def validation_rules(manifest: Manifest) -> ValidationRules:
    contract = manifest.input
    return ValidationRules(
        required_leads=contract.leads, min_duration_s=contract.min_duration_s, min_fs_hz=contract.fs_hz
    )


def score_records(
    records: Sequence[EcgRecord], artifact: Artifact, *, batch_size: int, explanation_top_k: int
) -> list[ScoredEcg]:
    """Score already-validated records with ``artifact``; results in the order of ``records``."""
    config = preprocess_config(artifact.manifest)
    inputs = [preprocess(record, config) for record in records]
    by_length: dict[int, list[int]] = defaultdict(list)
    for index, signal in enumerate(inputs):
        by_length[signal.shape[-1]].append(index)
    results: list[ScoredEcg | None] = [None] * len(records)
    for indices in by_length.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            scores = artifact.score(np.stack([inputs[i] for i in chunk]))
            dx_prob, lab_prob = scores.dx_prob.numpy(), scores.lab_prob.numpy()
            for row, index in enumerate(chunk):
                results[index] = _scored(
                    records[index].record_id, artifact.manifest, dx_prob[row], lab_prob[row], explanation_top_k
                )
    return [result for result in results if result is not None]


def _scored(record_id: str, manifest: Manifest, dx_prob: np.ndarray, lab_prob: np.ndarray, top_k: int) -> ScoredEcg:
    findings = tuple(
        Finding("diagnosis", label.code, float(p), bool(p >= label.threshold))
        for label, p in zip(manifest.diagnoses, dx_prob, strict=True)
    ) + tuple(
        Finding("lab", target.name, float(p), bool(p >= target.threshold))
        for target, p in zip(manifest.lab_targets, lab_prob, strict=True)
    )
    return ScoredEcg(record_id, manifest.model_version, findings, _explain(manifest, findings, top_k))


def _explain(manifest: Manifest, findings: tuple[Finding, ...], top_k: int) -> tuple[LabExplanation, ...]:
    """For each positive diagnosis: the predicted-positive lab abnormalities that go with it, by lift on validation."""
    positive_labs = {f.code: f.probability for f in findings if f.kind == "lab" and f.positive}
    explanations: list[LabExplanation] = []
    for finding in findings:
        if finding.kind != "diagnosis" or not finding.positive:
            continue
        associated = [a for a in manifest.explanations.get(finding.code, ()) if a.lab_target in positive_labs]
        explanations += [
            LabExplanation(finding.code, a.lab_target, positive_labs[a.lab_target], a.lift) for a in associated[:top_k]
        ]
    return tuple(explanations)
