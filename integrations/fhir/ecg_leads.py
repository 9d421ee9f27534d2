"""Which ECG lead a FHIR ``component.code`` names: MDC, LOINC or SNOMED CT codings.

Senders code the 12 leads with whichever terminology their interface engine maps to:

* ISO/IEEE 11073-10101 (MDC) ``MDC_ECG_LEAD_*`` codes, under the HL7 OID ``urn:oid:2.16.840.1.113883.6.24``
  or FHIR's URI ``urn:iso:std:iso:11073:10101`` (a coding without a system is read as MDC, as before);
* LOINC part codes ``LP7383-5`` … ``LP7394-2`` (the LOINC "EKG/ECG leads" value set, as published by
  HL7 Deutschland's ``EkgLeads`` value set);
* SNOMED CT lead concepts (``272729005`` Lead I … ``257480003`` Lead site V6, HL7 Deutschland's
  ``EkgAbleitungenVS`` value set).

Any other code (Frank X/Y/Z, right-sided V3R/V4R, V7, a heart rate) is not a model lead and is ignored.
"""

from __future__ import annotations

from typing import Any

MDC_SYSTEM = "urn:oid:2.16.840.1.113883.6.24"
MDC_URI_SYSTEM = "urn:iso:std:iso:11073:10101"
LOINC_SYSTEM = "http://loinc.org"
SNOMED_SYSTEM = "http://snomed.info/sct"

#: MDC lead codes (ISO/IEEE 11073-10101) for the 12 standard leads.
LEAD_BY_MDC_CODE: dict[str, str] = {
    "131329": "I", "131330": "II", "131389": "III", "131390": "aVR", "131391": "aVL", "131392": "aVF",
    "131331": "V1", "131332": "V2", "131333": "V3", "131334": "V4", "131335": "V5", "131336": "V6",
}  # fmt: skip
MDC_CODE_BY_LEAD: dict[str, str] = {lead: code for code, lead in LEAD_BY_MDC_CODE.items()}

#: LOINC part codes of the 12 leads.
LEAD_BY_LOINC_CODE: dict[str, str] = {
    "LP7386-8": "I", "LP7387-6": "II", "LP7388-4": "III", "LP7385-0": "aVR", "LP7384-3": "aVL", "LP7383-5": "aVF",
    "LP7389-2": "V1", "LP7390-0": "V2", "LP7391-8": "V3", "LP7392-6": "V4", "LP7393-4": "V5", "LP7394-2": "V6",
}  # fmt: skip

#: SNOMED CT concepts of the 12 leads.
LEAD_BY_SNOMED_CODE: dict[str, str] = {
    "272729005": "I", "272730000": "II", "272731001": "III", "257474006": "aVR", "257473000": "aVL",
    "257472005": "aVF", "257475007": "V1", "257476008": "V2", "257477004": "V3", "257478009": "V4",
    "257479001": "V5", "257480003": "V6",
}  # fmt: skip

_LEADS_BY_SYSTEM: dict[str | None, dict[str, str]] = {
    None: LEAD_BY_MDC_CODE,
    MDC_SYSTEM: LEAD_BY_MDC_CODE,
    MDC_URI_SYSTEM: LEAD_BY_MDC_CODE,
    LOINC_SYSTEM: LEAD_BY_LOINC_CODE,
    SNOMED_SYSTEM: LEAD_BY_SNOMED_CODE,
}


def lead_of_component(component: Any) -> str | None:
    """Our lead name for a component whose code has an MDC, LOINC or SNOMED CT lead coding; else None."""
    if not isinstance(component, dict):
        return None
    codings = (component.get("code") or {}).get("coding") or ()
    for coding in codings if isinstance(codings, list) else ():
        leads = _LEADS_BY_SYSTEM.get(coding.get("system")) if isinstance(coding, dict) else None
        if leads is not None and coding.get("code") in leads:
            return leads[coding["code"]]
    return None
