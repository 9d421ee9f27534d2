"""One model finding as an R4 Observation that no EHR can mistake for a measurement.

An EHR files and trends Observations by ``Observation.code``; a finding coded with a lab's LOINC
(``1963-8`` bicarbonate) and a ``valueQuantity`` of 0.52 reads as "bicarbonate 0.52". So:

* ``code`` is from the project's own CodeSystem (:data:`FINDING_CODE_SYSTEM`): ``dx-I48``
  "Atrial fibrillation and flutter — predicted from ECG", ``lab-potassium-high`` "Potassium
  predicted high from ECG". No standard code means "predicted from an ECG by a model", and a
  standard code in ``code.coding`` would be read as the thing observed. The ICD-10-CM code of a
  diagnosis and the LOINC of a lab appear only as the *answer* of a component whose code is ours
  (``predicted-condition`` / ``predicted-lab-test``, ``valueCodeableConcept``): they say what was
  predicted, never what was measured, and nothing trends a component answer as a result.
* ``valueQuantity`` is the model's calibrated probability, UCUM ``1`` (displayed "probability"),
  only ever on our own code; no lab in the catalogue has unit ``1`` (``%`` is a lab unit, hence not %).
* ``category`` is our ``ecg-ai-assessment`` (not ``laboratory``: an EHR that lists lab results by
  category never shows these), ``method`` names the model and version, ``interpretation`` is
  POS/NEG (the model's call at its operating threshold; H/L would read as "probability high").
* Following the HL7 guidance on AI transparency: ``meta.security`` AIAST, ``device`` the model's
  Device, ``derivedFrom`` the ECG (the exact version it was computed on) and the lab findings that
  explain a diagnosis, and ``note`` in words a clinician reads: how good the label was on
  validation, and what was done to the signal (an imputed lead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

FINDING_CODE_SYSTEM = "http://ecg-clinical-knowledge.example/fhir/CodeSystem/ecg-ai-finding"
SECURITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
UCUM_SYSTEM = "http://unitsofmeasure.org"
#: Our category: an assessment a model derived from an ECG (an EHR's lab view filters on ``laboratory``).
CATEGORY_CODE = ("ecg-ai-assessment", "AI assessment derived from an ECG")
#: Component codes whose answer names what was predicted (an ICD-10-CM condition, a LOINC lab test).
PREDICTED_CONDITION = ("predicted-condition", "Condition predicted")
PREDICTED_LAB_TEST = ("predicted-lab-test", "Lab test predicted abnormal")
METHOD_CODE = ("ecg-ai-model", "Predicted from ECG by an AI model")
#: Characters that would break a token search (``system|value``, ``,`` for OR, ``\\`` escapes).
TOKEN_UNSAFE = frozenset("|,\\$")

FindingKind = Literal["diagnosis", "lab"]
LabDirection = Literal["high", "low"]
Json = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One model output: ``target`` is the manifest's target name (``I48``, ``potassium_high``).

    ``code``/``system``/``display`` name what was predicted (the ICD-10-CM condition, or the lab's
    LOINC with the label's display, ``Potassium high``); they never become ``Observation.code``.
    ``notes`` are sentences for the clinician (validation figures, what was done to the signal).
    """

    target: str
    kind: FindingKind
    code: str
    system: str
    display: str
    probability: float
    positive: bool
    lab_direction: LabDirection | None = None
    explained_by: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_token_safe("target", self.target)
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"finding {self.target!r}: probability {self.probability} is outside [0, 1]")
        if (self.kind == "lab") != (self.lab_direction is not None):
            raise ValueError(
                f"finding {self.target!r}: a lab finding needs lab_direction, a diagnosis must not have one"
            )
        if self.kind == "lab" and self.explained_by:
            raise ValueError(f"finding {self.target!r}: only a diagnosis is explained by labs")
        if any(not note.strip() for note in self.notes):
            raise ValueError(f"finding {self.target!r}: a note is blank")

    @property
    def finding_code(self) -> str:
        """Our code: ``dx-I48``, ``lab-potassium-high``."""
        prefix = "dx" if self.kind == "diagnosis" else "lab"
        return f"{prefix}-{self.target.replace('_', '-')}"

    @property
    def finding_display(self) -> str:
        """What our code says: a prediction from an ECG, never the condition or the lab value itself."""
        if self.kind == "diagnosis":
            return f"{self.display} — predicted from ECG"
        return f"{self.lab_name} predicted {self.lab_direction} from ECG"

    @property
    def lab_name(self) -> str:
        """``Potassium`` of a lab label displayed ``Potassium high``."""
        suffix = f" {self.lab_direction}"
        return self.display[: -len(suffix)] if self.display.endswith(suffix) else self.display


@dataclass(frozen=True, slots=True)
class ModelNames:
    name: str
    version: str


def finding_observation(
    finding: Finding,
    *,
    identifiers: list[Json],
    status: str,
    model: ModelNames,
    effective: str,
    device_reference: str,
    derived_from: list[Json],
    subject_reference: str | None,
) -> Json:
    """The Observation of one finding (see the module docstring for why each element is what it is)."""
    observation: Json = {
        "resourceType": "Observation",
        "meta": {
            "security": [{"system": SECURITY_SYSTEM, "code": "AIAST", "display": "Artificial Intelligence asserted"}]
        },
        "identifier": identifiers,
        "status": status,
        "category": [{"coding": [_own(CATEGORY_CODE)], "text": CATEGORY_CODE[1]}],
        "code": {"coding": [_own((finding.finding_code, finding.finding_display))], "text": finding.finding_display},
        "effectiveDateTime": effective,
        "valueQuantity": _probability(finding.probability),
        "interpretation": [{"coding": [_interpretation(finding)]}],
        "method": {"coding": [_own(METHOD_CODE)], "text": f"Predicted from ECG by model {model.name} {model.version}"},
        "device": {"reference": device_reference},
        "derivedFrom": derived_from,
        "component": [_predicted_component(finding)],
    }
    if subject_reference is not None:
        observation["subject"] = {"reference": subject_reference}
    if finding.notes:
        observation["note"] = [{"text": text} for text in finding.notes]
    return observation


def _probability(probability: float) -> Json:
    return {"value": round(probability, 6), "unit": "probability", "system": UCUM_SYSTEM, "code": "1"}


def _own(code_display: tuple[str, str]) -> Json:
    code, display = code_display
    return {"system": FINDING_CODE_SYSTEM, "code": code, "display": display}


def _predicted_component(finding: Finding) -> Json:
    """What was predicted, as the answer of our component code: the standard code is never the question."""
    if finding.kind == "diagnosis":
        question, answer_display = PREDICTED_CONDITION, finding.display
    else:
        question, answer_display = PREDICTED_LAB_TEST, finding.lab_name
    answer = {"system": finding.system, "code": finding.code, "display": answer_display}
    return {"code": {"coding": [_own(question)]}, "valueCodeableConcept": {"coding": [answer]}}


def _interpretation(finding: Finding) -> Json:
    code, display = ("POS", "Positive") if finding.positive else ("NEG", "Negative")
    return {"system": INTERPRETATION_SYSTEM, "code": code, "display": display}


def check_token_safe(what: str, value: str) -> None:
    unsafe = sorted(set(value) & TOKEN_UNSAFE)
    if not value or unsafe:
        raise ValueError(f"{what} {value!r} is empty or contains {unsafe}, which break an identifier search")
