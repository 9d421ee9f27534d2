"""The simulated hospital writes the MIMIC-IV-ECG layout, deterministically, and couples labs to codes."""

import hashlib
import json
from datetime import UTC

import numpy as np
import pandas as pd
import pytest

from integrations.ecg import MIMIC_FILE_LEAD_ORDER
from integrations.wfdb_files import read_wfdb
from model_training.data.cohort import CohortConfig, build_cohort, load_cohort
from model_training.data.layout import DataLayout
from model_training.simulator.hospital import CODING_FALSE_POSITIVE_SHARE, CONDITION_BY_KEY, sample_patient
from model_training.simulator.simulate import COMPLETION_MARKER, SIMULATOR_VERSION, simulate_hospital

N_PATIENTS = 30
LAYOUT = DataLayout()


@pytest.fixture(scope="module")
def hospital(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    simulate_hospital(out, n_patients=N_PATIENTS, seed=7, workers=1, progress=False)
    return out


def _digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def test_writes_every_mimic_table_and_a_completion_marker(hospital):
    for relative in (LAYOUT.record_list, LAYOUT.machine_measurements, LAYOUT.diagnoses, LAYOUT.patients,
                     LAYOUT.labevents, LAYOUT.d_labitems, LAYOUT.omr, LAYOUT.edstays, LAYOUT.vitalsign):  # fmt: skip
        assert (hospital / relative).is_file(), relative
    marker = json.loads((hospital / COMPLETION_MARKER).read_text())
    assert marker["n_patients"] == N_PATIENTS and marker["seed"] == 7
    assert not list(hospital.rglob("*.partial"))


def test_record_list_points_at_12_lead_10_s_500_hz_wfdb_records_in_mimic_order(hospital):
    records = pd.read_csv(hospital / LAYOUT.record_list)
    assert list(records.columns) == ["subject_id", "study_id", "file_name", "ecg_time", "path"]
    first = records.iloc[0]
    assert first.path == f"files/p{str(first.subject_id)[:4]}/p{first.subject_id}/s{first.study_id}/{first.study_id}"
    record = read_wfdb(hospital / LAYOUT.ecg_root / first.path)
    assert record.lead_names == MIMIC_FILE_LEAD_ORDER
    assert record.fs_hz == 500.0 and record.n_samples == 5000
    # The simulated hospital's clock is UTC: the header's local time reads back as the same UTC instant.
    assert record.acquired_at == pd.Timestamp(first.ecg_time).to_pydatetime().replace(tzinfo=UTC)


def test_diagnoses_have_the_ext_icd_shape(hospital):
    diagnoses = pd.read_csv(hospital / LAYOUT.diagnoses)
    for column in ("study_id", "subject_id", "ecg_time", "all_diag_all", "gender", "age", "strat_fold"):
        assert column in diagnoses.columns
    assert diagnoses["strat_fold"].between(0, 19).all()
    assert diagnoses["all_diag_all"].str.startswith("[").all()
    # Folds are per patient, so no patient straddles train and test.
    assert (diagnoses.groupby("subject_id")["strat_fold"].nunique() == 1).all()


def test_same_seed_gives_identical_files_whatever_the_number_of_workers(tmp_path, hospital):
    simulate_hospital(tmp_path / "again", n_patients=N_PATIENTS, seed=7, workers=2, progress=False)
    assert _digest(tmp_path / "again") == _digest(hospital)


def test_another_seed_gives_another_hospital(tmp_path, hospital):
    simulate_hospital(tmp_path / "other", n_patients=N_PATIENTS, seed=8, workers=1, progress=False)
    assert _digest(tmp_path / "other") != _digest(hospital)


def test_labs_follow_the_coded_condition():
    """Across many patients, hyperkalemia raises potassium and CKD raises creatinine (the coupling table)."""
    draws = {"hyperkalemia": [], "other": [], "ckd": [], "no_ckd": []}
    for index in range(1500):
        for visit in sample_patient(3, index).visits:
            keys = {c.key for c in visit.conditions}
            for draw in visit.lab_draws:
                if draw.key == "potassium":
                    draws["hyperkalemia" if "hyperkalemia" in keys else "other"].append(draw.value)
                if draw.key == "creatinine":
                    draws["ckd" if "ckd" in keys else "no_ckd"].append(draw.value)
    assert np.mean(draws["hyperkalemia"]) > 5.1 > np.mean(draws["other"])
    assert np.median(draws["ckd"]) > 1.5 * np.median(draws["no_ckd"])


def test_a_small_share_of_codes_is_written_without_the_condition_as_in_coding_audits():
    """Label noise: some codes come with no physiology (rule-out diagnoses, copied problem lists), never most."""
    coded, unsupported = 0, 0
    for index in range(800):
        for visit in sample_patient(5, index).visits:
            present = {CONDITION_BY_KEY[c.key].variants[c.variant].icd10 for c in visit.conditions}
            assert not present & set(visit.unsupported_codes), "an unsupported code names a condition the visit has"
            assert set(visit.unsupported_codes) <= set(visit.icd10_codes)
            coded += len(visit.icd10_codes)
            unsupported += len(visit.unsupported_codes)
    assert 0.02 < unsupported / coded < CODING_FALSE_POSITIVE_SHARE


def test_the_simulator_version_travels_from_the_marker_into_the_cohort(hospital, tmp_path):
    marker = json.loads((hospital / COMPLETION_MARKER).read_text())
    assert marker["simulator_version"] == SIMULATOR_VERSION
    cohort = build_cohort(hospital, tmp_path / "cohort", config=CohortConfig(min_dx_count=1), workers=1, progress=False)
    assert cohort.simulator_version == SIMULATOR_VERSION
    assert load_cohort(tmp_path / "cohort").simulator_version == SIMULATOR_VERSION
