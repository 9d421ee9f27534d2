"""Where each table lives and what its columns are called: the one place a site maps its data in.

The defaults are the PhysioNet layouts of MIMIC-IV-ECG, MIMIC-IV-ECG-ext-ICD, MIMIC-IV
(hosp) and MIMIC-IV-ED, all under one root folder; the simulated hospital writes
exactly this. A hospital pointing the loader at its own warehouse export writes a
TOML or YAML file that overrides any of these fields (see ``deploy/layout.example.toml``).
A ``.csv`` path also finds its ``.csv.gz`` twin, as PhysioNet ships them compressed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from model_training.data.catalogue import LABS, OMR_BIOMETRICS, VITALS

#: Written last by the simulated hospital at the data root, with its ``simulator_version``; absent from real data.
#: The loader reads it only to record which simulator made a cohort.
SIMULATED_MARKER = "SIMULATED.json"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecordListColumns(_Frozen):
    subject_id: str = "subject_id"
    study_id: str = "study_id"
    ecg_time: str = "ecg_time"
    path: str = "path"


class DiagnosesColumns(_Frozen):
    study_id: str = "study_id"
    codes: str = "all_diag_all"
    fold: str = "strat_fold"
    age: str = "age"
    gender: str = "gender"


class LabeventsColumns(_Frozen):
    subject_id: str = "subject_id"
    itemid: str = "itemid"
    charttime: str = "charttime"
    value: str = "valuenum"
    ref_low: str = "ref_range_lower"
    ref_high: str = "ref_range_upper"


class EdstaysColumns(_Frozen):
    subject_id: str = "subject_id"
    stay_id: str = "stay_id"
    intime: str = "intime"
    outtime: str = "outtime"
    race: str = "race"


class VitalsignColumns(_Frozen):
    stay_id: str = "stay_id"
    charttime: str = "charttime"


class OmrColumns(_Frozen):
    subject_id: str = "subject_id"
    chartdate: str = "chartdate"
    result_name: str = "result_name"
    result_value: str = "result_value"


class Columns(_Frozen):
    record_list: RecordListColumns = RecordListColumns()
    diagnoses: DiagnosesColumns = DiagnosesColumns()
    labevents: LabeventsColumns = LabeventsColumns()
    edstays: EdstaysColumns = EdstaysColumns()
    vitalsign: VitalsignColumns = VitalsignColumns()
    omr: OmrColumns = OmrColumns()


def _default_labs() -> dict[str, list[int]]:
    return {lab.key: list(lab.itemids) for lab in LABS}


def _default_vitals() -> dict[str, str]:
    return {vital.key: vital.column for vital in VITALS}


def _default_omr() -> dict[str, str]:
    return {key: name for key, (name, _) in OMR_BIOMETRICS.items()}


class DataLayout(_Frozen):
    """Paths are relative to the data root given on the command line."""

    ecg_root: str = "mimic-iv-ecg"
    record_list: str = "mimic-iv-ecg/record_list.csv"
    machine_measurements: str = "mimic-iv-ecg/machine_measurements.csv"
    diagnoses: str = "mimic-iv-ecg-ext-icd/records_w_diag_icd10.csv"
    patients: str = "mimic-iv/hosp/patients.csv"
    labevents: str = "mimic-iv/hosp/labevents.csv"
    d_labitems: str = "mimic-iv/hosp/d_labitems.csv"
    omr: str = "mimic-iv/hosp/omr.csv"
    edstays: str = "mimic-iv-ed/ed/edstays.csv"
    vitalsign: str = "mimic-iv-ed/ed/vitalsign.csv"
    #: An MDS-ED-style precomputed feature table (one row per study_id); replaces the raw tables.
    features_table: str | None = None
    columns: Columns = Columns()
    #: Lab key → the site's item ids for it.
    labs: dict[str, list[int]] = Field(default_factory=_default_labs)
    #: Vital key → the column of ``vitalsign`` that holds it.
    vitals: dict[str, str] = Field(default_factory=_default_vitals)
    #: Biometric key → OMR ``result_name``.
    omr_names: dict[str, str] = Field(default_factory=_default_omr)

    @classmethod
    def from_file(cls, path: Path) -> DataLayout:
        """Read overrides from a ``.toml`` or ``.yaml`` file; unknown keys are an error."""
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
        return cls.model_validate(data or {})

    def resolve(self, root: Path, relative: str) -> Path:
        """The file under ``root``, or its ``.gz`` twin; the plain path if neither exists."""
        plain = root / relative
        if not plain.exists() and (gz := plain.with_name(plain.name + ".gz")).exists():
            return gz
        return plain
