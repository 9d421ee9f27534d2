"""What the labs and vitals are: keys, MIMIC-IV item ids, units, LOINC codes, reference ranges.

Both the simulated hospital (which writes these item ids) and the default data
layout (which reads them) take their lab identities from here, so a lab key means
the same thing on both sides. A site maps its own warehouse codes onto these keys
in its layout file, not here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LabDefinition:
    """One laboratory test as MIMIC-IV ``d_labitems`` knows it, plus its LOINC code."""

    key: str
    label: str
    itemids: tuple[int, ...]
    fluid: str
    category: str
    unit: str
    loinc: str
    ref_low: float | None
    ref_high: float | None

    @property
    def itemid(self) -> int:
        """The item id the simulator writes (the first, the main chemistry/hematology one)."""
        return self.itemids[0]


_CHEM, _HEME, _BG = "Chemistry", "Hematology", "Blood Gas"

LABS: tuple[LabDefinition, ...] = (
    LabDefinition("sodium", "Sodium", (50983, 50824), "Blood", _CHEM, "mEq/L", "2951-2", 133, 145),
    LabDefinition("potassium", "Potassium", (50971, 50822), "Blood", _CHEM, "mEq/L", "2823-3", 3.3, 5.1),
    LabDefinition("chloride", "Chloride", (50902,), "Blood", _CHEM, "mEq/L", "2075-0", 96, 108),
    LabDefinition("bicarbonate", "Bicarbonate", (50882,), "Blood", _CHEM, "mEq/L", "1963-8", 22, 32),
    LabDefinition("urea_nitrogen", "Urea Nitrogen", (51006,), "Blood", _CHEM, "mg/dL", "3094-0", 6, 20),
    LabDefinition("creatinine", "Creatinine", (50912,), "Blood", _CHEM, "mg/dL", "2160-0", 0.5, 1.2),
    LabDefinition("glucose", "Glucose", (50931, 50809), "Blood", _CHEM, "mg/dL", "2345-7", 70, 100),
    LabDefinition("calcium", "Calcium, Total", (50893,), "Blood", _CHEM, "mg/dL", "17861-6", 8.4, 10.3),
    LabDefinition("magnesium", "Magnesium", (50960,), "Blood", _CHEM, "mg/dL", "19123-9", 1.6, 2.6),
    LabDefinition("phosphate", "Phosphate", (50970,), "Blood", _CHEM, "mg/dL", "2777-1", 2.7, 4.5),
    LabDefinition("albumin", "Albumin", (50862,), "Blood", _CHEM, "g/dL", "1751-7", 3.5, 5.2),
    LabDefinition("alt", "Alanine Aminotransferase (ALT)", (50861,), "Blood", _CHEM, "IU/L", "1742-6", 0, 40),
    LabDefinition("ast", "Asparate Aminotransferase (AST)", (50878,), "Blood", _CHEM, "IU/L", "1920-8", 0, 40),
    LabDefinition("alkaline_phosphatase", "Alkaline Phosphatase", (50863,), "Blood", _CHEM, "IU/L", "6768-6", 35, 105),
    LabDefinition("bilirubin_total", "Bilirubin, Total", (50885,), "Blood", _CHEM, "mg/dL", "1975-2", 0, 1.5),
    LabDefinition("crp", "C-Reactive Protein", (50889,), "Blood", _CHEM, "mg/L", "1988-5", 0, 5.0),
    LabDefinition("troponin_t", "Troponin T", (51003,), "Blood", _CHEM, "ng/mL", "6598-7", 0, 0.01),
    LabDefinition("ntprobnp", "NTproBNP", (50963,), "Blood", _CHEM, "pg/mL", "33762-6", 0, 353),
    LabDefinition("creatine_kinase", "Creatine Kinase (CK)", (50910,), "Blood", _CHEM, "IU/L", "2157-6", 39, 308),
    LabDefinition("tsh", "Thyroid Stimulating Hormone", (50993,), "Blood", _CHEM, "uIU/mL", "3016-3", 0.27, 4.2),
    LabDefinition("wbc", "White Blood Cells", (51301, 51300), "Blood", _HEME, "K/uL", "6690-2", 4.0, 11.0),
    LabDefinition("hemoglobin", "Hemoglobin", (51222, 50811), "Blood", _HEME, "g/dL", "718-7", 13.7, 17.5),
    LabDefinition("hematocrit", "Hematocrit", (51221, 50810), "Blood", _HEME, "%", "4544-3", 40, 51),
    LabDefinition("platelets", "Platelet Count", (51265,), "Blood", _HEME, "K/uL", "777-3", 150, 440),
    LabDefinition("rdw", "RDW", (51277,), "Blood", _HEME, "%", "788-0", 10.5, 15.5),
    LabDefinition("inr", "INR(PT)", (51237,), "Blood", _HEME, "", "6301-6", 0.9, 1.1),
    LabDefinition("ptt", "PTT", (51275,), "Blood", _HEME, "sec", "3173-2", 25, 36.5),
    LabDefinition("d_dimer", "D-Dimer", (51196,), "Blood", _HEME, "ng/mL FEU", "48065-7", 0, 500),
    LabDefinition("lactate", "Lactate", (50813,), "Blood", _BG, "mmol/L", "2524-7", 0.5, 2.0),
    LabDefinition("ph", "pH", (50820,), "Blood", _BG, "units", "2744-1", 7.35, 7.45),
    LabDefinition("pco2", "pCO2", (50818,), "Blood", _BG, "mm Hg", "2019-8", 35, 45),
)

LABS_BY_KEY: dict[str, LabDefinition] = {lab.key: lab for lab in LABS}


@dataclass(frozen=True, slots=True)
class VitalDefinition:
    """One ED vital sign: our key and its column in MIMIC-IV-ED ``vitalsign``."""

    key: str
    column: str
    unit: str


VITALS: tuple[VitalDefinition, ...] = (
    VitalDefinition("temperature", "temperature", "degF"),
    VitalDefinition("heart_rate", "heartrate", "bpm"),
    VitalDefinition("resp_rate", "resprate", "breaths/min"),
    VitalDefinition("o2_saturation", "o2sat", "%"),
    VitalDefinition("sbp", "sbp", "mmHg"),
    VitalDefinition("dbp", "dbp", "mmHg"),
)

#: OMR ``result_name`` values for the biometrics, and the factor to SI-ish units.
OMR_BIOMETRICS: dict[str, tuple[str, float]] = {
    "bmi": ("BMI (kg/m2)", 1.0),
    "height_cm": ("Height (Inches)", 2.54),
    "weight_kg": ("Weight (Lbs)", 0.45359237),
}

#: The five ethnicity groups of MDS-ED, and how MIMIC ``race`` strings fall into them.
ETHNICITY_GROUPS: tuple[str, ...] = ("white", "black", "hispanic", "asian", "other")


def ethnicity_group(race: str | float | None) -> str:
    """Map a MIMIC ``race`` string (``WHITE - RUSSIAN``, ``HISPANIC/LATINO - ...``) onto the five groups."""
    if not isinstance(race, str):
        return "other"
    upper = race.upper()
    for group in ("WHITE", "BLACK", "HISPANIC", "ASIAN"):
        if upper.startswith(group) or (group == "HISPANIC" and "LATINO" in upper):
            return group.lower()
    return "other"


#: ICD-10-CM titles of the diagnosis codes this project knows by name (those the simulated hospital writes).
#: A code not listed is shown by the titles of its listed children, or by itself (see ``cohort_report.icd_display``).
ICD10_TITLES: dict[str, str] = {
    "A419": "Sepsis, unspecified organism",
    "D649": "Anemia, unspecified",
    "E039": "Hypothyroidism, unspecified",
    "E0590": "Thyrotoxicosis, unspecified without thyrotoxic crisis or storm",
    "E119": "Type 2 diabetes mellitus without complications",
    "E669": "Obesity, unspecified",
    "E785": "Hyperlipidemia, unspecified",
    "E8342": "Hypomagnesemia",
    "E8351": "Hypocalcemia",
    "E8352": "Hypercalcemia",
    "E860": "Dehydration",
    "E871": "Hypo-osmolality and hyponatremia",
    "E875": "Hyperkalemia",
    "E876": "Hypokalemia",
    "F17200": "Nicotine dependence, unspecified, uncomplicated",
    "F17210": "Nicotine dependence, cigarettes, uncomplicated",
    "F329": "Major depressive disorder, single episode, unspecified",
    "I10": "Essential (primary) hypertension",
    "I2109": "ST elevation (STEMI) myocardial infarction involving other coronary artery of anterior wall",
    "I2119": "ST elevation (STEMI) myocardial infarction involving other coronary artery of inferior wall",
    "I214": "Non-ST elevation (NSTEMI) myocardial infarction",
    "I2510": "Atherosclerotic heart disease of native coronary artery without angina pectoris",
    "I252": "Old myocardial infarction",
    "I2699": "Other pulmonary embolism without acute cor pulmonale",
    "I440": "Atrioventricular block, first degree",
    "I447": "Left bundle-branch block, unspecified",
    "I4510": "Unspecified right bundle-branch block",
    "I4891": "Unspecified atrial fibrillation",
    "I509": "Heart failure, unspecified",
    "J189": "Pneumonia, unspecified organism",
    "J449": "Chronic obstructive pulmonary disease, unspecified",
    "K219": "Gastro-esophageal reflux disease without esophagitis",
    "K7030": "Alcoholic cirrhosis of liver without ascites",
    "N179": "Acute kidney failure, unspecified",
    "N183": "Chronic kidney disease, stage 3 (moderate)",
    "N184": "Chronic kidney disease, stage 4 (severe)",
    "N189": "Chronic kidney disease, unspecified",
    "N390": "Urinary tract infection, site not specified",
    "R0602": "Shortness of breath",
    "R079": "Chest pain, unspecified",
    "R55": "Syncope and collapse",
    "Z7901": "Long term (current) use of anticoagulants",
}
