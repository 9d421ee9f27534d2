"""Sampling one simulated patient: demographics, conditions, labs, vitals, codes and ECG parameters.

Every number it uses comes from :mod:`model_training.simulator.physiology`; this module only
draws from those distributions. A patient's draws depend on ``(seed, patient_index)``
alone, so the output is the same whatever the number of worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from model_training.data.catalogue import LABS_BY_KEY
from model_training.simulator.ecg_synth import EcgParams, NoiseParams
from model_training.simulator.physiology import (
    CONDITIONS,
    LAB_PHYSIOLOGY,
    PANEL_ORDER_PROBABILITY,
    SBP_PER_DECADE,
    SUSPICION_ORDER_PROBABILITY,
    VITAL_PHYSIOLOGY,
    Condition,
    EcgEffects,
    demographic_ecg_effects,
    lab_driven_ecg_effects,
)

RACES = ("WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC/LATINO - PUERTO RICAN", "ASIAN - CHINESE", "OTHER")
RACE_PROBABILITIES = (0.60, 0.20, 0.09, 0.04, 0.07)
VISIT_COUNT_PROBABILITIES = (0.72, 0.18, 0.07, 0.03)  # 1, 2, 3 or 4 ED visits with an ECG
MAX_VISITS = len(VISIT_COUNT_PROBABILITIES)
N_FOLDS = 20
LAB_MEASUREMENT_NOISE_SD = 0.15  # analytical noise, in healthy SDs
REPEAT_DRAW_PROBABILITY = 0.35
SEVERITY_LOG_SD = 0.35
#: Share of a code's positives written for a visit whose patient does not have the condition: rule-out
#: diagnoses, problem lists copied forward, billing errors. Validation studies of ICD-coded diagnoses against
#: chart review typically find positive predictive values of 85-95 % (e.g. Quan et al., Med Care 2008;
#: McCormick et al., J Clin Epidemiol 2015); these codes carry no physiology in either modality.
CODING_FALSE_POSITIVE_SHARE = 0.13


@dataclass(frozen=True, slots=True)
class ConditionInstance:
    key: str
    variant: int
    severity: float
    coded: bool
    sign_shown: bool  # whether this patient's ECG shows the condition's textbook sign


@dataclass(frozen=True, slots=True)
class LabDraw:
    key: str
    charttime: datetime
    value: float


@dataclass(frozen=True, slots=True)
class VitalsRow:
    charttime: datetime
    values: dict[str, float]


@dataclass(frozen=True, slots=True)
class Visit:
    index: int  # 0..MAX_VISITS-1 within the patient
    intime: datetime
    outtime: datetime
    ecg_time: datetime
    age_y: int
    admitted: bool
    conditions: tuple[ConditionInstance, ...]
    lab_draws: tuple[LabDraw, ...]
    vitals: tuple[VitalsRow, ...]
    bmi: float
    weight_kg: float
    omr_date: datetime | None
    ecg: EcgParams
    noise: NoiseParams
    unsupported_codes: tuple[str, ...] = ()  # coded without the condition (CODING_FALSE_POSITIVE_SHARE)

    @property
    def icd10_codes(self) -> tuple[str, ...]:
        supported = (CONDITION_BY_KEY[c.key].variants[c.variant].icd10 for c in self.conditions if c.coded)
        return tuple(dict.fromkeys((*supported, *self.unsupported_codes)))


@dataclass(frozen=True, slots=True)
class Patient:
    index: int
    female: bool
    race: str
    anchor_year: int
    anchor_age: int
    height_cm: float
    fold: int
    visits: tuple[Visit, ...] = field(default=())


CONDITION_BY_KEY = {c.key: c for c in CONDITIONS}


def patient_rng(seed: int, patient_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, patient_index])


def sample_patient(seed: int, patient_index: int) -> Patient:
    rng = patient_rng(seed, patient_index)
    fold = int(rng.integers(N_FOLDS))
    female = bool(rng.random() < 0.52)
    race = str(rng.choice(RACES, p=RACE_PROBABILITIES))
    first_age = float(np.clip(rng.normal(55.0, 19.0), 18.0, 95.0))
    anchor_year = int(rng.integers(2110, 2190))
    height_cm = float(rng.normal(162.0 if female else 176.0, 6.5 if female else 7.0))
    first_visit = datetime(anchor_year, 1, 1) + timedelta(days=float(rng.uniform(0, 365)))
    bmi_baseline = float(rng.lognormal(np.log(25.5), 0.15))

    n_visits = 1 + int(rng.choice(MAX_VISITS, p=VISIT_COUNT_PROBABILITIES))
    chronic: dict[str, ConditionInstance | None] = {}
    visits = []
    visit_start = first_visit
    for index in range(n_visits):
        age_y = first_age + (visit_start - first_visit).days / 365.25
        visit = _sample_visit(rng, index, visit_start, age_y, female, height_cm, bmi_baseline, chronic)
        visits.append(visit)
        visit_start = visit.outtime + timedelta(days=float(rng.exponential(200.0)) + 1.0)
    return Patient(
        index=patient_index, female=female, race=race, anchor_year=anchor_year, anchor_age=int(first_age),
        height_cm=height_cm, fold=fold, visits=tuple(visits),
    )  # fmt: skip


def _sample_visit(
    rng: np.random.Generator,
    index: int,
    intime: datetime,
    age_y: float,
    female: bool,
    height_cm: float,
    bmi_baseline: float,
    chronic: dict[str, ConditionInstance | None],
) -> Visit:
    conditions = _sample_conditions(rng, age_y, female, chronic)
    present = {c.key: c for c in conditions}
    ecg_time = intime + timedelta(minutes=float(rng.uniform(3.0, 40.0)))
    outtime = intime + timedelta(hours=float(rng.uniform(3.0, 9.0)))

    true_vitals = _true_vitals(rng, age_y, present)
    true_labs = _true_labs(rng, age_y, female, present)
    effects = demographic_ecg_effects(age_y, female, rng.standard_normal(7))
    for instance in conditions:
        effects = effects + condition_ecg_effects(CONDITION_BY_KEY[instance.key], instance)
    effects = effects + lab_driven_ecg_effects(true_labs, true_vitals["temperature"])
    ecg = EcgParams.from_effects(effects)
    true_vitals["heart_rate"] = ecg.hr_bpm

    bmi = bmi_baseline + sum(CONDITION_BY_KEY[k].bmi_shift * c.severity for k, c in present.items())
    omr_date = intime + timedelta(days=float(rng.uniform(-30, 30))) if rng.random() < 0.7 else None
    return Visit(
        index=index, intime=intime, outtime=outtime, ecg_time=ecg_time, age_y=int(age_y),
        admitted=bool(rng.random() < min(0.9, 0.3 + 0.15 * len(conditions))),
        conditions=conditions, lab_draws=_lab_draws(rng, ecg_time, true_labs, present),
        vitals=_vitals_series(rng, intime, outtime, true_vitals),
        bmi=float(bmi), weight_kg=float(bmi * (height_cm / 100.0) ** 2), omr_date=omr_date,
        ecg=ecg, noise=NoiseParams.sample(rng), unsupported_codes=_unsupported_codes(rng, present),
    )  # fmt: skip


def _unsupported_codes(rng: np.random.Generator, present: dict[str, ConditionInstance]) -> tuple[str, ...]:
    """Codes written for conditions the patient does not have, at a rate that makes them
    :data:`CODING_FALSE_POSITIVE_SHARE` of each code's positives (relative to its prevalence at 60)."""
    odds = CODING_FALSE_POSITIVE_SHARE / (1.0 - CODING_FALSE_POSITIVE_SHARE)
    codes = []
    for condition in CONDITIONS:
        rate = odds * condition.coding_sensitivity * condition.prevalence_at_60
        if condition.key not in present and rng.random() < rate:
            codes.append(condition.variants[_pick_variant(rng, condition)].icd10)
    return tuple(codes)


def _sample_conditions(
    rng: np.random.Generator, age_y: float, female: bool, chronic: dict[str, ConditionInstance | None]
) -> tuple[ConditionInstance, ...]:
    present: dict[str, ConditionInstance] = {}
    for condition in CONDITIONS:
        if condition.chronic and condition.key in chronic:
            instance = chronic[condition.key]
        else:
            instance = _draw_condition(rng, condition, age_y, female, present)
            if condition.chronic:
                chronic[condition.key] = instance
        if instance is not None:
            present[condition.key] = instance
    return tuple(present.values())


def _draw_condition(
    rng: np.random.Generator,
    condition: Condition,
    age_y: float,
    female: bool,
    present: dict[str, ConditionInstance],
) -> ConditionInstance | None:
    log_odds = (
        np.log(condition.prevalence_at_60 / (1.0 - condition.prevalence_at_60))
        + condition.age_log_or_per_decade * (age_y - 60.0) / 10.0
        + condition.female_log_or * female
        + sum(log_or for key, log_or in condition.comorbid_log_or.items() if key in present)
    )
    if rng.random() >= 1.0 / (1.0 + np.exp(-log_odds)):
        return None
    return ConditionInstance(
        key=condition.key,
        variant=_pick_variant(rng, condition),
        severity=float(rng.lognormal(0.0, SEVERITY_LOG_SD)),
        coded=bool(rng.random() < condition.coding_sensitivity),
        sign_shown=bool(rng.random() < condition.sign_penetrance),
    )


def _pick_variant(rng: np.random.Generator, condition: Condition) -> int:
    """Which coded form (variant) of ``condition`` a patient has, drawn by the variants' weights."""
    weights = np.array([v.weight for v in condition.variants])
    return int(rng.choice(len(weights), p=weights / weights.sum()))


def condition_ecg_effects(condition: Condition, instance: ConditionInstance) -> EcgEffects:
    variant = condition.variants[instance.variant]
    variant_effects = variant.ecg.scaled(instance.severity) if variant.scales_with_severity else variant.ecg
    effects = condition.ecg.scaled(instance.severity) + variant_effects
    return effects + condition.sign.scaled(instance.severity) if instance.sign_shown else effects


def _true_labs(
    rng: np.random.Generator, age_y: float, female: bool, present: dict[str, ConditionInstance]
) -> dict[str, float]:
    decades = (age_y - 60.0) / 10.0
    labs = {}
    for key, lab in LAB_PHYSIOLOGY.items():
        z = rng.standard_normal() + lab.female_shift_sd * female + lab.age_shift_sd_per_decade * decades
        z += sum(CONDITION_BY_KEY[k].lab_shifts_sd.get(key, 0.0) * c.severity for k, c in present.items())
        labs[key] = _from_z(key, z)
    # Hematocrit tracks hemoglobin (about three times it), so the two never disagree.
    labs["hematocrit"] = 2.95 * labs["hemoglobin"] + rng.normal(0.0, 1.0)
    return labs


def _from_z(key: str, z: float) -> float:
    lab = LAB_PHYSIOLOGY[key]
    if lab.log_scale:
        return float(lab.median * np.exp(lab.spread * z))
    return float(max(lab.median + lab.spread * z, 0.0))


def _measured(rng: np.random.Generator, key: str, value: float) -> float:
    lab = LAB_PHYSIOLOGY[key]
    noise = LAB_MEASUREMENT_NOISE_SD * lab.spread * rng.standard_normal()
    noisy = value * np.exp(noise) if lab.log_scale else value + noise
    return round(float(max(noisy, 0.0)), lab.decimals)


def _ordered_panels(rng: np.random.Generator, present: dict[str, ConditionInstance]) -> set[str]:
    suspected = set().union(*(CONDITION_BY_KEY[k].ordered_panels() for k in present)) if present else set()
    return {
        panel
        for panel, probability in PANEL_ORDER_PROBABILITY.items()
        if rng.random() < (max(probability, SUSPICION_ORDER_PROBABILITY) if panel in suspected else probability)
    }


def _lab_draws(
    rng: np.random.Generator, ecg_time: datetime, true_labs: dict[str, float], present: dict[str, ConditionInstance]
) -> tuple[LabDraw, ...]:
    panels = _ordered_panels(rng, present)
    first_draw = ecg_time + timedelta(minutes=float(rng.normal(10.0, 20.0)))
    repeat_draw = first_draw + timedelta(hours=float(rng.uniform(1.0, 4.0)))
    repeat = rng.random() < REPEAT_DRAW_PROBABILITY
    draws = []
    for key in LABS_BY_KEY:
        if LAB_PHYSIOLOGY[key].panel not in panels:
            continue
        draws.append(LabDraw(key, first_draw, _measured(rng, key, true_labs[key])))
        if repeat and LAB_PHYSIOLOGY[key].panel in {"bmp", "troponin"}:
            drifted = _from_z(key, _to_z(key, true_labs[key]) + 0.3 * rng.standard_normal())
            draws.append(LabDraw(key, repeat_draw, _measured(rng, key, drifted)))
    return tuple(draws)


def _to_z(key: str, value: float) -> float:
    lab = LAB_PHYSIOLOGY[key]
    if lab.log_scale:
        return float(np.log(max(value, 1e-9) / lab.median) / lab.spread)
    return (value - lab.median) / lab.spread


def _true_vitals(rng: np.random.Generator, age_y: float, present: dict[str, ConditionInstance]) -> dict[str, float]:
    vitals = {}
    for key, vital in VITAL_PHYSIOLOGY.items():
        value = vital.mean + vital.sd * rng.standard_normal()
        value += sum(CONDITION_BY_KEY[k].vital_shifts.get(key, 0.0) * c.severity for k, c in present.items())
        if key == "sbp":
            value += SBP_PER_DECADE * max(0.0, age_y - 50.0) / 10.0
        vitals[key] = value
    return vitals


def _vitals_series(
    rng: np.random.Generator, intime: datetime, outtime: datetime, true_vitals: dict[str, float]
) -> tuple[VitalsRow, ...]:
    """Triage vitals at arrival, then a set about every hour until the patient leaves the ED."""
    rows = []
    charttime = intime + timedelta(minutes=float(rng.uniform(0.0, 10.0)))
    while charttime < outtime:
        values = {}
        for key, vital in VITAL_PHYSIOLOGY.items():
            noisy = true_vitals[key] + vital.measurement_noise * rng.standard_normal()
            values[key] = float(np.clip(noisy, vital.low, vital.high))
        rows.append(VitalsRow(charttime, values))
        charttime += timedelta(minutes=float(rng.uniform(40.0, 90.0)))
    return tuple(rows)
