"""The cohort loader on a tiny hand-made dataset in the real PhysioNet layout (MIMIC-IV-ECG, ext-ICD, hosp, ED)."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import wfdb

from integrations.ecg import MIMIC_FILE_LEAD_ORDER, preprocess
from integrations.wfdb_files import read_wfdb
from model_training.data.cohort import CohortConfig, build_cohort, load_cohort
from model_training.data.layout import DataLayout
from model_training.errors import DatasetError

CONFIG = CohortConfig(min_dx_count=1, min_lab_positives=1)
RECORD_LIST = """subject_id,study_id,file_name,ecg_time,path
10000032,40689238,40689238,2180-07-23 08:44:00,files/p1000/p10000032/s40689238/40689238
10000032,40689239,40689239,2181-01-01 10:00:00,files/p1000/p10000032/s40689239/40689239
10000084,41000001,41000001,2160-01-01 12:00:00,files/p1000/p10000084/s41000001/41000001
10000084,41000002,41000002,2160-02-01 12:00:00,files/p1000/p10000084/s41000002/41000002
"""
DIAGNOSES = """file_name,study_id,subject_id,ecg_time,ed_stay_id,ed_hadm_id,all_diag_all,gender,age,strat_fold
x,40689238,10000032,2180-07-23 08:44:00,33258284,,"['I2109', 'E875']",F,52,3
x,40689239,10000032,2181-01-01 10:00:00,33258285,,"['I10']",F,53,19
x,41000001,10000084,2160-01-01 12:00:00,1,,"['I10']",M,70,5
"""
LABEVENTS = """labevent_id,subject_id,hadm_id,specimen_id,itemid,charttime,storetime,value,valuenum,valueuom,ref_range_lower,ref_range_upper,flag,priority
1,10000032,,1,50971,2180-07-23 08:30:00,,5.8,5.8,mEq/L,3.3,5.1,abnormal,STAT
2,10000032,,2,50971,2180-07-23 10:10:00,,6.2,6.2,mEq/L,3.3,5.1,abnormal,STAT
3,10000032,,1,50983,2180-07-23 08:30:00,,140,140,mEq/L,133,145,,STAT
4,10000032,,3,50971,2181-01-01 08:50:00,,4.0,4.0,mEq/L,3.5,5.3,,STAT
5,10000032,,3,99999,2181-01-01 08:50:00,,1.0,1.0,x,0,1,,STAT
"""
EDSTAYS = """subject_id,hadm_id,stay_id,intime,outtime,gender,race,arrival_transport,disposition
10000032,,33258284,2180-07-23 08:30:00,2180-07-23 14:00:00,F,WHITE,WALK IN,HOME
10000032,,33258285,2181-01-01 09:30:00,2181-01-01 12:00:00,F,WHITE,WALK IN,HOME
"""
VITALSIGN = """subject_id,stay_id,charttime,temperature,heartrate,resprate,o2sat,sbp,dbp,rhythm,pain
10000032,33258284,2180-07-23 08:40:00,98.2,80,16,98,120,70,,
10000032,33258284,2180-07-23 09:40:00,98.4,100,18,97,130,80,,
"""
OMR = """subject_id,chartdate,seq_num,result_name,result_value
10000032,2180-07-10,1,Weight (Lbs),220.46
10000032,2180-07-10,1,Height (Inches),70
10000032,2180-07-10,1,BMI (kg/m2),31.6
"""


def _write_ecg(root: Path, relative: str, seed: int) -> None:
    path = root / "mimic-iv-ecg" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(5000) / 500.0
    rng = np.random.default_rng(seed)
    signal = np.column_stack([np.sin(2 * np.pi * 1.1 * t + rng.uniform(0, 6)) for _ in range(12)])
    wfdb.wrsamp(path.name, fs=500, units=["mV"] * 12, sig_name=list(MIMIC_FILE_LEAD_ORDER), p_signal=signal,
                fmt=["16"] * 12, adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(path.parent))  # fmt: skip


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if relative.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)


@pytest.fixture
def mimic(tmp_path) -> Path:
    """Two good studies, one whose .dat is missing, one with no ext-ICD row; labevents shipped gzipped."""
    _write(tmp_path, "mimic-iv-ecg/record_list.csv", RECORD_LIST)
    _write(tmp_path, "mimic-iv-ecg-ext-icd/records_w_diag_icd10.csv", DIAGNOSES)
    _write(tmp_path, "mimic-iv/hosp/labevents.csv.gz", LABEVENTS)
    _write(tmp_path, "mimic-iv-ed/ed/edstays.csv", EDSTAYS)
    _write(tmp_path, "mimic-iv-ed/ed/vitalsign.csv", VITALSIGN)
    _write(tmp_path, "mimic-iv/hosp/omr.csv", OMR)
    for seed, relative in enumerate(RECORD_LIST.splitlines()[1:]):
        _write_ecg(tmp_path, relative.split(",")[-1], seed)
    (tmp_path / "mimic-iv-ecg/files/p1000/p10000084/s41000001/41000001.dat").unlink()
    return tmp_path


@pytest.fixture
def cohort(mimic):
    return build_cohort(mimic, mimic / "cohort", config=CONFIG, workers=1, progress=False)


def _feature(cohort, row: int, name: str) -> float:
    return float(cohort.features[row, cohort.feature_names.index(name)])


def test_unusable_studies_are_skipped_with_a_counted_reason(cohort, mimic):
    assert cohort.study_ids.tolist() == [40689238, 40689239]
    assert cohort.skipped == {"no diagnosis row (ext-ICD)": 1, "EcgReadError: file not found: 41000001.dat": 1}
    assert "41000001" in (mimic / "cohort" / "skipped.csv").read_text()


def test_ecgs_are_the_shared_preprocessing_of_the_wfdb_records(cohort, mimic):
    assert cohort.ecg.shape == (2, 12, 1000)
    expected = preprocess(read_wfdb(mimic / "mimic-iv-ecg/files/p1000/p10000032/s40689238/40689238"))
    np.testing.assert_array_equal(cohort.ecg[0], expected)


def test_icd_codes_are_cut_and_propagated_to_their_parents(cohort):
    assert {"I21", "I210", "I2109", "E87", "E875", "I10"} <= set(cohort.dx_codes)
    first = dict(zip(cohort.dx_codes, cohort.dx_labels[0], strict=True))
    assert first["I21"] == first["I2109"] == first["E875"] == 1 and first["I10"] == 0


def test_lab_labels_use_the_closest_value_within_60_minutes_and_the_median_reference(cohort):
    names = [t.name for t in cohort.lab_targets]
    assert names == ["potassium_high"]  # nothing else has a positive
    assert cohort.lab_targets[0].threshold == pytest.approx(5.1)
    # Study 1: 5.8 at -14 min is closest (6.2 at +86 min is outside ±60). Study 2: only a value at -70 min.
    assert cohort.lab_labels[0, 0] == 1.0
    assert np.isnan(cohort.lab_labels[1, 0])


def test_clinical_features_are_window_statistics_with_units_converted(cohort):
    assert _feature(cohort, 0, "potassium_first") == pytest.approx(5.8)
    assert _feature(cohort, 0, "potassium_last") == pytest.approx(6.2)
    assert _feature(cohort, 0, "potassium_mean") == pytest.approx(6.0)
    assert _feature(cohort, 0, "heart_rate_mean") == 90.0
    assert _feature(cohort, 0, "heart_rate_slope") == pytest.approx(20.0)  # bpm per hour
    assert _feature(cohort, 0, "weight_kg") == pytest.approx(100.0, abs=0.01)
    assert _feature(cohort, 0, "height_cm") == pytest.approx(177.8, abs=0.01)
    assert _feature(cohort, 0, "age") == 52 and _feature(cohort, 0, "female") == 1
    assert _feature(cohort, 0, "ethnicity_white") == 1
    assert np.isnan(_feature(cohort, 1, "heart_rate_mean"))  # no vitals near the second ECG


def test_missing_features_are_imputed_with_training_medians_and_masked(cohort):
    values, mask = cohort.clinical_inputs()
    column = cohort.feature_names.index("heart_rate_mean")
    assert cohort.split("train").tolist() == [0] and cohort.split("test").tolist() == [1]
    assert mask[1, column] == 0 and values[1, column] == 90.0


def test_a_built_cohort_loads_back_identically(cohort, mimic):
    loaded = load_cohort(mimic / "cohort")
    np.testing.assert_array_equal(loaded.ecg, cohort.ecg)
    np.testing.assert_array_equal(loaded.features, cohort.features)
    assert loaded.dx_codes == cohort.dx_codes and loaded.lab_targets == cohort.lab_targets
    assert loaded.fingerprint == cohort.fingerprint and loaded.config == cohort.config
    assert cohort.simulator_version is None and loaded.simulator_version is None, "real data has no simulator"


def test_a_missing_table_names_the_file(mimic):
    (mimic / "mimic-iv-ed/ed/vitalsign.csv").unlink()
    with pytest.raises(DatasetError, match=r"vitalsign\.csv: file not found"):
        build_cohort(mimic, mimic / "cohort", config=CONFIG, workers=1, progress=False)


def test_a_table_without_its_columns_names_the_file_and_columns(mimic):
    _write(mimic, "mimic-iv-ecg/record_list.csv", "subject_id,study_id,ecg_time\n1,2,2180-01-01\n")
    with pytest.raises(DatasetError, match=r"record_list\.csv: missing columns \['path'\]"):
        build_cohort(mimic, mimic / "cohort", config=CONFIG, workers=1, progress=False)


def test_a_corrupt_gzip_names_the_file(mimic):
    (mimic / "mimic-iv/hosp/labevents.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DatasetError, match=r"labevents\.csv\.gz: cannot read the header"):
        build_cohort(mimic, mimic / "cohort", config=CONFIG, workers=1, progress=False)


def test_a_site_layout_file_maps_other_column_names(tmp_path):
    layout_file = tmp_path / "site.toml"
    layout_file.write_text('labevents = "warehouse/labs.csv"\n[columns.labevents]\nvalue = "result_numeric"\n'
                           '[labs]\npotassium = [1234]\n')  # fmt: skip
    layout = DataLayout.from_file(layout_file)
    assert layout.labevents == "warehouse/labs.csv" and layout.columns.labevents.value == "result_numeric"
    assert layout.labs == {"potassium": [1234]}


def test_an_unknown_layout_key_is_refused(tmp_path):
    layout_file = tmp_path / "site.toml"
    layout_file.write_text('labevnts = "typo.csv"\n')
    with pytest.raises(ValueError, match="labevnts"):
        DataLayout.from_file(layout_file)


def test_the_example_site_layout_in_deploy_parses():
    example = Path(__file__).resolve().parents[3] / "deploy" / "layout.example.toml"
    layout = DataLayout.from_file(example)
    assert layout.columns.labevents.value == "result_numeric" and layout.labs["potassium"] == [2823, 28231]
