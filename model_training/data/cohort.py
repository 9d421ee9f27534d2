"""The cohort loader: MIMIC-IV-ECG-shaped tables and WFDB files → arrays a model trains on.

One code path for the simulated hospital and the real PhysioNet data: both are read
through :class:`~model_training.data.layout.DataLayout`. Per study it builds the
preprocessed ECG (the shared :func:`integrations.ecg.preprocess`), the clinical
feature vector with its missingness mask, diagnosis and lab-abnormality labels, and
the fold. A study that cannot be used is skipped with a counted reason, written to
``skipped.csv``; a table that cannot be read stops the build with its path and why.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing
import os
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from gzip import BadGzipFile
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from integrations.ecg import PreprocessConfig, preprocess
from integrations.errors import EcgReadError, InvalidEcgError
from integrations.wfdb_files import read_wfdb
from model_training.data.catalogue import OMR_BIOMETRICS, ethnicity_group
from model_training.data.features import (
    BIOMETRIC_FEATURES,
    demographic_features,
    feature_names,
    impute,
    training_medians,
    window_statistics,
)
from model_training.data.labels import (
    LabTarget,
    diagnosis_labels,
    expand_icd,
    lab_abnormality_labels,
    parse_icd_list,
    reference_thresholds,
)
from model_training.data.layout import SIMULATED_MARKER, DataLayout
from model_training.errors import DatasetError

log = logging.getLogger(__name__)

LABEVENTS_CHUNK_ROWS = 2_000_000
ECG_FILE = "ecg.f32"
META_FILE = "cohort.json"


@dataclass(frozen=True, slots=True)
class CohortConfig:
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    feature_window_min: tuple[float, float] = (-90.0, 90.0)
    lab_label_window_min: float = 60.0
    omr_window_days: float = 30.0
    min_dx_count: int = 25
    min_lab_positives: int = 20
    train_folds: tuple[int, ...] = tuple(range(18))
    val_folds: tuple[int, ...] = (18,)
    test_folds: tuple[int, ...] = (19,)


@dataclass(slots=True)
class Cohort:
    """Aligned arrays, one row per usable study."""

    study_ids: np.ndarray
    subject_ids: np.ndarray
    folds: np.ndarray
    ecg: np.ndarray  # float32 [studies, leads, samples] at config.preprocess.fs_hz (memory-mapped when loaded)
    features: np.ndarray  # float32 [studies, features], NaN where not measured
    feature_names: tuple[str, ...]
    feature_medians: np.ndarray  # training-fold medians, for imputation
    dx_codes: tuple[str, ...]
    dx_labels: np.ndarray  # uint8 [studies, codes]
    lab_targets: tuple[LabTarget, ...]
    lab_labels: np.ndarray  # float32 [studies, targets], NaN where no value near the ECG
    config: CohortConfig
    skipped: dict[str, int] = field(default_factory=dict)
    fingerprint: str = ""
    simulator_version: str | None = None  # the simulated hospital's version; None for real data

    def split(self, name: str) -> np.ndarray:
        """Row indices of ``train``, ``val`` or ``test``."""
        folds = {"train": self.config.train_folds, "val": self.config.val_folds, "test": self.config.test_folds}
        return np.flatnonzero(np.isin(self.folds, folds[name]))

    def clinical_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """(median-imputed features, observed mask), both float32 [studies, features]."""
        return impute(self.features, self.feature_medians)


def build_cohort(
    root: Path,
    out_dir: Path,
    *,
    layout: DataLayout | None = None,
    config: CohortConfig | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Cohort:
    """Read the dataset under ``root`` and write the cohort arrays to ``out_dir``.

    ``layout`` defaults to the MIMIC release layout and ``config`` to the MDS-ED recipe.
    """
    layout = layout or DataLayout()
    config = config or CohortConfig()
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped: list[tuple[int, str]] = []
    studies = _read_studies(root, layout, skipped)
    ok = _load_ecgs(root, layout, config, studies, out_dir / ECG_FILE, skipped, workers, progress)
    studies = studies[ok].reset_index(drop=True)
    study_ids = studies["study_id"].to_numpy(np.int64)

    lab_events, ref_counts = _read_lab_events(root, layout, studies, config)
    features, names = _clinical_features(root, layout, config, studies, lab_events)
    train_mask = np.isin(studies["fold"].to_numpy(), config.train_folds)
    dx_codes, dx = diagnosis_labels([expand_icd(parse_icd_list(c)) for c in studies["codes"]], config.min_dx_count)
    closest = _closest_to_ecg(lab_events, config.lab_label_window_min / 60.0)
    lab_targets, lab_labels = lab_abnormality_labels(
        closest, reference_thresholds(ref_counts), study_ids, config.min_lab_positives
    )
    cohort = Cohort(
        study_ids=study_ids, subject_ids=studies["subject_id"].to_numpy(np.int64),
        folds=studies["fold"].to_numpy(np.int16), ecg=_open_ecg(out_dir, len(studies), config),
        features=features.astype(np.float32), feature_names=names,
        feature_medians=training_medians(features, train_mask), dx_codes=dx_codes, dx_labels=dx,
        lab_targets=lab_targets, lab_labels=lab_labels, config=config,
        skipped=dict(Counter(reason for _, reason in skipped)), simulator_version=_simulator_version(root),
    )  # fmt: skip
    cohort.fingerprint = _fingerprint(cohort)
    _save(cohort, out_dir, skipped)
    return cohort


# ---------------------------------------------------------------- tables


def read_table(
    path: Path, columns: list[str], *, every_column: bool = False, **read_csv_kwargs: object
) -> pd.DataFrame | Iterator[pd.DataFrame]:
    """``pandas.read_csv`` of ``columns`` (all columns if ``every_column``, checking ``columns`` exist).

    Every failure is translated into :class:`DatasetError` naming the file.
    """
    if not path.exists():
        raise DatasetError(path, "file not found")
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, BadGzipFile, EOFError,
            zlib.error, OSError) as exc:  # fmt: skip
        raise DatasetError(path, f"cannot read the header: {exc}") from exc
    missing = [c for c in columns if c not in header]
    if missing:
        raise DatasetError(path, f"missing columns {missing} (has {list(header)[:12]})")
    try:
        usecols = None if every_column else columns
        return pd.read_csv(path, usecols=usecols, **read_csv_kwargs)  # type: ignore[call-overload]
    except (pd.errors.ParserError, UnicodeDecodeError, BadGzipFile, EOFError, zlib.error, ValueError) as exc:
        raise DatasetError(path, f"cannot parse: {exc}") from exc


def _times(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, errors="coerce", format="ISO8601")


def _read_studies(root: Path, layout: DataLayout, skipped: list[tuple[int, str]]) -> pd.DataFrame:
    rl, dg = layout.columns.record_list, layout.columns.diagnoses
    records = read_table(layout.resolve(root, layout.record_list), [rl.subject_id, rl.study_id, rl.ecg_time, rl.path])
    records = records.rename(columns={rl.subject_id: "subject_id", rl.study_id: "study_id",
                                      rl.ecg_time: "ecg_time", rl.path: "path"})  # fmt: skip
    diagnoses = read_table(layout.resolve(root, layout.diagnoses), [dg.study_id, dg.codes, dg.fold, dg.age, dg.gender])
    diagnoses = diagnoses.rename(columns={dg.study_id: "study_id", dg.codes: "codes", dg.fold: "fold",
                                          dg.age: "age", dg.gender: "gender"})  # fmt: skip
    studies = records.merge(diagnoses.drop_duplicates("study_id"), on="study_id", how="left", indicator=True)
    studies["ecg_time"] = _times(studies["ecg_time"])
    reasons = np.select(
        [studies["_merge"] == "left_only", studies["ecg_time"].isna(), studies["fold"].isna()],
        ["no diagnosis row (ext-ICD)", "unparseable ecg_time", "no fold"],
        default="",
    )
    for study_id, reason in zip(studies["study_id"], reasons, strict=True):
        if reason:
            skipped.append((int(study_id), reason))
    studies = studies[reasons == ""].drop(columns="_merge").reset_index(drop=True)
    studies["fold"] = studies["fold"].astype(int)
    return studies


# ---------------------------------------------------------------- ECGs


def _load_ecgs(
    root: Path,
    layout: DataLayout,
    config: CohortConfig,
    studies: pd.DataFrame,
    ecg_path: Path,
    skipped: list[tuple[int, str]],
    workers: int | None,
    progress: bool,
) -> np.ndarray:
    """Preprocess every study's WFDB record, appending rows to ``ecg_path``; returns the ok mask."""
    ecg_root = root / layout.ecg_root
    jobs = [(ecg_root / p, str(s), str(sub), config.preprocess)
            for p, s, sub in zip(studies["path"], studies["study_id"], studies["subject_id"], strict=True)]  # fmt: skip
    expected_shape = (len(config.preprocess.lead_order), _expected_samples(config))
    ok = np.zeros(len(jobs), dtype=bool)
    with ecg_path.open("wb") as sink, tqdm(total=len(jobs), unit="ecg", desc="load ECGs", disable=not progress) as bar:
        for i, (signal, reason) in enumerate(_map(_load_one_ecg, jobs, workers)):
            bar.update()
            if signal is not None and signal.shape != expected_shape:
                signal, reason = None, f"duration: {signal.shape[1]} samples, expected {expected_shape[1]}"
            if signal is None:
                skipped.append((int(studies["study_id"].iat[i]), reason))
                continue
            sink.write(np.ascontiguousarray(signal, dtype=np.float32).tobytes())
            ok[i] = True
    return ok


def _expected_samples(config: CohortConfig, duration_s: float = 10.0) -> int:
    return round(duration_s * config.preprocess.fs_hz)


def _load_one_ecg(job: tuple[Path, str, str, PreprocessConfig]) -> tuple[np.ndarray | None, str]:
    path, study_id, subject_id, preprocess_config = job
    try:
        record = read_wfdb(path, record_id=study_id, subject_id=subject_id)
        return preprocess(record, preprocess_config), ""
    except (EcgReadError, InvalidEcgError) as exc:
        return None, f"{type(exc).__name__}: {exc.reason}"


def _map(function, jobs: list, workers: int | None) -> Iterator:  # type: ignore[no-untyped-def]
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    if n_workers <= 1 or len(jobs) < 64:
        yield from map(function, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(n_workers) as pool:
        yield from pool.imap(function, jobs, chunksize=32)


def _open_ecg(out_dir: Path, n_studies: int, config: CohortConfig) -> np.ndarray:
    shape = (n_studies, len(config.preprocess.lead_order), _expected_samples(config))
    if n_studies == 0:
        return np.zeros(shape, dtype=np.float32)
    return np.memmap(out_dir / ECG_FILE, dtype=np.float32, mode="r", shape=shape)


# ---------------------------------------------------------------- clinical events


def _relative_hours(events: pd.DataFrame, studies: pd.DataFrame, window_h: tuple[float, float]) -> pd.DataFrame:
    """Join events to the studies of the same subject and keep those inside the window around each ECG."""
    joined = events.merge(studies[["study_id", "subject_id", "ecg_time"]], on="subject_id")
    joined["t_h"] = (joined["charttime"] - joined["ecg_time"]).dt.total_seconds() / 3600.0
    inside = joined["t_h"].between(*window_h)
    return joined.loc[inside].drop(columns=["subject_id", "ecg_time", "charttime"])


def _read_lab_events(
    root: Path, layout: DataLayout, studies: pd.DataFrame, config: CohortConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Lab events near each ECG (study_id, var, t_h, value), and reference-range counts per lab."""
    cols = layout.columns.labevents
    itemid_to_lab = {itemid: lab for lab, itemids in layout.labs.items() for itemid in itemids}
    wanted = [cols.subject_id, cols.itemid, cols.charttime, cols.value, cols.ref_low, cols.ref_high]
    path = layout.resolve(root, layout.labevents)
    window_h = (config.feature_window_min[0] / 60.0, config.feature_window_min[1] / 60.0)
    subjects = set(studies["subject_id"])
    events, ref_counts = [], []
    for chunk in read_table(path, wanted, chunksize=LABEVENTS_CHUNK_ROWS):
        chunk = chunk[chunk[cols.itemid].isin(itemid_to_lab.keys()) & chunk[cols.subject_id].isin(subjects)]
        chunk = pd.DataFrame({
            "subject_id": chunk[cols.subject_id], "var": chunk[cols.itemid].map(itemid_to_lab),
            "charttime": _times(chunk[cols.charttime]), "value": pd.to_numeric(chunk[cols.value], errors="coerce"),
            "ref_low": pd.to_numeric(chunk[cols.ref_low], errors="coerce"),
            "ref_high": pd.to_numeric(chunk[cols.ref_high], errors="coerce"),
        }).dropna(subset=["charttime", "value"])  # fmt: skip
        counts = chunk.groupby(["var", "ref_low", "ref_high"], dropna=False).size().rename("n").reset_index()
        ref_counts.append(counts.rename(columns={"var": "lab"}))
        events.append(_relative_hours(chunk.drop(columns=["ref_low", "ref_high"]), studies, window_h))
    events_frame = pd.concat(events, ignore_index=True) if events else _empty_events()
    refs = pd.concat(ref_counts, ignore_index=True) if ref_counts else pd.DataFrame(
        columns=["lab", "ref_low", "ref_high", "n"])  # fmt: skip
    return events_frame, refs


def _empty_events() -> pd.DataFrame:
    return pd.DataFrame({"study_id": pd.Series(dtype=np.int64), "var": pd.Series(dtype=str),
                         "value": pd.Series(dtype=float), "t_h": pd.Series(dtype=float)})  # fmt: skip


def _read_vital_events(root: Path, layout: DataLayout, studies: pd.DataFrame, config: CohortConfig) -> pd.DataFrame:
    stays_cols, vital_cols = layout.columns.edstays, layout.columns.vitalsign
    stays = read_table(layout.resolve(root, layout.edstays), [stays_cols.subject_id, stays_cols.stay_id])
    vitals = read_table(layout.resolve(root, layout.vitalsign),
                        [vital_cols.stay_id, vital_cols.charttime, *layout.vitals.values()])  # fmt: skip
    vitals = vitals.merge(stays.rename(columns={stays_cols.stay_id: vital_cols.stay_id}), on=vital_cols.stay_id)
    long = vitals.melt(
        id_vars=[stays_cols.subject_id, vital_cols.charttime], value_vars=list(layout.vitals.values()),
        var_name="column", value_name="value",
    )  # fmt: skip
    column_to_key = {column: key for key, column in layout.vitals.items()}
    long = pd.DataFrame({
        "subject_id": long[stays_cols.subject_id], "var": long["column"].map(column_to_key),
        "charttime": _times(long[vital_cols.charttime]), "value": pd.to_numeric(long["value"], errors="coerce"),
    }).dropna(subset=["charttime", "value"])  # fmt: skip
    window_h = (config.feature_window_min[0] / 60.0, config.feature_window_min[1] / 60.0)
    return _relative_hours(long, studies, window_h)


def _closest_to_ecg(lab_events: pd.DataFrame, window_h: float) -> pd.DataFrame:
    """Per (study, lab), the value measured closest to the ECG within ±``window_h``."""
    near = lab_events.loc[lab_events["t_h"].abs() <= window_h].copy()
    near["distance"] = near["t_h"].abs()
    best = near.sort_values(["study_id", "var", "distance"], kind="stable").drop_duplicates(["study_id", "var"])
    return best.rename(columns={"var": "lab"})[["study_id", "lab", "value"]]


# ---------------------------------------------------------------- features


def _clinical_features(
    root: Path, layout: DataLayout, config: CohortConfig, studies: pd.DataFrame, lab_events: pd.DataFrame
) -> tuple[np.ndarray, tuple[str, ...]]:
    study_ids = studies["study_id"].to_numpy(np.int64)
    if layout.features_table is not None:
        return _precomputed_features(layout.resolve(root, layout.features_table), study_ids)
    variables = (*layout.labs.keys(), *layout.vitals.keys())
    events = pd.concat([lab_events, _read_vital_events(root, layout, studies, config)], ignore_index=True)
    female = studies["gender"].astype(str).str.upper().str.startswith("F").to_numpy()
    demographics = demographic_features(
        pd.to_numeric(studies["age"], errors="coerce").to_numpy(), female, _ethnicities(root, layout, studies)
    )
    biometrics = _biometrics(root, layout, studies, config.omr_window_days)
    stats = window_statistics(events, study_ids, variables)
    return np.column_stack([demographics, biometrics, stats]), feature_names(variables)


def _precomputed_features(path: Path, study_ids: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """An MDS-ED-style table: ``study_id`` plus numeric feature columns, NaN where not measured."""
    table = read_table(path, ["study_id"], every_column=True)
    numeric = table.set_index("study_id").apply(pd.to_numeric, errors="coerce")
    aligned = numeric.reindex(study_ids)
    return aligned.to_numpy(np.float64), tuple(str(c) for c in aligned.columns)


def _ethnicities(root: Path, layout: DataLayout, studies: pd.DataFrame) -> list[str]:
    cols = layout.columns.edstays
    stays = read_table(layout.resolve(root, layout.edstays), [cols.subject_id, cols.race])
    race = stays.drop_duplicates(cols.subject_id).set_index(cols.subject_id)[cols.race]
    return [ethnicity_group(r) for r in studies["subject_id"].map(race)]


def _biometrics(root: Path, layout: DataLayout, studies: pd.DataFrame, window_days: float) -> np.ndarray:
    """BMI, height (cm) and weight (kg) from the OMR entry closest to the ECG within ±``window_days``."""
    cols = layout.columns.omr
    omr = read_table(layout.resolve(root, layout.omr), [cols.subject_id, cols.chartdate, cols.result_name,
                                                         cols.result_value])  # fmt: skip
    name_to_key = {name: key for key, name in layout.omr_names.items()}
    omr = pd.DataFrame({
        "subject_id": omr[cols.subject_id], "var": omr[cols.result_name].map(name_to_key),
        "charttime": _times(omr[cols.chartdate]), "value": pd.to_numeric(omr[cols.result_value], errors="coerce"),
    }).dropna()  # fmt: skip
    omr["value"] *= omr["var"].map({key: factor for key, (_, factor) in OMR_BIOMETRICS.items()}).fillna(1.0)
    near = _relative_hours(omr, studies, (-24.0 * window_days, 24.0 * window_days))
    near["distance"] = near["t_h"].abs()
    best = near.sort_values("distance", kind="stable").drop_duplicates(["study_id", "var"])
    wide = best.pivot(index="study_id", columns="var", values="value")
    return wide.reindex(index=studies["study_id"], columns=list(BIOMETRIC_FEATURES)).to_numpy(np.float64)


# ---------------------------------------------------------------- persistence


def _fingerprint(cohort: Cohort) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(cohort.study_ids).tobytes())
    digest.update(np.ascontiguousarray(cohort.folds).tobytes())
    digest.update(json.dumps([cohort.feature_names, cohort.dx_codes, [t.name for t in cohort.lab_targets]]).encode())
    for start in range(0, len(cohort.ecg), 1024):
        digest.update(np.ascontiguousarray(cohort.ecg[start : start + 1024]).tobytes())
    return digest.hexdigest()


def _save(cohort: Cohort, out_dir: Path, skipped: list[tuple[int, str]]) -> None:
    np.savez(out_dir / "arrays.npz", study_ids=cohort.study_ids, subject_ids=cohort.subject_ids, folds=cohort.folds,
             features=cohort.features, feature_medians=cohort.feature_medians, dx_labels=cohort.dx_labels,
             lab_labels=cohort.lab_labels)  # fmt: skip
    with (out_dir / "skipped.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("study_id", "reason"))
        writer.writerows(skipped)
    meta = {
        "n_studies": len(cohort.study_ids),
        "ecg_shape": list(cohort.ecg.shape),
        "preprocess": cohort.config.preprocess.to_dict(),
        "config": {k: v for k, v in _config_dict(cohort.config).items() if k != "preprocess"},
        "feature_names": list(cohort.feature_names),
        "dx_codes": list(cohort.dx_codes),
        "lab_targets": [{"lab": t.lab, "direction": t.direction, "threshold": t.threshold} for t in cohort.lab_targets],
        "skipped": cohort.skipped,
        "fingerprint": cohort.fingerprint,
        "simulator_version": cohort.simulator_version,
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def _simulator_version(root: Path) -> str | None:
    """The version in the simulated hospital's marker, or None for real data (no marker)."""
    marker = root / SIMULATED_MARKER
    if not marker.exists():
        return None
    try:
        return str(json.loads(marker.read_text())["simulator_version"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(marker, f"unreadable simulator marker: {exc!r}") from exc


def _config_dict(config: CohortConfig) -> dict[str, object]:
    return {name: getattr(config, name) for name in CohortConfig.__dataclass_fields__}


def load_cohort(out_dir: Path) -> Cohort:
    """Open a cohort written by :func:`build_cohort` (the ECGs stay memory-mapped)."""
    meta_path = out_dir / META_FILE
    if not meta_path.exists():
        raise DatasetError(meta_path, "no cohort here; build it first (ecg-train cohort-report or run)")
    meta = json.loads(meta_path.read_text())
    config = CohortConfig(preprocess=PreprocessConfig.from_dict(meta["preprocess"]),
                          **{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()})  # fmt: skip
    arrays = np.load(out_dir / "arrays.npz")
    return Cohort(
        study_ids=arrays["study_ids"], subject_ids=arrays["subject_ids"], folds=arrays["folds"],
        ecg=_open_ecg(out_dir, meta["n_studies"], config), features=arrays["features"],
        feature_names=tuple(meta["feature_names"]), feature_medians=arrays["feature_medians"],
        dx_codes=tuple(meta["dx_codes"]), dx_labels=arrays["dx_labels"],
        lab_targets=tuple(LabTarget(**t) for t in meta["lab_targets"]), lab_labels=arrays["lab_labels"],
        config=config, skipped=meta["skipped"], fingerprint=meta["fingerprint"],
        simulator_version=meta.get("simulator_version"),
    )  # fmt: skip
