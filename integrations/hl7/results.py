"""ORU^R01 *results*: the model's findings on one ECG, sent back to the hospital.

``integrations`` imports nothing from the model side, so the inputs are defined here. Layout,
per finding ``n`` (OBX-4 sub-ID ``n`` ties its two OBXs together):

* a ``CWE`` OBX: OBX-3 what was predicted (``ECG_AI_DIAGNOSIS`` / ``ECG_AI_LAB``, local codes),
  OBX-5 the finding's code (``I48^Atrial fibrillation^I10``), OBX-8 ``POS``/``NEG`` (table 0078);
* an ``NM`` OBX: OBX-3 ``ECG_AI_PROBABILITY``, OBX-5 the probability, OBX-6 ``1`` (UCUM).

* NTEs after the probability OBX: the finding's notes (how good its label was on validation, what
  was done to the signal), in words a clinician reads.

OBX-3 is always one of our local codes and OBX-6 is ``1`` (a probability), never a lab's LOINC or
unit: the lab's LOINC appears only as the CWE *value* naming which test was predicted abnormal.

Both carry OBX-11 ``P`` (preliminary) or ``F`` (final), OBX-14 the ECG's acquisition time,
OBX-17 the method (predicted from the ECG by an AI model) and OBX-18 the model instance
(``version^name``). OBR-3 is the ECG's id, so the result files under the same study.

**Corrections.** The results of a corrected ECG (same OBR-3, the ECG's new version) go with OBR-25
``C`` and OBX-11 ``C`` on every current finding ("replaces a final result"); a finding the earlier
results had and the corrected ones do not is sent once more with OBX-11 ``D`` ("deletes the OBX
record"), not ``W`` (table 0085 keeps ``W`` for a result posted against the wrong patient).
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
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelInstance:
    """The model that produced the findings (OBX-18)."""

    name: str
    version: str


@dataclass(frozen=True, slots=True)
class EcgResults:
    """Every finding on one ECG; ``final`` selects OBX-11 ``F`` over ``P``.

    ``correction``: these results replace the ones sent for an earlier version of the ECG (OBR-25 and
    OBX-11 ``C``); ``retracted``: what the earlier results had and these do not (OBX-11 ``D``).
    """

    ecg_record_id: str
    subject_id: str | None
    acquired_at: datetime | None
    findings: tuple[Finding, ...]
    model: ModelInstance
    final: bool = False
    correction: bool = False
    retracted: tuple[Finding, ...] = ()

    def __post_init__(self) -> None:
        if self.retracted and not self.correction:
            raise ValueError("only a correction retracts findings")


#: MSH-18 for a message with characters beyond ASCII (a name such as "Sjögren syndrome", "µV").
UTF8_CHARACTER_SET = "UNICODE UTF-8"


def build_results_oru(
    results: EcgResults,
    *,
    control_id: str,
    sender: Hl7Party = DEFAULT_RESULTS_SENDER,
    receiver: Hl7Party = DEFAULT_RESULTS_RECEIVER,
    sent_at: datetime | None = None,
) -> bytes:
    """The ORU^R01 v2.5.1 bytes carrying ``results``."""
    unknown = sorted({finding.kind for finding in (*results.findings, *results.retracted)} - KIND_CODES.keys())
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
    status = _status(results)
    sent = [(finding, status) for finding in results.findings] + [(finding, "D") for finding in results.retracted]
    for sub_id, (finding, finding_status) in enumerate(sent, start=1):
        _add_finding(order, results, finding, str(sub_id), finding_status)
    text = message.to_er7()
    if not text.isascii():
        # HL7 v2's default character set is ASCII: a receiver reads UTF-8 only when MSH-18 says so (table 0211).
        message.msh.msh_18 = UTF8_CHARACTER_SET
        text = message.to_er7()
    return text.encode("utf-8")


def _add_finding(order: Group, results: EcgResults, finding: Finding, sub_id: str, status: str) -> None:
    coded = f"{escape_text(finding.code)}^{escape_text(finding.display)}^{escape_text(finding.system)}"
    cwe, _ = _add_obx(order, results, "CWE", KIND_CODES[finding.kind], sub_id, coded, status)
    cwe.obx_8 = "POS" if finding.positive else "NEG"
    nm, group = _add_obx(order, results, "NM", PROBABILITY_CODE, sub_id, f"{finding.probability:.4f}", status)
    nm.obx_6 = PROBABILITY_UNIT
    for index, note in enumerate(finding.notes, start=1):
        nte = group.add_segment("NTE")
        nte.nte_1 = str(index)
        nte.nte_3 = escape_text(note)


def _add_obx(
    order: Group, results: EcgResults, value_type: str, identifier: str, sub_id: str, value: str, status: str
) -> tuple[object, Group]:
    group = order.add_group("ORU_R01_OBSERVATION")
    obx = group.obx
    obx.obx_1 = str(len(order.children) - 1)
    obx.obx_2 = value_type
    obx.obx_3 = identifier
    obx.obx_4 = sub_id
    obx.obx_5 = value
    obx.obx_11 = status
    if results.acquired_at is not None:
        obx.obx_14 = format_dtm(results.acquired_at)
    obx.obx_17 = METHOD
    obx.obx_18 = f"{escape_text(results.model.version)}^{escape_text(results.model.name)}"
    return obx, group


def _status(results: EcgResults) -> str:
    if results.correction:
        return "C"
    return "F" if results.final else "P"
