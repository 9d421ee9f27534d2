"""What of a study's results reaches the chart, and what each charted finding says about itself.

A positive finding is charted (written back by every sink) only when its label's release decision in
the manifest says so (``release.charted``): the release rule vetted it on validation data. Every other
result stays in SQL. A manifest without a release table (schema 1) charts nothing.

Each charted finding carries, in words a clinician reads: how good its label was on validation
(:func:`quality_note`) and what was done to the study's signal before scoring (:func:`signal_note`).
A diagnosis is explained only by lab findings that are charted too: a link to a result that is not
in the chart would point at nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.sinks.manifests import ManifestIndex
from agent.sinks.payload import ModelRef, PayloadFinding, ResultPayload
from model_training.artifact import DiagnosisLabel, LabTargetLabel, ReleaseEntry, ReleaseRule

#: Said of every finding: the probability is a prediction, never a lab value or a diagnosis made.
NOT_A_MEASUREMENT = "Not a measurement."


@dataclass(frozen=True, slots=True)
class ChartedFinding:
    """A positive finding whose label is charted, with the manifest's words for it.

    ``code``/``system``/``display`` name what was predicted (the ICD-10-CM code, or the lab's LOINC and
    the label's display, ``Potassium high``); ``target`` is the payload's code (``I48``, ``potassium_high``).
    """

    kind: str  # "diagnosis" | "lab"
    target: str
    code: str
    system: str
    display: str
    probability: float
    lab_direction: str | None
    explained_by: tuple[str, ...]
    notes: tuple[str, ...]


def charted_findings(payload: ResultPayload, manifests: ManifestIndex) -> list[ChartedFinding]:
    """The payload's positive findings whose labels are charted, labs first, each with its notes."""
    version = payload.model.version
    labelled = [(finding, _label(manifests, version, finding)) for finding in payload.positives()]
    charted = [(finding, label) for finding, label in labelled if label.charted]
    charted_labs = {finding.code for finding, _ in charted if finding.kind == "lab"}
    signal = tuple(signal_note(note) for note in payload.signal_notes)
    rule = manifests.release_rule(version)
    out = []
    for finding, label in sorted(charted, key=lambda pair: pair[0].kind != "lab"):
        assert label.release is not None and rule is not None  # charted implies a release decision
        notes = (quality_note(label.release, rule, payload.model), *signal)
        if isinstance(label, LabTargetLabel):
            out.append(ChartedFinding("lab", finding.code, label.loinc, label.loinc_system, label.display,
                                      finding.probability, label.direction, (), notes))  # fmt: skip
            continue
        explained_by = tuple(
            e.lab_target for e in payload.explanations if e.diagnosis == finding.code and e.lab_target in charted_labs
        )
        out.append(ChartedFinding("diagnosis", finding.code, label.code, label.system, label.display,
                                  finding.probability, None, explained_by, notes))  # fmt: skip
    return out


def _label(manifests: ManifestIndex, version: str, finding: PayloadFinding) -> DiagnosisLabel | LabTargetLabel:
    if finding.kind == "diagnosis":
        return manifests.diagnosis(version, finding.code)
    return manifests.lab(version, finding.code)


def quality_note(release: ReleaseEntry, rule: ReleaseRule, model: ModelRef) -> str:
    """``Validated on 200 ECGs: sensitivity 71 %, PPV 42 % at 10 % prevalence, AUROC 0.92 (95 % CI 0.86 to 0.97);
    model ecg-ck 1.2.0. Not a measurement.``"""
    # "to", not an en dash: the sentence also travels in HL7 v2 NTE segments, whose default character set is ASCII.
    ci = f"{rule.ci_level * 100:.0f} % CI {_decimal(release.auroc_ci_low)} to {_decimal(release.auroc_ci_high)}"
    return (
        f"Validated on {release.n_known} ECGs: sensitivity {_percent(release.sensitivity)}, "
        f"PPV {_percent(release.ppv)} at {_percent(release.prevalence)} prevalence, "
        f"AUROC {_decimal(release.auroc)} ({ci}); model {model.name} {model.version}. {NOT_A_MEASUREMENT}"
    )


def signal_note(note: str) -> str:
    """``Signal: lead II imputed from I and III (...)``: what was done to the ECG before it was scored."""
    return f"Signal: {note}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f} %"


def _decimal(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
