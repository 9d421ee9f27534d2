"""ORU^R01 *results*: the model's findings on one ECG, sent back to the hospital.

``integrations`` imports nothing from the model side, so the inputs are defined here. Layout,
per finding ``n`` (OBX-4 sub-ID ``n`` ties its two OBXs together):

* a ``CWE`` OBX: OBX-3 what was predicted (``ECG_AI_DIAGNOSIS`` / ``ECG_AI_LAB``, local codes),
  OBX-5 the finding's code (``I48^Atrial fibrillation^I10``), OBX-8 ``POS``/``NEG`` (table 0078);
* an ``NM`` OBX: OBX-3 ``ECG_AI_PROBABILITY``, OBX-5 the probability, OBX-6 ``1`` (UCUM).

Both carry OBX-11 ``P`` (preliminary) or ``F`` (final), OBX-14 the ECG's acquisition time,
OBX-17 the method (predicted from the ECG by an AI model) and OBX-18 the model instance
(``version^name``). OBR-3 is the ECG's id, so the result files under the same study.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from hl7apy.core import Group

from integrations.hl7.ecg_oru_encoder import ANONYMOUS_NAME, ECG_ORDER_CODE
from integrations.hl7.message import Hl7Party, escape_text, format_dtm, new_message

DEFAULT_RESULTS_SENDER = Hl7Party(application="ECG_AGENT", facility="HOSPITAL")
DEFAULT_RESULTS_RECEIVER = Hl7Party(application="RESULTS", facility="HOSPITAL")
#: OBX-3 per finding kind, and of the probability OBX (local codes: no standard code says "predicted").
KIND_CODES: dict[str, str] = {
    "diagnosis": "ECG_AI_DIAGNOSIS^Diagnosis predicted from ECG^L",
    "lab": "ECG_AI_LAB^Lab abnormality predicted from ECG^L",
}
PROBABILITY_CODE = "ECG_AI_PROBABILITY^Model probability^L"
METHOD = "ECG_AI^Predicted from ECG by an AI model^L"
PROBABILITY_UNIT = "1^^UCUM"


@dataclass(frozen=True, slots=True)
class Finding:
    """One model output: ``kind`` is ``diagnosis`` or ``lab``; ``system`` an HL7 coding system (``I10``, ``LN``)."""

    kind: str
    code: str
    system: str
    display: str
    probability: float
    positive: bool


@dataclass(frozen=True, slots=True)
class ModelInstance:
    """The model that produced the findings (OBX-18)."""

    name: str
    version: str


@dataclass(frozen=True, slots=True)
class EcgResults:
    """Every finding on one ECG; ``final`` selects OBX-11 ``F`` over ``P``."""

    ecg_record_id: str
    subject_id: str | None
    acquired_at: datetime | None
    findings: tuple[Finding, ...]
    model: ModelInstance
    final: bool = False


def build_results_oru(
    results: EcgResults,
    *,
    control_id: str,
    sender: Hl7Party = DEFAULT_RESULTS_SENDER,
    receiver: Hl7Party = DEFAULT_RESULTS_RECEIVER,
    sent_at: datetime | None = None,
) -> bytes:
    """The ORU^R01 v2.5.1 bytes carrying ``results``."""
    unknown = sorted({finding.kind for finding in results.findings} - KIND_CODES.keys())
    if unknown:
        raise ValueError(f"finding kinds {unknown} are not {sorted(KIND_CODES)}")
    message = new_message(
        "ORU^R01^ORU_R01", control_id=control_id, sender=sender, receiver=receiver, sent_at=sent_at or datetime.now(UTC)
    )
    result = message.add_group("ORU_R01_PATIENT_RESULT")
    patient = result.add_group("ORU_R01_PATIENT")
    patient.pid.pid_3 = escape_text(results.subject_id or "")
    patient.pid.pid_5 = ANONYMOUS_NAME
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    order.obr.obr_1 = "1"
    order.obr.obr_3 = escape_text(results.ecg_record_id)
    order.obr.obr_4 = ECG_ORDER_CODE
    if results.acquired_at is not None:
        order.obr.obr_7 = format_dtm(results.acquired_at)
    order.obr.obr_25 = _status(results)
    for sub_id, finding in enumerate(results.findings, start=1):
        _add_finding(order, results, finding, str(sub_id))
    return message.to_er7().encode("utf-8")


def _add_finding(order: Group, results: EcgResults, finding: Finding, sub_id: str) -> None:
    coded = f"{escape_text(finding.code)}^{escape_text(finding.display)}^{escape_text(finding.system)}"
    cwe = _add_obx(order, results, "CWE", KIND_CODES[finding.kind], sub_id, coded)
    cwe.obx_8 = "POS" if finding.positive else "NEG"
    nm = _add_obx(order, results, "NM", PROBABILITY_CODE, sub_id, f"{finding.probability:.4f}")
    nm.obx_6 = PROBABILITY_UNIT


def _add_obx(order: Group, results: EcgResults, value_type: str, identifier: str, sub_id: str, value: str) -> object:
    obx = order.add_group("ORU_R01_OBSERVATION").obx
    obx.obx_1 = str(len(order.children) - 1)
    obx.obx_2 = value_type
    obx.obx_3 = identifier
    obx.obx_4 = sub_id
    obx.obx_5 = value
    obx.obx_11 = _status(results)
    if results.acquired_at is not None:
        obx.obx_14 = format_dtm(results.acquired_at)
    obx.obx_17 = METHOD
    obx.obx_18 = f"{escape_text(results.model.version)}^{escape_text(results.model.name)}"
    return obx


def _status(results: EcgResults) -> str:
    return "F" if results.final else "P"
