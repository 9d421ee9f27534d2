"""The simulated hospital's physiology: the ONE table that couples conditions, labs, vitals and the ECG.

Everything the simulator knows about disease lives here, so changing a coupling is
a one-line diff with its reason beside it (a published figure where one exists).
Its effect sizes are calibrated with ``ecg-train calibrate`` against what a deep
ECG-only model reaches on real MIMIC-IV-ECG ED data (``reference/``).

How to read it:

* :data:`LAB_PHYSIOLOGY` gives each lab's healthy distribution (median and spread,
  on a log scale for skewed labs) and how often an ED orders it.
* Each :class:`Condition` raises its own log-odds with age, sex and earlier
  conditions (comorbidity), shifts labs by ``lab_shifts_sd`` healthy standard
  deviations, shifts vitals in their own units, and changes ECG parameters
  (:class:`EcgEffects` names): ``ecg`` holds the weak, distributed traces every
  patient with the condition carries (rate, QT, voltage, axis), ``sign`` the textbook
  sign that only ``sign_penetrance`` of them show (LVH in a quarter of hypertensives,
  AF on the tracing in two thirds of patients coded with AF). Every shift is
  multiplied by a per-patient severity (log-normal around 1). A condition's ICD-10
  code is written with probability ``coding_sensitivity`` (ED coding misses diagnoses).
* Age and sex shape the ECG strongly (:func:`demographic_ecg_effects`), so every
  condition that depends on them is partly visible, as on real ECGs.
* :func:`lab_driven_ecg_effects` is the other direction of coupling: electrolytes,
  hemoglobin and temperature act on the ECG through their *values*, not through a
  diagnosis code. Hyperkalemia is visible because potassium is high, whether or not
  anyone coded E87.5.
* ``visibility`` documents what we expect the ECG alone to show; the cohort report
  measures it (logistic regression on ECG features versus on clinical features).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from types import MappingProxyType

import numpy as np

from model_training.data.catalogue import ICD10_TITLES


class Visibility(StrEnum):
    VISIBLE = "visible"  # a cardiologist would read it off the tracing
    PARTIAL = "partial"  # through weak or indirect traces (rate, QT, voltage, axis, an electrolyte)
    INVISIBLE = "invisible"  # no ECG effect of its own; only age, sex and comorbidity give it away


@dataclass(frozen=True, slots=True)
class LabPhysiology:
    """A lab's healthy adult distribution (60-year-old man) and how often an ED orders it."""

    median: float
    spread: float  # standard deviation, on the log scale when ``log_scale``
    log_scale: bool
    panel: str
    decimals: int
    female_shift_sd: float = 0.0
    age_shift_sd_per_decade: float = 0.0


LAB_PHYSIOLOGY: Mapping[str, LabPhysiology] = MappingProxyType({
    "sodium": LabPhysiology(139.0, 2.3, False, "bmp", 0),
    "potassium": LabPhysiology(4.15, 0.33, False, "bmp", 1),
    "chloride": LabPhysiology(102.0, 3.0, False, "bmp", 0),
    "bicarbonate": LabPhysiology(26.0, 2.5, False, "bmp", 0),
    "urea_nitrogen": LabPhysiology(14.0, 0.30, True, "bmp", 0, -0.3, 0.15),
    "creatinine": LabPhysiology(0.9, 0.20, True, "bmp", 1, -0.8, 0.15),
    "glucose": LabPhysiology(105.0, 0.20, True, "bmp", 0, 0.0, 0.1),
    "calcium": LabPhysiology(9.35, 0.38, False, "bmp", 1),
    "magnesium": LabPhysiology(2.0, 0.17, False, "magnesium", 1),
    "phosphate": LabPhysiology(3.5, 0.45, False, "phosphate", 1),
    "albumin": LabPhysiology(4.1, 0.32, False, "lft", 1, 0.0, -0.15),
    "alt": LabPhysiology(22.0, 0.45, True, "lft", 0, -0.4),
    "ast": LabPhysiology(24.0, 0.40, True, "lft", 0, -0.3),
    "alkaline_phosphatase": LabPhysiology(75.0, 0.28, True, "lft", 0),
    "bilirubin_total": LabPhysiology(0.5, 0.45, True, "lft", 1, -0.3),
    "crp": LabPhysiology(3.0, 0.9, True, "crp", 1),
    "troponin_t": LabPhysiology(0.005, 0.5, True, "troponin", 2, -0.3, 0.2),
    "ntprobnp": LabPhysiology(120.0, 1.0, True, "ntprobnp", 0, 0.2, 0.35),
    "creatine_kinase": LabPhysiology(110.0, 0.5, True, "ck", 0, -0.5),
    "tsh": LabPhysiology(1.6, 0.5, True, "tsh", 2),
    "wbc": LabPhysiology(8.0, 0.25, True, "cbc", 1),
    "hemoglobin": LabPhysiology(14.6, 1.2, False, "cbc", 1, -1.4, -0.15),
    "hematocrit": LabPhysiology(43.5, 3.6, False, "cbc", 1, -1.4, -0.15),
    "platelets": LabPhysiology(250.0, 0.25, True, "cbc", 0),
    "rdw": LabPhysiology(13.5, 0.9, False, "cbc", 1, 0.0, 0.2),
    "inr": LabPhysiology(1.0, 0.06, False, "coag", 1),
    "ptt": LabPhysiology(30.0, 2.8, False, "coag", 1),
    "d_dimer": LabPhysiology(350.0, 0.6, True, "d_dimer", 0, 0.0, 0.25),
    "lactate": LabPhysiology(1.4, 0.3, True, "lactate", 1),
    "ph": LabPhysiology(7.40, 0.025, False, "blood_gas", 2),
    "pco2": LabPhysiology(40.0, 3.5, False, "blood_gas", 0),
})  # fmt: skip

#: P(a panel is ordered) at an ED visit when no condition raises suspicion.
PANEL_ORDER_PROBABILITY: Mapping[str, float] = MappingProxyType({
    "bmp": 0.82, "cbc": 0.82, "magnesium": 0.45, "phosphate": 0.35, "lft": 0.40, "coag": 0.35,
    "troponin": 0.55, "ck": 0.15, "ntprobnp": 0.20, "crp": 0.18, "lactate": 0.25, "blood_gas": 0.12,
    "tsh": 0.08, "d_dimer": 0.06,
})  # fmt: skip

#: A condition that shifts a lab by at least this many SDs makes clinicians order that
#: lab's panel with :data:`SUSPICION_ORDER_PROBABILITY`: missingness is informative.
SUSPICION_SHIFT_SD = 1.5
SUSPICION_ORDER_PROBABILITY = 0.7


@dataclass(frozen=True, slots=True)
class VitalPhysiology:
    """A vital's healthy ED distribution (its MIMIC-IV-ED unit) and per-measurement noise."""

    mean: float
    sd: float
    measurement_noise: float
    low: float
    high: float


VITAL_PHYSIOLOGY: Mapping[str, VitalPhysiology] = MappingProxyType({
    "temperature": VitalPhysiology(98.1, 0.6, 0.3, 93.0, 106.0),
    "heart_rate": VitalPhysiology(0.0, 0.0, 5.0, 25.0, 220.0),  # follows the ECG heart rate
    "resp_rate": VitalPhysiology(17.0, 2.0, 1.5, 6.0, 50.0),
    "o2_saturation": VitalPhysiology(98.0, 1.3, 1.0, 60.0, 100.0),
    "sbp": VitalPhysiology(128.0, 17.0, 6.0, 60.0, 240.0),
    "dbp": VitalPhysiology(77.0, 10.0, 5.0, 30.0, 140.0),
})  # fmt: skip

#: Systolic pressure rises with age (mmHg per decade over 50).
SBP_PER_DECADE = 5.0


@dataclass(frozen=True, slots=True)
class EcgEffects:
    """Changes to a patient's ECG parameters. Sums of effects are applied to the baseline.

    Units: ms for intervals, bpm, degrees, mV, and natural-log factors for amplitudes
    (``t_amp_log = 0.7`` doubles the T wave). Flags count as present above 0.5.
    """

    hr_bpm: float = 0.0
    pr_ms: float = 0.0
    qrs_ms: float = 0.0
    qtc_ms: float = 0.0
    axis_deg: float = 0.0
    qrs_amp_log: float = 0.0
    p_amp_log: float = 0.0
    t_amp_log: float = 0.0
    t_width_log: float = 0.0
    u_amp_mv: float = 0.0
    lvh: float = 0.0
    st_anterior_mv: float = 0.0
    st_inferior_mv: float = 0.0
    st_lateral_mv: float = 0.0
    st_diffuse_mv: float = 0.0
    q_anterior_mv: float = 0.0
    q_inferior_mv: float = 0.0
    t_inv_anterior: float = 0.0
    t_inv_inferior: float = 0.0
    t_inv_lateral: float = 0.0
    af: float = 0.0
    lbbb: float = 0.0
    rbbb: float = 0.0
    s1q3t3: float = 0.0

    FLAGS = ("af", "lbbb", "rbbb", "s1q3t3")

    def __add__(self, other: EcgEffects) -> EcgEffects:
        return EcgEffects(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def scaled(self, severity: float) -> EcgEffects:
        """Graded effects times ``severity``; flags stay as they are (a block is there or not)."""
        return EcgEffects(
            **{f.name: getattr(self, f.name) * (1.0 if f.name in self.FLAGS else severity) for f in fields(self)}
        )

    def has(self, flag: str) -> bool:
        return getattr(self, flag) > 0.5


@dataclass(frozen=True, slots=True)
class ReferenceEcg:
    """A healthy 50-year-old man's ECG at rest in the ED; :class:`EcgEffects` add to it."""

    hr_bpm: float = 76.0
    pr_ms: float = 155.0
    qrs_ms: float = 90.0
    qtc_ms: float = 405.0
    axis_deg: float = 35.0  # of the dipole in Frank space; the lead-derived axis reads near +50°
    r_amp_mv: float = 1.3
    p_amp_mv: float = 0.14
    t_amp_mv: float = 0.45
    u_amp_mv: float = 0.03


REFERENCE_ECG = ReferenceEcg()


def demographic_ecg_effects(age_y: float, female: bool, individual_z: np.ndarray) -> EcgEffects:
    """Age and sex on the ECG, plus healthy person-to-person spread (``individual_z``: 7 standard normals).

    The ECG encodes both strongly: a deep network reads sex with AUROC 0.97 and age within
    about 7 years (Attia et al., Circ Arrhythm Electrophysiol 2019). Age lengthens PR,
    QRS and QTc, moves the axis left and lowers QRS and T voltage; women have a longer
    QTc, a narrower QRS and lower QRS and T voltage (breast tissue, smaller hearts).
    Every condition that depends on age or sex therefore leaves a trace on the ECG.
    """
    decades = (age_y - 50.0) / 10.0
    z = individual_z
    return EcgEffects(
        hr_bpm=16.0 * z[0],  # ED resting rates vary widely (pain, anxiety, drugs), not only by disease
        pr_ms=8.0 * decades + 18.0 * z[1],
        qrs_ms=2.0 * decades - 8.0 * female + 7.0 * z[2],
        qtc_ms=14.0 * female + 4.0 * decades + 15.0 * z[3],
        axis_deg=-8.0 * decades + 22.0 * z[4],
        qrs_amp_log=-0.06 * decades - 0.2 * female + 0.2 * z[5],
        t_amp_log=-0.06 * decades - 0.2 * female + 0.2 * z[6],
    )


@dataclass(frozen=True, slots=True)
class Variant:
    """A coded form of a condition (e.g. anterior vs inferior STEMI) with its own ECG effects."""

    icd10: str
    weight: float = 1.0
    ecg: EcgEffects = EcgEffects()
    scales_with_severity: bool = True

    @property
    def display(self) -> str:
        return ICD10_TITLES[self.icd10]


@dataclass(frozen=True, slots=True)
class Condition:
    key: str
    variants: tuple[Variant, ...]
    prevalence_at_60: float
    visibility: Visibility
    rationale: str
    age_log_or_per_decade: float = 0.0
    female_log_or: float = 0.0
    comorbid_log_or: Mapping[str, float] = field(default_factory=dict)
    lab_shifts_sd: Mapping[str, float] = field(default_factory=dict)
    vital_shifts: Mapping[str, float] = field(default_factory=dict)
    bmi_shift: float = 0.0
    ecg: EcgEffects = EcgEffects()  # weak, distributed traces every patient with the condition carries
    sign: EcgEffects = EcgEffects()  # the textbook sign, shown by only ``sign_penetrance`` of the patients
    sign_penetrance: float = 1.0
    coding_sensitivity: float = 0.85
    chronic: bool = False  # drawn once per patient and kept for every later visit
    orders_panels: tuple[str, ...] = ()  # panels clinicians order when they suspect it

    def ordered_panels(self) -> set[str]:
        """Panels ordered on suspicion: those named, and those of labs it shifts by ≥ 1.5 SD."""
        return {
            LAB_PHYSIOLOGY[lab].panel for lab, sd in self.lab_shifts_sd.items() if abs(sd) >= SUSPICION_SHIFT_SD
        } | set(self.orders_panels)


def _single(icd10: str) -> tuple[Variant, ...]:
    return (Variant(icd10),)


_V = Visibility
#: Ordered: a condition's comorbidities must come before it.
CONDITIONS: tuple[Condition, ...] = (
    Condition(
        "obesity", _single("E669"), 0.22, _V.PARTIAL,
        "Adipose tissue between heart and electrodes lowers voltage, a high diaphragm turns the axis left, T waves "
        "flatten inferolaterally and the resting rate is higher (deep-ECG obesity detection, e.g. AUROC ~0.8).",
        female_log_or=0.1, bmi_shift=9.0, vital_shifts={"sbp": 5.0},
        ecg=EcgEffects(qrs_amp_log=-0.4, axis_deg=-35.0, t_amp_log=-0.2, hr_bpm=6.0), coding_sensitivity=0.35,
        chronic=True,
    ),
    Condition(
        "smoker",
        (Variant("F17210", 0.4, EcgEffects(hr_bpm=15.0, t_amp_log=-0.2, p_amp_log=0.12)),
         Variant("F17200", 0.6, EcgEffects(hr_bpm=11.0, t_amp_log=-0.13))),
        0.20, _V.PARTIAL,
        "Young, mostly male. Current cigarette smokers (F17.210) carry nicotine's sympathetic tachycardia and flatter "
        "T waves; an unspecified nicotine dependence (F17.200) is often a lighter or past habit, with less of both.",
        age_log_or_per_decade=-0.45, female_log_or=-0.7, lab_shifts_sd={"hemoglobin": 0.3, "wbc": 0.3},
        coding_sensitivity=0.5, chronic=True,
    ),
    Condition(
        "hypertension", _single("I10"), 0.38, _V.PARTIAL,
        "Pressure overload. ECG voltage criteria for LVH are met by only a fifth to a quarter of hypertensives "
        "(Sokolow-Lyon sensitivity 20-30 %, lower in treated ED patients); the rest is age.",
        age_log_or_per_decade=0.45, female_log_or=-0.1, comorbid_log_or={"obesity": 0.8},
        vital_shifts={"sbp": 22.0, "dbp": 10.0}, sign=EcgEffects(lvh=0.35), sign_penetrance=0.22, chronic=True,
    ),
    Condition(
        "diabetes", _single("E119"), 0.18, _V.PARTIAL,
        "Cardiac autonomic neuropathy raises the resting rate and lengthens QTc; subclinical myocardial disease "
        "flattens T (deep-ECG type 2 diabetes detection AUROC 0.76-0.82, Kim et al. 2024).",
        age_log_or_per_decade=0.3, comorbid_log_or={"obesity": 0.9}, lab_shifts_sd={"glucose": 1.8},
        ecg=EcgEffects(hr_bpm=7.0, qtc_ms=12.0, t_amp_log=-0.09), chronic=True,
    ),
    Condition(
        "hyperlipidemia", _single("E785"), 0.25, _V.INVISIBLE,
        "Lipids are not in the ED panel and leave no trace on the ECG: only age, sex and comorbidity give it away.",
        age_log_or_per_decade=0.6, female_log_or=-0.3, comorbid_log_or={"diabetes": 0.5, "obesity": 0.3,
                                                                        "hypertension": 0.5},
        coding_sensitivity=0.75, chronic=True,
    ),
    Condition(
        "ckd",
        (Variant("N183", 0.36), Variant("N184", 0.12, EcgEffects(lvh=0.2, hr_bpm=3.0)), Variant("N189", 0.52)),
        0.05, _V.PARTIAL,
        "Raises creatinine and urea; indirectly raises potassium a little (most stage-3 patients are normokalemic) "
        "and lowers hemoglobin; LVH in some, more often in stage 4 (LVH prevalence rises as eGFR falls, CRIC, Park "
        "et al., J Am Soc Nephrol 2012) with its deeper anemia "
        "(deep-ECG CKD detection AUROC 0.71-0.77, Holmstrom et al. 2023). The stages are coded in the shares of the "
        "published test fold: unspecified 52 %, stage 3 36 %, stage 4 12 %.",
        age_log_or_per_decade=0.5, comorbid_log_or={"hypertension": 1.0, "diabetes": 1.0},
        lab_shifts_sd={"creatinine": 3.5, "urea_nitrogen": 3.0, "potassium": 0.4, "hemoglobin": -0.8,
                       "phosphate": 1.5, "bicarbonate": -1.0, "calcium": -0.6},
        sign=EcgEffects(lvh=0.3), sign_penetrance=0.25, coding_sensitivity=0.8, chronic=True,
    ),
    Condition(
        "cad", _single("I2510"), 0.10, _V.PARTIAL,
        "Stable coronary disease: old, male; nonspecific T flattening and slight lateral ST depression in some.",
        age_log_or_per_decade=0.55, female_log_or=-0.6,
        comorbid_log_or={"hypertension": 0.6, "diabetes": 0.6, "hyperlipidemia": 0.8, "smoker": 0.6},
        lab_shifts_sd={"troponin_t": 0.4}, sign=EcgEffects(t_amp_log=-0.15, st_lateral_mv=-0.03),
        sign_penetrance=0.4, coding_sensitivity=0.8, chronic=True,
    ),
    Condition(
        "old_mi",
        (Variant("I252", 0.17, EcgEffects(q_anterior_mv=0.35, t_inv_anterior=0.4)),
         Variant("I252", 0.17, EcgEffects(q_inferior_mv=0.3, t_inv_inferior=0.4)),
         Variant("I252", 0.66)), 0.01, _V.PARTIAL,
        "Scar: pathological Q waves and T inversion in the infarct territory in about a third; non-Q infarcts and "
        "Q-wave regression leave the rest with flatter T waves only.",
        comorbid_log_or={"cad": 3.0}, ecg=EcgEffects(t_amp_log=-0.08), coding_sensitivity=0.7, chronic=True,
    ),
    Condition(
        "heart_failure", _single("I509"), 0.025, _V.PARTIAL,
        "NT-proBNP high; on the ECG low voltage, LVH, tachycardia and raised AF/LBBB risk (LVEF <= 35 % is read "
        "off the ECG with AUROC 0.93, Attia et al. 2019).",
        age_log_or_per_decade=0.6,
        comorbid_log_or={"cad": 1.3, "hypertension": 0.7, "old_mi": 1.2, "ckd": 0.7, "diabetes": 0.4},
        lab_shifts_sd={"ntprobnp": 3.2, "sodium": -0.6, "creatinine": 0.6, "urea_nitrogen": 0.6,
                       "troponin_t": 0.8},
        vital_shifts={"resp_rate": 3.0, "o2_saturation": -2.0},
        ecg=EcgEffects(hr_bpm=2.0, qrs_amp_log=-0.08, lvh=0.08, qrs_ms=2.0), chronic=True,
        orders_panels=("troponin",),
    ),
    Condition(
        "hyperthyroidism", _single("E0590"), 0.004, _V.PARTIAL,
        "TSH suppressed and AF risk; most coded patients are on treatment, so the sinus rate is only a little "
        "faster than in their peers.",
        female_log_or=1.2, lab_shifts_sd={"tsh": -3.0}, vital_shifts={"temperature": 0.3},
        ecg=EcgEffects(hr_bpm=9.0), coding_sensitivity=0.8, chronic=True,
    ),
    Condition(
        "hypothyroidism", _single("E039"), 0.045, _V.PARTIAL,
        "Bradycardia and low voltage when untreated; most coded patients take levothyroxine, so TSH is only "
        "modestly raised on average and the ECG signs are mild.",
        age_log_or_per_decade=0.3, female_log_or=1.3, lab_shifts_sd={"tsh": 1.8},
        ecg=EcgEffects(hr_bpm=-6.0, qrs_amp_log=-0.1), chronic=True,
    ),
    Condition(
        "copd", _single("J449"), 0.07, _V.PARTIAL,
        "Hyperinflation: in about one in eight (mostly severe disease) the full picture (right axis, low voltage, P "
        "pulmonale); in all a slightly faster rate and a more vertical axis; CO2 retention in some.",
        age_log_or_per_decade=0.4, comorbid_log_or={"smoker": 1.8},
        lab_shifts_sd={"pco2": 1.5, "ph": -0.3}, vital_shifts={"o2_saturation": -3.0, "resp_rate": 3.0},
        ecg=EcgEffects(hr_bpm=3.0, axis_deg=3.0, p_amp_log=0.03), coding_sensitivity=0.8,
        sign=EcgEffects(axis_deg=30.0, qrs_amp_log=-0.2, p_amp_log=0.35), sign_penetrance=0.13, chronic=True,
    ),
    Condition(
        "atrial_fibrillation", _single("I4891"), 0.04, _V.VISIBLE,
        "No P waves, irregularly irregular RR, fibrillatory baseline, a fast ventricular rate. About half are in "
        "sinus rhythm at the ED ECG (paroxysmal AF) and show only mild atrial enlargement: a slightly larger P and "
        "longer PR (deep-ECG detection of paroxysmal AF from sinus rhythm AUROC 0.87, Attia et al., Lancet 2019).",
        age_log_or_per_decade=0.75,
        comorbid_log_or={"heart_failure": 1.6, "hyperthyroidism": 1.8, "hypertension": 0.5, "copd": 0.5,
                         "obesity": 0.3},
        ecg=EcgEffects(p_amp_log=0.08, pr_ms=6.0), sign=EcgEffects(af=1.0, hr_bpm=18.0), sign_penetrance=0.52,
        coding_sensitivity=0.85, chronic=True, orders_panels=("tsh", "magnesium", "coag"),
    ),
    Condition(
        "anticoagulation", _single("Z7901"), 0.01, _V.PARTIAL,
        "Warfarin raises INR, direct oral anticoagulants (now most prescriptions) barely do; no ECG sign of its "
        "own, but it travels with AF and venous thromboembolism.",
        age_log_or_per_decade=0.3, comorbid_log_or={"atrial_fibrillation": 3.0},
        lab_shifts_sd={"inr": 2.5, "ptt": 0.7}, coding_sensitivity=0.7, chronic=True,
    ),
    Condition(
        "acute_mi",
        (Variant("I2109", 0.15, EcgEffects(st_anterior_mv=0.30, t_amp_log=0.2)),
         Variant("I2119", 0.15, EcgEffects(st_inferior_mv=0.25, t_amp_log=0.1)),
         Variant("I214", 0.28, EcgEffects(st_lateral_mv=-0.06, st_inferior_mv=-0.03, t_inv_lateral=0.35)),
         Variant("I214", 0.42)),
        0.012, _V.PARTIAL,
        "Troponin high. STEMI (30 % of infarcts): ST elevation in the territory with reciprocal depression; NSTEMI: "
        "ST depression or T inversion in about 40 %, a nondiagnostic ECG in the rest.",
        age_log_or_per_decade=0.45, female_log_or=-0.4,
        comorbid_log_or={"cad": 1.8, "smoker": 0.5, "diabetes": 0.4},
        lab_shifts_sd={"troponin_t": 5.0, "creatine_kinase": 2.0, "wbc": 0.7, "glucose": 0.6},
        ecg=EcgEffects(hr_bpm=6.0), coding_sensitivity=0.95, orders_panels=("troponin", "ck"),
    ),
    Condition(
        "pulmonary_embolism",
        (Variant("I2699", 0.7),
         Variant("I2699", 0.15, EcgEffects(s1q3t3=1.0, t_inv_anterior=0.3), scales_with_severity=False),
         Variant("I2699", 0.15, EcgEffects(rbbb=1.0), scales_with_severity=False)),
        0.012, _V.PARTIAL,
        "D-dimer high; sinus tachycardia, sometimes S1Q3T3 or a new RBBB (right heart strain); most ECGs are "
        "unremarkable apart from the rate.",
        age_log_or_per_decade=0.2, comorbid_log_or={"obesity": 0.4},
        lab_shifts_sd={"d_dimer": 3.0, "troponin_t": 1.0, "ntprobnp": 1.0},
        vital_shifts={"o2_saturation": -4.0, "resp_rate": 5.0},
        ecg=EcgEffects(hr_bpm=15.0, axis_deg=10.0), coding_sensitivity=0.95,
        orders_panels=("troponin", "ntprobnp", "blood_gas"),
    ),
    Condition(
        "sepsis", _single("A419"), 0.03, _V.PARTIAL,
        "Inflammation and hypoperfusion: WBC, CRP, lactate, fever; on the ECG sinus tachycardia and low voltage.",
        age_log_or_per_decade=0.4, comorbid_log_or={"diabetes": 0.4, "ckd": 0.5},
        lab_shifts_sd={"wbc": 2.5, "crp": 3.0, "lactate": 2.5, "albumin": -1.5, "platelets": -1.0,
                       "creatinine": 1.0, "bicarbonate": -1.0},
        vital_shifts={"temperature": 2.5, "resp_rate": 7.0, "sbp": -18.0, "dbp": -10.0, "o2_saturation": -3.0},
        ecg=EcgEffects(hr_bpm=20.0, qrs_amp_log=-0.1), coding_sensitivity=0.9,
        orders_panels=("lactate", "blood_gas", "crp", "lft", "coag"),
    ),
    Condition(
        "pneumonia", _single("J189"), 0.05, _V.PARTIAL,
        "Infection: WBC, CRP, fever, hypoxia; sinus tachycardia only.",
        age_log_or_per_decade=0.35, comorbid_log_or={"copd": 1.1, "smoker": 0.4},
        lab_shifts_sd={"wbc": 1.8, "crp": 2.5, "lactate": 0.8},
        vital_shifts={"temperature": 1.5, "resp_rate": 5.0, "o2_saturation": -4.0},
        ecg=EcgEffects(hr_bpm=8.0), orders_panels=("crp", "lactate"),
    ),
    Condition(
        "uti", _single("N390"), 0.06, _V.PARTIAL,
        "Mostly older women; mild inflammation with a low-grade fever and a slightly faster rate.",
        age_log_or_per_decade=0.4, female_log_or=1.4, lab_shifts_sd={"wbc": 1.0, "crp": 1.5},
        vital_shifts={"temperature": 1.0}, ecg=EcgEffects(hr_bpm=6.0),
    ),
    Condition(
        "aki", _single("N179"), 0.025, _V.PARTIAL,
        "Creatinine and urea rise; the ECG changes if potassium follows, and the volume depletion or illness "
        "behind most ED kidney injury raises the rate a little.",
        age_log_or_per_decade=0.4, comorbid_log_or={"ckd": 1.3, "sepsis": 1.8, "heart_failure": 0.8},
        lab_shifts_sd={"creatinine": 3.0, "urea_nitrogen": 2.5, "potassium": 1.2, "bicarbonate": -1.0,
                       "phosphate": 1.0}, ecg=EcgEffects(hr_bpm=4.0),
    ),
    Condition(
        "liver_disease", _single("K7030"), 0.03, _V.PARTIAL,
        "Transaminases, bilirubin, INR up, albumin and platelets down. Cirrhotic cardiomyopathy lengthens QTc in about "
        "half, the hyperdynamic circulation raises the rate, and voltage is low (deep-ECG cirrhosis detection AUROC "
        "0.91, Ahn et al. 2022). Mostly men in middle age.",
        female_log_or=-0.8,
        lab_shifts_sd={"alt": 1.5, "ast": 2.2, "bilirubin_total": 2.4, "albumin": -1.6, "inr": 1.6,
                       "platelets": -1.6, "alkaline_phosphatase": 1.2},
        ecg=EcgEffects(hr_bpm=22.0, qtc_ms=55.0, qrs_amp_log=-0.3, t_amp_log=-0.25), chronic=True,
    ),
    Condition(
        "anemia", _single("D649"), 0.07, _V.PARTIAL,
        "Low hemoglobin; a compensatory sinus tachycardia and a higher QRS voltage, partly through the value (deep-ECG "
        "detection of Hb <= 10 g/dL AUROC ~0.9, Kwon et al. 2020).",
        age_log_or_per_decade=0.3, female_log_or=0.5, comorbid_log_or={"ckd": 1.3, "liver_disease": 0.8},
        lab_shifts_sd={"hemoglobin": -2.6, "rdw": 1.5}, ecg=EcgEffects(hr_bpm=5.0, qrs_amp_log=0.05),
        coding_sensitivity=0.6, chronic=True,
    ),
    Condition(
        "dehydration", _single("E860"), 0.04, _V.PARTIAL,
        "Prerenal azotemia and hemoconcentration; tachycardia.",
        age_log_or_per_decade=0.4,
        lab_shifts_sd={"urea_nitrogen": 1.8, "creatinine": 0.8, "sodium": 1.0, "hemoglobin": 0.6},
        vital_shifts={"sbp": -8.0}, ecg=EcgEffects(hr_bpm=7.0), coding_sensitivity=0.6,
    ),
    Condition(
        "hyperkalemia", _single("E875"), 0.006, _V.PARTIAL,
        "Potassium high; peaked T, long PR, flat P and wide QRS follow from the value (lab coupling). Often treated "
        "before the ECG, so many coded patients are only mildly hyperkalemic (deep-ECG AUROC 0.85-0.90, Galloway "
        "et al. 2019).",
        comorbid_log_or={"ckd": 2.0, "aki": 2.5, "diabetes": 0.4, "heart_failure": 0.6},
        lab_shifts_sd={"potassium": 3.3}, coding_sensitivity=0.7,
    ),
    Condition(
        "hypokalemia", _single("E876"), 0.04, _V.PARTIAL,
        "Potassium low; flat T, U waves, ST depression, long QT(U) follow from the value. Most coded hypokalemia "
        "in the ED is mild (3.0-3.4 mmol/L), where the ECG changes are subtle.",
        female_log_or=0.3, lab_shifts_sd={"potassium": -2.4}, coding_sensitivity=0.6,
    ),
    Condition(
        "hyponatremia", _single("E871"), 0.04, _V.PARTIAL,
        "Sodium has no ECG signature of its own, but hyponatremia comes with old age, heart failure, cirrhosis and "
        "thiazides (hypokalemia): the ECG shows those.",
        age_log_or_per_decade=0.5, comorbid_log_or={"heart_failure": 1.0, "liver_disease": 1.2, "hypokalemia": 0.8},
        lab_shifts_sd={"sodium": -3.2}, ecg=EcgEffects(hr_bpm=4.0), coding_sensitivity=0.7,
    ),
    Condition(
        "hypocalcemia", _single("E8351"), 0.01, _V.PARTIAL,
        "Calcium low; a long ST segment and QT follow from the value. In the ED it is mostly secondary to acute "
        "illness (sepsis, pancreatitis, renal failure, low magnesium) in older patients, with the faster rate of "
        "that illness.",
        age_log_or_per_decade=0.3, comorbid_log_or={"ckd": 1.2, "sepsis": 0.8}, lab_shifts_sd={"calcium": -3.3},
        ecg=EcgEffects(hr_bpm=6.0), coding_sensitivity=0.5,
    ),
    Condition(
        "hypercalcemia", _single("E8352"), 0.006, _V.PARTIAL,
        "Calcium high; a short QT follows from the value. Inpatient hypercalcemia is mostly of malignancy or "
        "primary hyperparathyroidism (older, women two to three times as often, renal disease), with the "
        "volume depletion of its polyuria raising the rate.",
        age_log_or_per_decade=0.4, female_log_or=0.8, comorbid_log_or={"ckd": 0.8},
        lab_shifts_sd={"calcium": 3.1}, ecg=EcgEffects(hr_bpm=3.0), coding_sensitivity=0.6,
    ),
    Condition(
        "hypomagnesemia", _single("E8342"), 0.02, _V.PARTIAL,
        "Magnesium low, with the renal potassium and calcium wasting it causes; travels with alcohol use, "
        "hypokalemia and diuretics. QT prolongation and T flattening follow from the values.",
        comorbid_log_or={"liver_disease": 1.5, "hypokalemia": 2.0, "hypocalcemia": 1.0},
        lab_shifts_sd={"magnesium": -3.0, "potassium": -1.0, "calcium": -0.5},
        ecg=EcgEffects(hr_bpm=4.0, qtc_ms=4.0),
        coding_sensitivity=0.5,
    ),
    Condition(
        "lbbb", _single("I447"), 0.008, _V.VISIBLE,
        "Conduction disease: QRS >= 120 ms, broad notched R laterally, discordant ST-T; rate-dependent in a few.",
        age_log_or_per_decade=0.5, comorbid_log_or={"heart_failure": 2.0, "cad": 0.7, "hypertension": 0.4},
        sign=EcgEffects(lbbb=1.0), sign_penetrance=0.95, coding_sensitivity=0.6, chronic=True,
    ),
    Condition(
        "rbbb", _single("I4510"), 0.015, _V.VISIBLE,
        "Conduction disease: rSR' in V1, wide S in I and V6; intermittent in a few.",
        age_log_or_per_decade=0.5, comorbid_log_or={"copd": 0.6}, sign=EcgEffects(rbbb=1.0), sign_penetrance=0.9,
        coding_sensitivity=0.6, chronic=True,
    ),
    Condition(
        "av_block_1", _single("I440"), 0.02, _V.VISIBLE,
        "PR interval over 200 ms; most coded patients sit between 200 and 260 ms.",
        age_log_or_per_decade=0.5, ecg=EcgEffects(pr_ms=80.0), coding_sensitivity=0.5, chronic=True,
    ),
    Condition(
        "chest_pain", _single("R079"), 0.15, _V.PARTIAL,
        "A presenting symptom, mostly of younger, anxious patients (a faster rate); follows acute MI, CAD and PE.",
        age_log_or_per_decade=-0.5, comorbid_log_or={"acute_mi": 1.5, "cad": 0.6, "pulmonary_embolism": 1.0},
        ecg=EcgEffects(hr_bpm=7.0), coding_sensitivity=0.9, orders_panels=("troponin", "ck", "d_dimer"),
    ),
    Condition(
        "syncope", _single("R55"), 0.04, _V.PARTIAL,
        "A presenting symptom of the old, a little more likely with conduction disease, AF, dehydration and a long "
        "QT (drugs).",
        age_log_or_per_decade=0.4,
        comorbid_log_or={"av_block_1": 0.9, "atrial_fibrillation": 0.5, "dehydration": 0.8, "lbbb": 0.8},
        ecg=EcgEffects(qtc_ms=3.0, hr_bpm=-2.0), coding_sensitivity=0.9, orders_panels=("troponin", "magnesium"),
    ),
    Condition(
        "dyspnea", _single("R0602"), 0.06, _V.PARTIAL,
        "A presenting symptom of heart failure, COPD, PE and pneumonia.",
        comorbid_log_or={"heart_failure": 1.2, "copd": 1.2, "pulmonary_embolism": 1.5, "pneumonia": 1.0},
        coding_sensitivity=0.9, orders_panels=("ntprobnp", "d_dimer", "blood_gas"),
    ),
    Condition(
        "gerd", _single("K219"), 0.10, _V.INVISIBLE,
        "No physiological trace in either modality; more common with age, obesity and in women.",
        age_log_or_per_decade=0.4, female_log_or=0.3, comorbid_log_or={"obesity": 0.8}, coding_sensitivity=0.7,
        chronic=True,
    ),
    Condition(
        "depression", _single("F329"), 0.08, _V.PARTIAL,
        "Younger women more often; antidepressants lengthen QTc and raise the rate a little (citalopram, tricyclics).",
        female_log_or=0.6, age_log_or_per_decade=-0.15, ecg=EcgEffects(qtc_ms=8.0, hr_bpm=4.0),
        coding_sensitivity=0.7, chronic=True,
    ),
)  # fmt: skip

CONDITIONS_BY_KEY: Mapping[str, Condition] = MappingProxyType({c.key: c for c in CONDITIONS})


def documented_visibility() -> dict[str, str]:
    """Every code the simulator writes → what this table documents the ECG alone shows (for the cohort report)."""
    return {variant.icd10: str(c.visibility) for c in CONDITIONS for variant in c.variants}


def lab_driven_ecg_effects(labs: Mapping[str, float], temperature_f: float) -> EcgEffects:
    """ECG changes caused by lab *values* and body temperature (textbook couplings).

    * Potassium above 5.0: T taller (×2 at 7 mmol/L) and narrower; above 5.5 the PR
      lengthens and the P flattens; above 6.0 the QRS widens.
    * Potassium below 3.8: T flattens, U waves grow, ST sags, QT(U) lengthens.
    * Calcium: QTc −30 ms per mg/dL above 9.4 (short QT high, long ST low).
    * Magnesium below 1.8: QTc +40 ms per mg/dL and flatter T waves.
    * Hemoglobin below 12 g/dL: +3 bpm per g/dL (compensatory tachycardia) and a higher QRS voltage
      (+3 % per g/dL: less conductive blood attenuates the heart's field less, the Brody effect).
    * Fever: +10 bpm per °C above 37 °C (Liebermeister's rule).
    """
    potassium = labs.get("potassium", LAB_PHYSIOLOGY["potassium"].median)
    calcium = labs.get("calcium", LAB_PHYSIOLOGY["calcium"].median)
    magnesium = labs.get("magnesium", LAB_PHYSIOLOGY["magnesium"].median)
    hemoglobin = labs.get("hemoglobin", LAB_PHYSIOLOGY["hemoglobin"].median)
    k_high, k_low = max(0.0, potassium - 5.0), max(0.0, 3.8 - potassium)
    fever_c = max(0.0, (temperature_f - 98.6) / 1.8)
    mg_low, anemia_g_dl = max(0.0, 1.8 - magnesium), max(0.0, 12.0 - hemoglobin)
    return EcgEffects(
        hr_bpm=3.0 * anemia_g_dl + 10.0 * fever_c,
        pr_ms=15.0 * max(0.0, potassium - 5.5),
        qrs_ms=25.0 * max(0.0, potassium - 6.0),
        qtc_ms=-30.0 * (calcium - 9.4) + 40.0 * mg_low + 30.0 * k_low,
        qrs_amp_log=0.03 * anemia_g_dl,
        p_amp_log=-0.5 * max(0.0, potassium - 5.5),
        t_amp_log=0.35 * k_high - 0.5 * k_low - 0.3 * mg_low,
        t_width_log=-0.15 * k_high,
        u_amp_mv=0.1 * k_low,
        st_diffuse_mv=-0.05 * k_low,
    )
