"""EcgRecord → ORU^R01 v2.5.1 bytes, the layout :mod:`integrations.hl7.ecg_oru` reads.

For tests, benches and the demo (an ECG cart's side). hl7apy builds the structure with the
NA values left empty, then the sample text is spliced in: building a hl7apy object per sample
would take seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from hl7apy.core import Group

from integrations.ecg import EcgRecord
from integrations.hl7 import mdc
from integrations.hl7.errors import EcgWaveformError
from integrations.hl7.message import Hl7Party, escape_text, format_dtm, new_message
from integrations.hl7.waveform import encode_numeric_array, splice_waveforms

DEFAULT_ECG_SENDER = Hl7Party(application="ECG_CART", facility="CARDIOLOGY")
DEFAULT_ECG_RECEIVER = Hl7Party(application="ECG_AGENT", facility="HOSPITAL")
DEFAULT_RESOLUTION_UV = 1.0
#: OBR-4: LOINC "EKG study".
ECG_ORDER_CODE = "11524-6^EKG study^LN"
#: PID-5 is required by v2.5.1; de-identified senders have no name to put there.
ANONYMOUS_NAME = "ANONYMOUS"
_GROUP_SUB_ID = "1"


def encode_ecg_oru(
    record: EcgRecord,
    *,
    control_id: str,
    sender: Hl7Party = DEFAULT_ECG_SENDER,
    receiver: Hl7Party = DEFAULT_ECG_RECEIVER,
    sent_at: datetime | None = None,
    resolution_uv: float = DEFAULT_RESOLUTION_UV,
) -> bytes:
    """One ORU^R01 carrying ``record``: sample rate and resolution at OBX-4 ``1``, leads at ``1.1``, ``1.2``…

    Samples are rounded to whole counts of ``resolution_uv``; NaN becomes an empty NA component.
    """
    unknown = [lead for lead in record.lead_names if lead not in mdc.LEAD_CODES]
    if unknown:
        raise EcgWaveformError(control_id, f"leads {unknown} have no MDC code")
    message = new_message(
        "ORU^R01^ORU_R01", control_id=control_id, sender=sender, receiver=receiver, sent_at=sent_at or datetime.now(UTC)
    )
    result = message.add_group("ORU_R01_PATIENT_RESULT")
    patient = result.add_group("ORU_R01_PATIENT")
    patient.pid.pid_3 = escape_text(record.subject_id or "")
    patient.pid.pid_5 = ANONYMOUS_NAME
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    order.obr.obr_1 = "1"
    order.obr.obr_3 = escape_text(record.record_id)
    order.obr.obr_4 = ECG_ORDER_CODE
    if record.acquired_at is not None:
        order.obr.obr_7 = format_dtm(record.acquired_at)
    rate = mdc.attribute_identifier(mdc.SAMPLE_RATE_MNEMONIC)
    _add_obx(order, "NM", rate, _GROUP_SUB_ID, value=_nm(record.fs_hz), units=mdc.SAMPLE_RATE_UNIT)
    resolution = mdc.attribute_identifier(mdc.RESOLUTION_MNEMONIC)
    _add_obx(order, "NM", resolution, _GROUP_SUB_ID, value=_nm(resolution_uv), units=mdc.MICROVOLT_UNIT)
    for index, lead in enumerate(record.lead_names, start=1):
        _add_obx(order, "NA", mdc.lead_identifier(lead), f"{_GROUP_SUB_ID}.{index}")
    first_lead_position = 5  # after MSH, PID, OBR and the two attribute OBXs (segment positions 0-4)
    payloads = {
        first_lead_position + row: encode_numeric_array(np.round(samples_mv * 1000.0 / resolution_uv))
        for row, samples_mv in enumerate(record.signal_mv)
    }
    return splice_waveforms(message.to_er7(), payloads).encode("utf-8")


def _add_obx(order: Group, value_type: str, identifier: str, sub_id: str, *, value: str = "", units: str = "") -> None:
    """One OBX; NA values are left empty here and spliced in as text afterwards."""
    obx = order.add_group("ORU_R01_OBSERVATION").obx
    obx.obx_1 = str(len(order.children) - 1)
    obx.obx_2 = value_type
    obx.obx_3 = identifier
    obx.obx_4 = sub_id
    if value:
        obx.obx_5 = value
    if units:
        obx.obx_6 = units
    obx.obx_11 = "F"


def _nm(value: float) -> str:
    """NM text: no exponent, no trailing zeros (500.0 → ``500``)."""
    return np.format_float_positional(value, trim="-")
