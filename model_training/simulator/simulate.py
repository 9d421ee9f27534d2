"""The simulated hospital, written to disk in the MIMIC-IV-ECG / ext-ICD / MIMIC-IV / MIMIC-IV-ED layout.

Patients are drawn in chunks by worker processes, which write their WFDB records
themselves and hand back table rows; the parent appends those rows to the CSVs in
patient order. Nothing accumulates, so memory stays flat as the cohort grows. The
tables are written under ``.partial`` names and renamed only at the end, with
``SIMULATED.json`` last, so a crash never leaves a dataset that looks complete.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.wfdb_files import write_wfdb
from model_training.data.catalogue import LABS, LABS_BY_KEY, OMR_BIOMETRICS
from model_training.data.layout import SIMULATED_MARKER, DataLayout
from model_training.simulator.ecg_synth import synthesize_ecg
from model_training.simulator.hospital import MAX_VISITS, Patient, Visit, sample_patient

#: The simulated hospital's version: bump it whenever the physiology table or the synthesis changes what a seed
#: produces. 2.0.0: couplings calibrated against published ECG-only AUROCs on real MIMIC-IV-ECG ED data.
SIMULATOR_VERSION = "2.3.0"
COMPLETION_MARKER = SIMULATED_MARKER
ECG_FS_HZ = 500.0
ECG_DURATION_S = 10.0
CHUNK_PATIENTS = 25
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

#: Table name → (layout attribute, header). Headers follow the PhysioNet releases.
TABLE_HEADERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "record_list": ("record_list", ("subject_id", "study_id", "file_name", "ecg_time", "path")),
    "machine_measurements": ("machine_measurements", (
        "subject_id", "study_id", "cart_id", "ecg_time", "report_0", "report_1", "report_2", "bandwidth",
        "filtering", "rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end", "t_end", "p_axis", "qrs_axis",
        "t_axis")),
    "diagnoses": ("diagnoses", (
        "file_name", "study_id", "subject_id", "ecg_time", "ed_stay_id", "ed_hadm_id", "all_diag_all", "gender",
        "age", "anchor_year", "anchor_age", "strat_fold")),
    "patients": ("patients", ("subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod")),
    "labevents": ("labevents", (
        "labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "charttime", "storetime", "value",
        "valuenum", "valueuom", "ref_range_lower", "ref_range_upper", "flag", "priority")),
    "omr": ("omr", ("subject_id", "chartdate", "seq_num", "result_name", "result_value")),
    "edstays": ("edstays", (
        "subject_id", "hadm_id", "stay_id", "intime", "outtime", "gender", "race", "arrival_transport",
        "disposition")),
    "vitalsign": ("vitalsign", (
        "subject_id", "stay_id", "charttime", "temperature", "heartrate", "resprate", "o2sat", "sbp", "dbp",
        "rhythm", "pain")),
}  # fmt: skip
#: Ground truth the real data does not have, for tests and analysis only.
TRUTH_FILE = "simulation_truth.csv"
TRUTH_HEADER = ("study_id", "subject_id", "conditions", "hr_bpm", "pr_ms", "qrs_ms", "qtc_ms", "af", "noise")


@dataclass(frozen=True, slots=True)
class SimulationSummary:
    out_dir: Path
    n_patients: int
    n_studies: int
    seed: int


@dataclass(slots=True)
class _Rows:
    """Table rows for one chunk of patients, in patient order."""

    tables: dict[str, list[tuple[object, ...]]] = field(default_factory=lambda: {name: [] for name in TABLE_HEADERS})
    truth: list[tuple[object, ...]] = field(default_factory=list)


def simulate_hospital(
    out_dir: Path, *, n_patients: int, seed: int, workers: int | None = None, progress: bool = True
) -> SimulationSummary:
    """Write a simulated hospital of ``n_patients`` to ``out_dir`` (deterministic for a seed)."""
    layout = DataLayout()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / COMPLETION_MARKER).unlink(missing_ok=True)
    _write_d_labitems(layout.resolve(out_dir, layout.d_labitems))
    chunks = [range(i, min(i + CHUNK_PATIENTS, n_patients)) for i in range(0, n_patients, CHUNK_PATIENTS)]
    jobs = [(out_dir / layout.ecg_root, seed, chunk) for chunk in chunks]
    n_studies = 0
    with (
        _TableWriters(out_dir, layout) as writers,
        tqdm(total=n_patients, unit="patient", desc="simulate", disable=not progress) as bar,
    ):
        for rows, chunk in zip(_run_chunks(jobs, workers), chunks, strict=True):
            writers.append(rows)
            n_studies += len(rows.truth)
            bar.update(len(chunk))
    summary = SimulationSummary(out_dir=out_dir, n_patients=n_patients, n_studies=n_studies, seed=seed)
    marker = {"simulator_version": SIMULATOR_VERSION, "seed": seed, "n_patients": n_patients,
              "n_studies": n_studies, "ecg_fs_hz": ECG_FS_HZ, "ecg_duration_s": ECG_DURATION_S}  # fmt: skip
    (out_dir / COMPLETION_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return summary


def _run_chunks(jobs: list[tuple[Path, int, range]], workers: int | None) -> Iterator[_Rows]:
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    if n_workers <= 1 or len(jobs) <= 1:
        yield from map(_simulate_chunk, jobs)
        return
    # spawn, not fork: the parent may hold threads (tqdm's monitor) that fork would copy mid-state.
    # An executor, not a Pool: a worker that dies raises BrokenProcessPool instead of hanging forever.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as executor:
        yield from executor.map(_simulate_chunk, jobs)


def _simulate_chunk(job: tuple[Path, int, range]) -> _Rows:
    ecg_root, seed, patient_indices = job
    rows = _Rows()
    for index in patient_indices:
        _add_patient(rows, sample_patient(seed, index), ecg_root, seed)
    return rows


def subject_id_of(patient_index: int) -> int:
    return 10_000_000 + patient_index


def _visit_key(patient: Patient, visit: Visit) -> int:
    return patient.index * MAX_VISITS + visit.index


def study_id_of(patient: Patient, visit: Visit) -> int:
    return 40_000_000 + _visit_key(patient, visit)


def wfdb_relative_path(subject_id: int, study_id: int) -> str:
    """MIMIC-IV-ECG's ``files/pXXXX/pXXXXXXXX/sXXXXXXXX/XXXXXXXX`` (no extension)."""
    return f"files/p{str(subject_id)[:4]}/p{subject_id}/s{study_id}/{study_id}"


def _add_patient(rows: _Rows, patient: Patient, ecg_root: Path, seed: int) -> None:
    subject_id = subject_id_of(patient.index)
    gender = "F" if patient.female else "M"
    group = f"{2008 + 3 * (patient.anchor_year % 4)} - {2010 + 3 * (patient.anchor_year % 4)}"
    rows.tables["patients"].append((subject_id, gender, patient.anchor_age, patient.anchor_year, group, ""))
    for visit in patient.visits:
        _add_visit(rows, patient, visit, subject_id, ecg_root, seed)


def _add_visit(rows: _Rows, patient: Patient, visit: Visit, subject_id: int, ecg_root: Path, seed: int) -> None:
    key = _visit_key(patient, visit)
    study_id, stay_id, hadm_id = 40_000_000 + key, 30_000_000 + key, 20_000_000 + key
    ecg_time = visit.ecg_time.strftime(TIME_FORMAT)
    path = wfdb_relative_path(subject_id, study_id)
    gender = "F" if patient.female else "M"
    hadm = hadm_id if visit.admitted else ""

    _write_ecg(patient, visit, subject_id, study_id, ecg_root / path, seed)
    rows.tables["record_list"].append((subject_id, study_id, str(study_id), ecg_time, path))
    rows.tables["machine_measurements"].append(_machine_measurements(visit, subject_id, study_id, ecg_time))
    codes = "[" + ", ".join(f"'{code}'" for code in visit.icd10_codes) + "]"
    rows.tables["diagnoses"].append((
        path, study_id, subject_id, ecg_time, stay_id, hadm, codes, gender, visit.age_y, patient.anchor_year,
        patient.anchor_age, patient.fold))  # fmt: skip
    disposition = "ADMITTED" if visit.admitted else "HOME"
    rows.tables["edstays"].append((
        subject_id, hadm, stay_id, visit.intime.strftime(TIME_FORMAT), visit.outtime.strftime(TIME_FORMAT), gender,
        patient.race, "WALK IN", disposition))  # fmt: skip
    for vitals in visit.vitals:
        v = vitals.values
        rows.tables["vitalsign"].append((
            subject_id, stay_id, vitals.charttime.strftime(TIME_FORMAT), round(v["temperature"], 1),
            round(v["heart_rate"]), round(v["resp_rate"]), round(v["o2_saturation"]), round(v["sbp"]),
            round(v["dbp"]), "", ""))  # fmt: skip
    for n, draw in enumerate(visit.lab_draws):
        lab = LABS_BY_KEY[draw.key]
        flag = "abnormal" if _outside(draw.value, lab.ref_low, lab.ref_high) else ""
        charttime = draw.charttime.strftime(TIME_FORMAT)
        rows.tables["labevents"].append((
            key * 64 + n, subject_id, hadm, key * 4 + (0 if draw.charttime == visit.lab_draws[0].charttime else 1),
            lab.itemid, charttime, charttime, draw.value, draw.value, lab.unit, lab.ref_low, lab.ref_high, flag,
            "STAT"))  # fmt: skip
    if visit.omr_date is not None:
        chartdate = visit.omr_date.strftime("%Y-%m-%d")
        height_in = patient.height_cm / OMR_BIOMETRICS["height_cm"][1]
        weight_lbs = visit.weight_kg / OMR_BIOMETRICS["weight_kg"][1]
        for name, value in (("bmi", visit.bmi), ("height_cm", height_in), ("weight_kg", weight_lbs)):
            rows.tables["omr"].append((subject_id, chartdate, 1, OMR_BIOMETRICS[name][0], f"{value:.1f}"))
    conditions = ";".join(c.key for c in visit.conditions)
    ecg = visit.ecg
    rows.truth.append((study_id, subject_id, conditions, round(ecg.hr_bpm, 1), round(ecg.pr_ms), round(ecg.qrs_ms),
                       round(ecg.qtc_ms), int(ecg.af), _noise_summary(visit)))  # fmt: skip


def _outside(value: float, low: float | None, high: float | None) -> bool:
    return (low is not None and value < low) or (high is not None and value > high)


def _noise_summary(visit: Visit) -> str:
    noise = visit.noise
    flags = (
        ("pop", noise.pop_lead >= 0),
        ("missing_lead", noise.missing_lead >= 0),
        ("flat_lead", noise.flat_lead >= 0),
        ("limb_reversal", noise.limb_reversal),
    )
    parts = [name for name, on in flags if on]
    return ";".join(parts)


def _write_ecg(patient: Patient, visit: Visit, subject_id: int, study_id: int, record_path: Path, seed: int) -> None:
    # A stream of its own per study, so the waveform does not depend on how many draws came before.
    rng = np.random.default_rng([seed, patient.index, visit.index, 1])
    signal_mv = synthesize_ecg(visit.ecg, visit.noise, rng, fs_hz=ECG_FS_HZ, duration_s=ECG_DURATION_S)
    record = EcgRecord(
        record_id=str(study_id), signal_mv=signal_mv, fs_hz=ECG_FS_HZ, lead_names=MODEL_LEAD_ORDER,
        source="simulated-hospital", subject_id=str(subject_id), acquired_at=visit.ecg_time,
    )  # fmt: skip
    write_wfdb(record, record_path.parent, record_path.name)


def _machine_measurements(visit: Visit, subject_id: int, study_id: int, ecg_time: str) -> tuple[object, ...]:
    """The cart's own reading: statements and intervals (ms from the start of its median beat)."""
    ecg = visit.ecg
    rhythm = (
        "Atrial fibrillation"
        if ecg.af
        else ("Sinus tachycardia" if ecg.hr_bpm > 100 else "Sinus bradycardia" if ecg.hr_bpm < 60 else "Sinus rhythm")
    )
    conduction = "Left bundle branch block" if ecg.lbbb else "Right bundle branch block" if ecg.rbbb else ""
    p_onset = 40
    qrs_onset = p_onset + round(ecg.pr_ms)
    return (subject_id, study_id, 6848, ecg_time, rhythm, conduction, "", "0.005-150 Hz", "60 Hz notch Baseline filter",
            round(60000 / ecg.hr_bpm), "" if ecg.af else p_onset, "" if ecg.af else p_onset + 100, qrs_onset,
            qrs_onset + round(ecg.qrs_ms), qrs_onset + round(ecg.qt_ms), "" if ecg.af else 60, round(ecg.axis_deg + 15),
            40)  # fmt: skip


def _write_d_labitems(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("itemid", "label", "fluid", "category"))
        for lab in LABS:
            writer.writerow((lab.itemid, lab.label, lab.fluid, lab.category))


class _TableWriters:
    """CSV writers for every table, under ``.partial`` names until :meth:`__exit__` succeeds."""

    def __init__(self, out_dir: Path, layout: DataLayout) -> None:
        self._final = {name: out_dir / getattr(layout, attr) for name, (attr, _) in TABLE_HEADERS.items()}
        self._final["truth"] = out_dir / TRUTH_FILE
        self._handles = {}
        self._writers = {}

    def __enter__(self) -> _TableWriters:
        headers = {name: header for name, (_, header) in TABLE_HEADERS.items()} | {"truth": TRUTH_HEADER}
        for name, final in self._final.items():
            final.parent.mkdir(parents=True, exist_ok=True)
            handle = _partial(final).open("w", newline="")
            self._handles[name] = handle
            self._writers[name] = csv.writer(handle)
            self._writers[name].writerow(headers[name])
        return self

    def append(self, rows: _Rows) -> None:
        for name, table_rows in rows.tables.items():
            self._writers[name].writerows(table_rows)
        self._writers["truth"].writerows(rows.truth)

    def __exit__(self, exc_type: object, *_: object) -> None:
        for handle in self._handles.values():
            handle.close()
        if exc_type is None:
            for final in self._final.values():
                _partial(final).replace(final)


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, TIME_FORMAT)
