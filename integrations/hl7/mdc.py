"""ECG waveform codes in HL7 v2 OBX-3 and OBX-6: ISO/IEEE 11073 MDC, and the plain names vendors use.

We write MDC (``131329^MDC_ECG_ELEC_POTL_I^MDC``, ``MDC_ATTR_SAMP_RATE``, ``MDC_DIM_MICRO_VOLT``). We read
that and what carts and ECG management systems export: a lead named in OBX-3's code or text by its
plain name (``I``, ``V1``, ``Lead II``, ``LEAD_AVR``, ``ECG_LEAD_V3``) under any coding system, the rate
and resolution as OBXs named ``SAMPLE_RATE``/``Sampling Frequency`` and ``RESOLUTION``/``Amplitude
resolution``, and units as UCUM, MDC or printed text (``uV``, ``µV``, ``μV``, ``mV``).
"""

from __future__ import annotations

import re

from integrations.ecg import MODEL_LEAD_ORDER, canonical_lead_name

MDC_CODING_SYSTEM = "MDC"

#: MDC_ECG_ELEC_POTL_<lead> codes, our lead name → code.
LEAD_CODES: dict[str, str] = {
    "I": "131329", "II": "131330", "V1": "131331", "V2": "131332", "V3": "131333", "V4": "131334",
    "V5": "131335", "V6": "131336", "III": "131389", "aVR": "131390", "aVL": "131391", "aVF": "131392",
}  # fmt: skip
_LEADS_BY_CODE = {code: lead for lead, code in LEAD_CODES.items()}
#: Senders spell leads many ways (``MDC_ECG_ELEC_POTL_I``, ``MDC_ECG_LEAD_I``, ``ECG_LEAD_I``, ``Lead I``).
_LEAD_NAME_PREFIX = re.compile(r"^(?:MDC_ECG_ELEC_POTL_|MDC_ECG_LEAD_|ECG_LEAD_|LEAD_)")

SAMPLE_RATE_MNEMONIC = "MDC_ATTR_SAMP_RATE"
RESOLUTION_MNEMONIC = "MDC_ATTR_NU_MSMT_RES"
#: Numeric codes we write for the attributes; senders vary (many send ``0``), so we read the mnemonic.
ATTRIBUTE_CODES: dict[str, str] = {SAMPLE_RATE_MNEMONIC: "2445", RESOLUTION_MNEMONIC: "2327"}
#: OBX-3 names (code or text, upper case, spaces as ``_``) that mean each attribute, by sender style.
_ATTRIBUTE_NAMES: dict[str, frozenset[str]] = {
    SAMPLE_RATE_MNEMONIC: frozenset(
        {SAMPLE_RATE_MNEMONIC, "SAMPLE_RATE", "SAMPLING_RATE", "SAMPLING_FREQUENCY", "SAMPLE_FREQUENCY", "SAMPLERATE"}
    ),
    RESOLUTION_MNEMONIC: frozenset(
        {RESOLUTION_MNEMONIC, "RESOLUTION", "AMPLITUDE_RESOLUTION", "SAMPLE_RESOLUTION", "AMPLITUDE_UNITS_PER_BIT"}
    ),
}

#: OBX-6 of the sample rate: MDC_DIM_PER_SEC, as gateways send it.
SAMPLE_RATE_UNIT = "264608^MDC_DIM_PER_SEC^MDC"
_SAMPLE_RATE_UNITS = frozenset(
    {"", "HZ", "HERTZ", "/S", "1/S", "/SEC", "264608", "MDC_DIM_PER_SEC", "MDC_DIM_HZ", "SAMPLES/S", "SPS"}
)

#: OBX-6 of the resolution, per unit we write: UCUM code, MDC code and mnemonic.
VOLTAGE_UNITS_MV: dict[str, float] = {
    "V": 1e3, "MV": 1.0, "UV": 1e-3, "NV": 1e-6,
    "266400": 1e3, "266418": 1.0, "266419": 1e-3, "266420": 1e-6,
    "MDC_DIM_VOLT": 1e3, "MDC_DIM_MILLI_VOLT": 1.0, "MDC_DIM_MICRO_VOLT": 1e-3, "MDC_DIM_NANO_VOLT": 1e-6,
    # µ (micro sign) and μ (Greek mu) both upper-case to Greek capital Mu; "MCV" is an old printed form.
    "\u039cV": 1e-3, "MCV": 1e-3, "MICROVOLT": 1e-3, "MICROVOLTS": 1e-3, "MILLIVOLT": 1.0, "MILLIVOLTS": 1.0,
}  # fmt: skip
MICROVOLT_UNIT = "266419^MDC_DIM_MICRO_VOLT^MDC"


def lead_of(code: str, mnemonic: str) -> str | None:
    """Which of the 12 leads an OBX-3 (code and text) names, or ``None`` (another waveform, an extra lead)."""
    if code in _LEADS_BY_CODE:
        return _LEADS_BY_CODE[code]
    for name in (mnemonic, code):
        lead = canonical_lead_name(_LEAD_NAME_PREFIX.sub("", _normalised(name)))
        if lead in MODEL_LEAD_ORDER:
            return lead
    return None


def attribute_of(code: str, mnemonic: str) -> str | None:
    """``MDC_ATTR_SAMP_RATE`` or ``MDC_ATTR_NU_MSMT_RES`` if an NM OBX-3 names that attribute in any style."""
    names = {_normalised(code), _normalised(mnemonic)}
    return next((attribute for attribute, known in _ATTRIBUTE_NAMES.items() if names & known), None)


def _normalised(name: str) -> str:
    return "_".join(name.replace("-", " ").upper().split())


def lead_identifier(lead: str) -> str:
    """OBX-3 for a lead: ``131329^MDC_ECG_ELEC_POTL_I^MDC``."""
    return f"{LEAD_CODES[lead]}^MDC_ECG_ELEC_POTL_{lead.upper()}^{MDC_CODING_SYSTEM}"


def attribute_identifier(mnemonic: str) -> str:
    """OBX-3 for an attribute: ``2445^MDC_ATTR_SAMP_RATE^MDC``."""
    return f"{ATTRIBUTE_CODES[mnemonic]}^{mnemonic}^{MDC_CODING_SYSTEM}"


def is_sample_rate_unit(components: tuple[str, ...]) -> bool:
    """Whether OBX-6 (its code and text components) says Hz, or says nothing."""
    return all(component.strip().upper() in _SAMPLE_RATE_UNITS for component in components[:2])


def millivolts_per_unit(components: tuple[str, ...]) -> float | None:
    """mV per unit of an OBX-6 voltage unit (code or text component), or ``None`` if not a voltage."""
    for component in components[:2]:
        factor = VOLTAGE_UNITS_MV.get(component.strip().upper())
        if factor is not None:
            return factor
    return None
