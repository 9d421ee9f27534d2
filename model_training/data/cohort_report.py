"""What the cohort holds, and how visible each diagnosis is from the ECG versus from the clinical data.

The visibility table fits two logistic regressions per diagnosis on the training
folds — one on handcrafted ECG features (rate, RR irregularity, intervals, voltages,
ST levels), one on the clinical features with their missingness mask — and reports
held-out AUROC (validation + test folds). A testbed for "transferring clinical
knowledge into the ECG" needs labels of all three kinds: ECG-visible, partly
visible, and visible only in the clinical data.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from model_training.data.catalogue import ICD10_TITLES
from model_training.data.cohort import Cohort
from model_training.data.ecg_features import FEATURE_NAMES as ECG_FEATURE_NAMES
from model_training.data.ecg_features import extract_features_batch

MIN_POSITIVES_PER_SPLIT = 5


@dataclass(frozen=True, slots=True)
class Prevalence:
    kind: str  # "diagnosis" | "lab"
    label: str
    display: str
    positives: int
    known: int

    @property
    def prevalence(self) -> float:
        return self.positives / self.known if self.known else float("nan")


@dataclass(frozen=True, slots=True)
class Visibility:
    code: str
    display: str
    expected: str  # what the dataset's producer documents (the simulator's visibility), "" for real data
    positives: int
    auroc_ecg: float
    auroc_clinical: float


def icd_display(code: str) -> str:
    """Display for a code or, for a parent made by propagation, the displays it groups."""
    if code in ICD10_TITLES:
        return ICD10_TITLES[code]
    children = sorted({d for c, d in ICD10_TITLES.items() if c.startswith(code)})
    return children[0] if len(children) == 1 else ("; ".join(children[:2]) + (" …" if len(children) > 2 else ""))


def prevalence_table(cohort: Cohort) -> list[Prevalence]:
    rows = [
        Prevalence("diagnosis", code, icd_display(code), int(cohort.dx_labels[:, j].sum()), len(cohort.study_ids))
        for j, code in enumerate(cohort.dx_codes)
    ]
    for j, target in enumerate(cohort.lab_targets):
        column = cohort.lab_labels[:, j]
        known = ~np.isnan(column)
        sign = "<" if target.direction == "low" else ">"
        rows.append(Prevalence("lab", target.name, f"{target.lab} {sign} {target.threshold:g}",
                               int(np.nansum(column)), int(known.sum())))  # fmt: skip
    return rows


def ecg_feature_matrix(cohort: Cohort, batch: int = 512) -> np.ndarray:
    fs_hz = cohort.config.preprocess.fs_hz
    starts = range(0, len(cohort.ecg), batch)
    parts = [extract_features_batch(np.asarray(cohort.ecg[i : i + batch]), fs_hz) for i in starts]
    return np.concatenate(parts) if parts else np.zeros((0, len(ECG_FEATURE_NAMES)))


def visibility_table(
    cohort: Cohort, ecg_features: np.ndarray, expected: Mapping[str, str] | None = None
) -> list[Visibility]:
    """Held-out AUROC per diagnosis from ECG features and from clinical features; ``expected``: code → documented."""
    train = cohort.split("train")
    held_out = np.concatenate([cohort.split("val"), cohort.split("test")])
    ecg_inputs = _impute_with_train_median(ecg_features, train)
    values, mask = cohort.clinical_inputs()
    clinical_inputs = np.concatenate([values, mask], axis=1)
    expected = expected or {}
    rows = []
    for j, code in enumerate(cohort.dx_codes):
        y = cohort.dx_labels[:, j]
        rows.append(Visibility(
            code=code, display=icd_display(code), expected=expected.get(code, ""), positives=int(y.sum()),
            auroc_ecg=_held_out_auroc(ecg_inputs, y, train, held_out),
            auroc_clinical=_held_out_auroc(clinical_inputs, y, train, held_out),
        ))  # fmt: skip
    return rows


def _impute_with_train_median(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    medians = np.zeros(x.shape[1])
    for j in range(x.shape[1]):
        observed = x[train, j][~np.isnan(x[train, j])]
        medians[j] = np.median(observed) if observed.size else 0.0
    return np.where(np.isnan(x), medians, x)


def _held_out_auroc(x: np.ndarray, y: np.ndarray, train: np.ndarray, held_out: np.ndarray) -> float:
    if min(y[train].sum(), (1 - y[train]).sum(), y[held_out].sum(), (1 - y[held_out]).sum()) < MIN_POSITIVES_PER_SPLIT:
        return float("nan")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500))
    with warnings.catch_warnings():
        # A few labels converge slowly; an AUROC from 500 iterations is still the honest figure.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x[train], y[train])
    return float(roc_auc_score(y[held_out], model.predict_proba(x[held_out])[:, 1]))


def format_report(cohort: Cohort, prevalences: list[Prevalence], visibility: list[Visibility]) -> str:
    lines = [
        "# Cohort report",
        "",
        f"Studies: {len(cohort.study_ids)} (train {len(cohort.split('train'))}, val {len(cohort.split('val'))}, "
        f"test {len(cohort.split('test'))}); patients: {len(np.unique(cohort.subject_ids))}",
        f"Skipped: {cohort.skipped or 'none'}",
        f"Clinical features: {len(cohort.feature_names)}; diagnosis labels: {len(cohort.dx_codes)}; "
        f"lab-abnormality targets: {len(cohort.lab_targets)}",
        f"Fingerprint: {cohort.fingerprint[:16]}",
        "",
        "## Prevalence",
        "",
        "| kind | label | description | positives | known | prevalence |",
        "|---|---|---|---:|---:|---:|",
        *(_prevalence_row(p) for p in prevalences),
        "",
        "## Visibility: held-out AUROC of logistic regression, ECG features vs clinical features",
        "",
        "| code | description | simulator says | positives | AUROC ECG | AUROC clinical |",
        "|---|---|---|---:|---:|---:|",
        *(_visibility_row(v) for v in visibility),
        "",
        _visibility_summary(visibility),
    ]
    return "\n".join(lines) + "\n"


def _prevalence_row(p: Prevalence) -> str:
    return f"| {p.kind} | {p.label} | {p.display} | {p.positives} | {p.known} | {p.prevalence:.3f} |"


def _visibility_row(v: Visibility) -> str:
    return f"| {v.code} | {v.display} | {v.expected} | {v.positives} | {v.auroc_ecg:.3f} | {v.auroc_clinical:.3f} |"


def _visibility_summary(visibility: list[Visibility]) -> str:
    """How many labels fall in each band, by what the ECG alone achieves."""
    measured = [v for v in visibility if not np.isnan(v.auroc_ecg)]
    visible = sum(v.auroc_ecg >= 0.80 for v in measured)
    partly = sum(0.60 <= v.auroc_ecg < 0.80 for v in measured)
    invisible = sum(v.auroc_ecg < 0.60 and v.auroc_clinical >= 0.65 for v in measured)
    return (
        f"ECG-visible (AUROC ≥ 0.80): {visible}; partly visible (0.60–0.80): {partly}; "
        f"invisible on the ECG but found by the clinical data (ECG < 0.60, clinical ≥ 0.65): {invisible}"
    )


def report_json(prevalences: list[Prevalence], visibility: list[Visibility]) -> dict[str, object]:
    return {
        "prevalence": [asdict(p) | {"prevalence": p.prevalence} for p in prevalences],
        "visibility": [asdict(v) for v in visibility],
    }
