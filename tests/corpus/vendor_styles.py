"""Vendor styles, written by hand: HL7 v2 ORU^R01 as carts and ECG systems export them, FHIR R4 ECG Observations.

Used by make_corpus.py only. Nothing here calls our encoders; each builder says which style it imitates.
"""

from __future__ import annotations

import base64

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from scipy.signal import resample_poly

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
#: ISO/IEEE 11073-10101 MDC_ECG_LEAD_* codes.
MDC_LEAD_CODES = {
    "I": "131329", "II": "131330", "III": "131389", "aVR": "131390", "aVL": "131391", "aVF": "131392",
    "V1": "131331", "V2": "131332", "V3": "131333", "V4": "131334", "V5": "131335", "V6": "131336",
}  # fmt: skip
#: LOINC "EKG/ECG leads" part codes (published in HL7 Deutschland's EkgLeads value set).
LOINC_LEAD_CODES = {
    "I": "LP7386-8", "II": "LP7387-6", "III": "LP7388-4", "aVR": "LP7385-0", "aVL": "LP7384-3", "aVF": "LP7383-5",
    "V1": "LP7389-2", "V2": "LP7390-0", "V3": "LP7391-8", "V4": "LP7392-6", "V5": "LP7393-4", "V6": "LP7394-2",
}  # fmt: skip
#: SNOMED CT lead concepts (HL7 Deutschland's EkgAbleitungenVS value set).
SNOMED_LEAD_CODES = {
    "I": "272729005", "II": "272730000", "III": "272731001", "aVR": "257474006", "aVL": "257473000",
    "aVF": "257472005", "V1": "257475007", "V2": "257476008", "V3": "257477004", "V4": "257478009",
    "V5": "257479001", "V6": "257480003",
}  # fmt: skip
MDC = "urn:oid:2.16.840.1.113883.6.24"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


# ---------------------------------------------------------------------------------------------------- signals


def real_ecg_uv() -> np.ndarray:
    """pydicom's waveform_ecg.dcm, first waveform: 12 leads (I…V6), 1000 Hz, 10 s, in µV (1.25 µV steps)."""
    dataset = dcmread(get_testdata_file("waveform_ecg.dcm"))
    return np.asarray(dataset.waveform_array(0), dtype=np.float64).T


def at_rate(signal_uv: np.ndarray, fs_hz: int, seconds: float) -> np.ndarray:
    """The 1000 Hz signal resampled to ``fs_hz`` and cut to ``seconds``."""
    resampled = signal_uv if fs_hz == 1000 else resample_poly(signal_uv, fs_hz, 1000, axis=1)
    return resampled[:, : round(fs_hz * seconds)]


# ---------------------------------------------------------------------------------------------------- HL7 v2


def hl7_bytes(segments: list[str], encoding: str) -> bytes:
    return ("\r".join(segments) + "\r").encode(encoding)


def na_value(counts: np.ndarray) -> str:
    return "^".join(str(int(value)) for value in np.rint(counts))


def pcd01(case: str, obr_7: str, signal_uv: np.ndarray, fs_hz: int, *, extra_leads: bool = False) -> bytes:
    """IHE PCD-01 waveform: MDC codes, each lead's rate and resolution as OBX-4 children, counts of 2.5 µV."""
    segments = [
        f"MSH|^~\\&|ECG_GATEWAY^0001C0FFEE000001^EUI-64|ICU|AGENT|HOSP|20261120031500-0500||ORU^R01^ORU_R01|{case}|P"
        "|2.6|||AL|NE||ASCII|||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO",
        "PID|||MRN-4711^^^HOSP^MR||DOE^JANE^^^^^L||19610302|F",
        "PV1||I|ICU^12^A",
        f"OBR|1|PLC-{case}^GATEWAY|FIL-{case}^GATEWAY|69121^MDC_OBS_WAVE_CTS^MDC|||{obr_7}",
    ]
    leads = [(lead, f"{MDC_LEAD_CODES[lead]}^MDC_ECG_LEAD_{lead.upper()}^MDC", row) for row, lead in enumerate(LEADS)]
    if extra_leads:  # right-sided and posterior leads some carts add; not model leads
        leads += [(name, f"0^MDC_ECG_LEAD_{name}^MDC", row) for name, row in (("V3R", 8), ("V4R", 9), ("V7", 11))]
    set_id = 0
    for index, (_, code, row) in enumerate(leads, start=1):
        sub_id = f"1.1.1.{1000 + index}"
        counts = signal_uv[row] / 2.5
        for line in (
            f"NA|{code}|{sub_id}|{na_value(counts)}|266419^MDC_DIM_MICRO_VOLT^MDC",
            f"NM|0^MDC_ATTR_SAMP_RATE^MDC|{sub_id}.1|{fs_hz}|264608^MDC_DIM_PER_SEC^MDC",
            f"NM|0^MDC_ATTR_NU_MSMT_RES^MDC|{sub_id}.2|2.5|266419^MDC_DIM_MICRO_VOLT^MDC",
        ):
            set_id += 1
            segments.append(f"OBX|{set_id}|{line}|||||R|||{obr_7}")
    return hl7_bytes(segments, "ascii")


def muse(case: str, obr_7: str, signal_uv: np.ndarray, *, version: str = "2.4") -> bytes:
    """A GE MUSE-like export: local lead codes, one rate and one resolution OBX for all leads, Latin-1 names."""
    resolution_uv = 4.88
    segments = [
        f"MSH|^~\\&|MUSE|CARDIOLOGY|AGENT|HOSP|20261120031602||ORU^R01|{case}|P|{version}||||||8859/1",
        "PID|1||0001234^^^MUSE^MR||MÜLLER^JÜRGEN||19480711|M",
        f"OBR|1|ORD-88|MUSE-{case}|93000^ECG 12-LEAD^C4|||{obr_7}|||||||||DR-7^ÆRØSKØBING^KÅRE",
        "NTE|1||Confirmed by Dr. Smith \\T\\ Dr. Jones; QT \\E\\ QTc reviewed",
        "OBX|1|NM|SAMPLE_RATE^Sample Rate^99MUSE||250|Hz|||||F",
        f"OBX|2|NM|RESOLUTION^Amplitude Resolution^99MUSE||{resolution_uv}|uV|||||F",
        "OBX|3|ST|ACQ_DEVICE^Acquisition Device^99MUSE||MAC 5500 HD||||||F",
    ]
    for index, lead in enumerate(LEADS, start=1):
        counts = signal_uv[LEADS.index(lead)] / resolution_uv
        segments.append(f"OBX|{index + 3}|NA|LEAD_{lead.upper()}^Lead {lead}^99MUSE|{index}|{na_value(counts)}||||||F")
    return hl7_bytes(segments, "latin-1")


def mortara(case: str, obr_7: str, signal_uv: np.ndarray) -> bytes:
    """A Mortara-like export: plain lead names, µV in UTF-8, a Z-segment, escapes, a base64 PDF beside the leads."""
    pdf = base64.b64encode(b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n").decode()
    segments = [
        f"MSH|^~\\&|ELI380|CARDIO^MORTARA|AGENT|HOSP|20261120031700+0100||ORU^R01^ORU_R01|{case}|P|2.5.1"
        "||||||UNICODE UTF-8",
        "PID|||A-99812^^^HOSP^MR||SMITH\\T\\JONES^ANNE^\\S\\||19700101|F",
        f"OBR|1||ELI-{case}|11524-6^EKG study^LN|||{obr_7}",
        "ZEC|1|ELI 380|firmware 2.3\\F\\rev B|filter 0.05\\T\\150 Hz",
        "NTE|1||Sinus rhythm \\X2013\\ normal ECG\\.br\\Unconfirmed",
        "OBX|1|NM|SAMPLING FREQUENCY^Sampling Frequency^L||1000|Hz|||||F",
        "OBX|2|NM|AMPLITUDE RESOLUTION^Amplitude resolution^L||1.25|µV|||||F",
        f"OBX|3|ED|PDF^ECG Report^L||^application^pdf^Base64^{pdf}||||||F",
    ]
    for index, lead in enumerate(LEADS, start=4):
        counts = signal_uv[LEADS.index(lead)] / 1.25
        segments.append(f"OBX|{index}|NA|{lead}^{lead}^L||{na_value(counts)}|µV|||||F")
    return hl7_bytes(segments, "utf-8")


def philips(case: str, obr_7: str, signal_uv: np.ndarray, *, unit: str = "µV", leads: tuple[str, ...] = LEADS) -> bytes:
    """A Philips-like export: local codes, values in OBX-6's unit, no resolution OBX, Latin-1, XML blob, Z-segment."""
    xml = base64.b64encode(b'<?xml version="1.0"?><restingecgdata><patient id="P-3"/></restingecgdata>').decode()
    segments = [
        f"MSH|^~\\&|TRACEMASTER|CARDIO|AGENT|HOSP|20261120031800||ORU^R01^ORU_R01|{case}|P|2.5||||||8859/1",
        "PID|||P-3^^^HOSP^MR||DUPONT^RENÉE||19550505|F",
        "ZPD|1|bed 4\\R\\west wing",
        f"OBR|1||TM-{case}|11524-6^EKG study^LN|||{obr_7}",
        "OBX|1|NM|SAMPLE_RATE^Sample rate^L||500|Hz|||||F",
        f"OBX|2|ED|XML^Philips XML^L||^text^xml^Base64^{xml}||||||F",
    ]
    for index, lead in enumerate(leads, start=3):
        values = np.rint(signal_uv[LEADS.index(lead)])
        segments.append(f"OBX|{index}|NA|{index - 2}^{lead}^PHILIPS-LEAD||{na_value(values)}|{unit}|||||F")
    return hl7_bytes(segments, "latin-1")


# ---------------------------------------------------------------------------------------------------- FHIR R4


def coding(system: str, code: str, display: str) -> dict:
    return {"system": system, "code": code, "display": display}


def lead_codings(lead: str, systems: tuple[str, ...]) -> list[dict]:
    by_system = {
        "mdc": coding(MDC, MDC_LEAD_CODES.get(lead, ""), f"MDC_ECG_LEAD_{lead}"),
        "loinc": coding(LOINC, LOINC_LEAD_CODES.get(lead, ""), f"Lead {lead}"),
        "snomed": coding(SNOMED, SNOMED_LEAD_CODES.get(lead, ""), f"Lead {lead}"),
    }
    return [by_system[system] for system in systems]


def sampled(values_uv: np.ndarray, fs_hz: float, *, unit: str = "uV", factor: float = 1.0, **extra: object) -> dict:
    """SampledData of ``values_uv`` as integer counts of ``factor`` in ``unit`` (uV or mV)."""
    in_unit = values_uv / 1000.0 if unit == "mV" else values_uv
    tokens = " ".join(str(int(v)) for v in np.rint(in_unit / factor))
    origin = {"value": 0, "unit": unit, "system": UCUM, "code": unit}
    return {"origin": origin, "period": 1000.0 / fs_hz, "factor": factor, "dimensions": 1, **extra, "data": tokens}


def observation(case: str, components: list[dict], effective: dict, **extra: object) -> dict:
    return {
        "resourceType": "Observation",
        "id": case,
        "meta": {"versionId": "1", "lastUpdated": "2026-11-20T09:00:00.000Z"},
        "status": "final",
        "category": [{"coding": [coding(CATEGORY, "procedure", "Procedure")]}],
        "code": {"coding": [coding(LOINC, "11524-6", "EKG study"), coding(MDC, "131328", "MDC_ECG_ELEC_POTL")]},
        "subject": {"reference": "Patient/p-1001"},
        **effective,
        **extra,
        "component": components,
    }


def twelve_leads(signal_uv: np.ndarray, fs_hz: float, systems: tuple[str, ...] = ("mdc",), **sampled_extra) -> list:
    return [
        {
            "code": {"coding": lead_codings(lead, systems)},
            "valueSampledData": sampled(signal_uv[row], fs_hz, **sampled_extra),
        }
        for row, lead in enumerate(LEADS)
    ]


def replace_data(components: list[dict], rows: range | tuple[int, ...], edit) -> list[dict]:
    """``components`` with ``edit(tokens) -> tokens`` applied to the data of the given rows."""
    for row in rows:
        value = components[row]["valueSampledData"]
        value["data"] = " ".join(edit(value["data"].split()))
    return components


def data_absent(component: dict) -> dict:
    """The lead component as a cart that did not record the lead sends it: a code and a dataAbsentReason."""
    return {
        "code": component["code"],
        "dataAbsentReason": {"coding": [coding(DATA_ABSENT, "not-performed", "Not Performed")]},
    }
