"""Test-fold metrics with bootstrap confidence intervals, and operating thresholds from validation.

The bootstrap resamples studies with replacement (``n_bootstrap`` times, seeded).
Instead of materialising each resample, a replicate is a vector of multiplicities
(how often each study was drawn), and AUROC is computed as a weighted Mann–Whitney
statistic over one sort of the scores per label. This equals the AUROC of the
resampled data exactly (ties count one half) and takes about a second for 1,000
replicates × 3 models × 80 labels, where ``sklearn.metrics.roc_auc_score`` in a
loop takes minutes.

Rules, recorded in ``metrics.json`` under ``method``:

- Every model is scored on the **same** replicates, so differences between models
  (``delta_ours_minus_ecg_only``, ``gap_closed``) are paired.
- A label is left out of a replicate's macro average when that replicate holds only
  one class of it (its AUROC is undefined there); the point estimate likewise skips
  labels with a single class on the whole test fold.
- Lab labels are NaN where no value was measured near the ECG: per target, those
  studies get weight 0, so a replicate's studies count for the targets they have.
- Confidence intervals are the 2.5th and 97.5th percentiles of the replicates.
  ``gap_closed`` drops replicates where multimodal does not beat ECG-only (the ratio
  has no meaning there); how many were dropped is reported.
- Operating thresholds maximise F1 on the validation fold, per label and model
  (predict positive when ``prob >= threshold``); a label with no validation
  positive gets 0.5.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score

MODEL_NAMES: tuple[str, ...] = ("ecg_only", "ours", "multimodal")
CI_LEVEL = 0.95
THRESHOLD_RULE = "max_f1_on_validation_calling_at_most_3x_prevalence"
#: A label the model barely separates would otherwise be called in nearly everyone: "all positive" has
#: F1 = 2p / (1 + p), which beats every real cut of a weak score, and writes noise into every chart.
#: Operating points are therefore chosen among those calling at most this many times the label's prevalence.
MAX_CALLED_PER_POSITIVE = 3.0
FALLBACK_THRESHOLD = 0.5
METRICS_FILE = "metrics.json"


@dataclass(frozen=True, slots=True)
class ModelScores:
    """One model's probabilities [studies, labels] on the validation and test folds."""

    dx_prob_val: np.ndarray
    dx_prob_test: np.ndarray
    lab_prob_val: np.ndarray | None = None  # None for a model without lab heads
    lab_prob_test: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class RunPredictions:
    """Labels and every model's predictions for one training run."""

    dx_codes: tuple[str, ...]
    lab_targets: tuple[str, ...]
    y_dx_val: np.ndarray  # 0/1 [val, codes]
    y_dx_test: np.ndarray  # 0/1 [test, codes]
    y_lab_val: np.ndarray  # float [val, targets], NaN = unknown
    y_lab_test: np.ndarray  # float [test, targets], NaN = unknown
    models: dict[str, ModelScores]

    def __post_init__(self) -> None:
        missing = set(MODEL_NAMES) - set(self.models)
        if missing:
            raise ValueError(f"predictions lack models {sorted(missing)}")
        for name, scores in self.models.items():
            _check_shape(f"{name}.dx_prob_val", scores.dx_prob_val, self.y_dx_val.shape)
            _check_shape(f"{name}.dx_prob_test", scores.dx_prob_test, self.y_dx_test.shape)
            if scores.lab_prob_val is not None:
                _check_shape(f"{name}.lab_prob_val", scores.lab_prob_val, self.y_lab_val.shape)
            if scores.lab_prob_test is not None:
                _check_shape(f"{name}.lab_prob_test", scores.lab_prob_test, self.y_lab_test.shape)
        if self.y_dx_test.shape[1] != len(self.dx_codes) or self.y_lab_test.shape[1] != len(self.lab_targets):
            raise ValueError("label matrices and label names disagree in length")


def _check_shape(name: str, array: np.ndarray, expected: tuple[int, ...]) -> None:
    if array.shape != expected:
        raise ValueError(f"{name} has shape {array.shape}, expected {expected}")


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate on the full test fold and its bootstrap percentile interval."""

    value: float
    ci_low: float
    ci_high: float

    @classmethod
    def from_replicates(cls, value: float, replicates: np.ndarray) -> Estimate:
        finite = replicates[np.isfinite(replicates)]
        if finite.size == 0 or not np.isfinite(value):  # no interval around an undefined estimate
            return cls(float(value), math.nan, math.nan)
        tail_pct = 100.0 * (1.0 - CI_LEVEL) / 2.0
        low, high = np.percentile(finite, [tail_pct, 100.0 - tail_pct])
        return cls(float(value), float(low), float(high))

    def to_dict(self) -> dict[str, float | None]:
        return {
            "value": _json_float(self.value),
            "ci_low": _json_float(self.ci_low),
            "ci_high": _json_float(self.ci_high),
        }


@dataclass(frozen=True, slots=True)
class OperatingThresholds:
    """Per-label probability thresholds for one model, chosen on validation."""

    rule: str
    diagnosis: dict[str, float]
    labs: dict[str, float]

    @classmethod
    def from_metrics(cls, metrics: dict, model: str = "ours") -> OperatingThresholds:
        """The thresholds :func:`evaluate_run` stored for ``model``."""
        entry = metrics["thresholds"][model]
        return cls(metrics["thresholds"]["rule"], dict(entry["diagnosis"]), dict(entry["labs"]))


# ---------------------------------------------------------------- AUROC


def auroc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Rank-based AUROC of one label (ties count one half); NaN labels ignored; NaN if one class."""
    known = ~np.isnan(np.asarray(y_true, dtype=np.float64))
    return float(weighted_auroc(y_true[known], y_score[known], np.ones((1, int(known.sum()))))[0])


def weighted_auroc(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of one label under each row of ``weights`` [R, n] (study multiplicities); NaN where one class.

    Weighted Mann–Whitney: for every positive, the weight of negatives scored lower
    plus half of those tied, summed and divided by (positive weight × negative weight).
    One sort and one cumulative sum of negative weight serve all replicates.
    """
    order = np.argsort(y_score, kind="stable")
    sorted_score = y_score[order]
    positive = y_true[order] == 1
    sorted_weights = weights[:, order]
    # Ties: every study sees the negatives below its group of equal scores and those within it.
    group = np.r_[0, np.cumsum(np.diff(sorted_score) != 0)]
    group_start = np.flatnonzero(np.r_[True, np.diff(group) != 0])
    group_stop = np.r_[group_start[1:], len(sorted_score)]
    negatives_through = np.zeros((weights.shape[0], len(sorted_score) + 1), dtype=weights.dtype)
    np.cumsum(np.where(positive, 0, sorted_weights), axis=1, out=negatives_through[:, 1:])
    positive_group = group[positive]
    below = negatives_through[:, group_start[positive_group]]
    tied = negatives_through[:, group_stop[positive_group]] - below
    positive_weights = sorted_weights[:, positive]
    pairs_won = (positive_weights * (below + 0.5 * tied)).sum(axis=1, dtype=np.float64)
    pairs_total = positive_weights.sum(axis=1, dtype=np.float64) * negatives_through[:, -1].astype(np.float64)
    result = np.full(weights.shape[0], np.nan)
    np.divide(pairs_won, pairs_total, out=result, where=pairs_total > 0)
    return result


def bootstrap_weights(n_studies: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """[n_bootstrap, n_studies] multiplicities of ``n_bootstrap`` resamples with replacement."""
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_studies, size=(n_bootstrap, n_studies))
    flat = drawn + np.arange(n_bootstrap)[:, None] * n_studies
    return (
        np.bincount(flat.ravel(), minlength=n_bootstrap * n_studies).reshape(n_bootstrap, n_studies).astype(np.float32)
    )


def per_label_auroc(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[labels, R] AUROC of every label under every weight row; NaN labels (unknown) get weight 0."""
    columns = []
    for j in range(y_true.shape[1]):
        known = ~np.isnan(y_true[:, j].astype(np.float64))
        columns.append(weighted_auroc(y_true[known, j], y_score[known, j], weights[:, known]))
    return np.stack(columns) if columns else np.empty((0, weights.shape[0]))


def macro_average(per_label: np.ndarray) -> np.ndarray:
    """[R] mean over labels, skipping labels whose AUROC is undefined in that replicate."""
    defined = np.isfinite(per_label)
    count = defined.sum(axis=0)
    total = np.where(defined, per_label, 0.0).sum(axis=0)
    result = np.full(per_label.shape[1], np.nan)
    np.divide(total, count, out=result, where=count > 0)
    return result


# ---------------------------------------------------------------- thresholds


def max_f1_threshold(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """The score that maximises F1 when predicting ``score >= threshold``, among thresholds that call at most
    ``MAX_CALLED_PER_POSITIVE`` times as many studies as are positive; NaN labels ignored."""
    known = ~np.isnan(y_true.astype(np.float64))
    y, score = y_true[known].astype(np.float64), y_score[known]
    n_positive = y.sum()
    if n_positive == 0:
        return FALLBACK_THRESHOLD
    order = np.argsort(-score, kind="stable")
    sorted_score, true_positives = score[order], np.cumsum(y[order])
    # Only cut between distinct scores: tied studies are predicted alike.
    cut = np.r_[np.flatnonzero(np.diff(sorted_score)), len(sorted_score) - 1]
    predicted = cut + 1.0
    f1 = 2.0 * true_positives[cut] / (predicted + n_positive)
    f1[predicted > MAX_CALLED_PER_POSITIVE * n_positive] = -1.0  # never chosen while a narrower cut exists
    return float(sorted_score[cut[int(np.argmax(f1))]])


def operating_thresholds(predictions: RunPredictions, model: str) -> OperatingThresholds:
    scores = predictions.models[model]
    diagnosis = {
        code: max_f1_threshold(predictions.y_dx_val[:, j], scores.dx_prob_val[:, j])
        for j, code in enumerate(predictions.dx_codes)
    }
    labs = {}
    if scores.lab_prob_val is not None:
        labs = {
            target: max_f1_threshold(predictions.y_lab_val[:, j], scores.lab_prob_val[:, j])
            for j, target in enumerate(predictions.lab_targets)
        }
    return OperatingThresholds(THRESHOLD_RULE, diagnosis, labs)


# ---------------------------------------------------------------- the run


@dataclass(frozen=True, slots=True)
class _TaskAurocs:
    """Per-label AUROC on the full test fold [labels] and on every replicate [labels, R]."""

    point: np.ndarray
    replicates: np.ndarray

    @property
    def macro(self) -> Estimate:
        return Estimate.from_replicates(float(macro_average(self.point[:, None])[0]), macro_average(self.replicates))


def _task_aurocs(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray) -> _TaskAurocs:
    point = per_label_auroc(y_true, y_score, np.ones((1, y_true.shape[0])))[:, 0]
    return _TaskAurocs(point, per_label_auroc(y_true, y_score, weights))


def evaluate_run(
    predictions: RunPredictions,
    out_dir: Path,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    extra_sections: Mapping[str, object] | None = None,
) -> dict:
    """Compute every metric, write ``out_dir/metrics.json``, and return it (see the module docstring).

    ``extra_sections`` (the calibration and release table the pipeline computed) are written beside them.
    """
    weights = bootstrap_weights(predictions.y_dx_test.shape[0], n_bootstrap, seed)
    dx = {name: _task_aurocs(predictions.y_dx_test, m.dx_prob_test, weights) for name, m in predictions.models.items()}
    labs = {
        name: _task_aurocs(predictions.y_lab_test, m.lab_prob_test, weights)
        for name, m in predictions.models.items()
        if m.lab_prob_test is not None
    }
    metrics = {
        "method": _method(n_bootstrap, seed),
        "n_studies": {"val": int(predictions.y_dx_val.shape[0]), "test": int(predictions.y_dx_test.shape[0])},
        "diagnosis": _diagnosis_summary(dx, len(predictions.dx_codes)),
        "labs": {
            "n_targets": len(predictions.lab_targets),
            "macro_auroc": {name: aurocs.macro.to_dict() for name, aurocs in labs.items()},
        },
        "per_label": _per_label(predictions, dx, labs),
        "thresholds": {"rule": THRESHOLD_RULE}
        | {name: _thresholds_dict(predictions, name) for name in predictions.models},
    } | dict(extra_sections or {})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    return metrics


def _method(n_bootstrap: int, seed: int) -> dict:
    return {
        "bootstrap": "paired percentile bootstrap over test studies (same resamples for every model)",
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "ci_level": CI_LEVEL,
        "single_class_labels": "left out of the macro average of the replicate (or of the point estimate)",
        "unknown_lab_labels": "NaN labels get weight 0 for that target",
        "threshold_rule": THRESHOLD_RULE,
    }


def _diagnosis_summary(dx: dict[str, _TaskAurocs], n_codes: int) -> dict:
    macro_point = {name: float(macro_average(a.point[:, None])[0]) for name, a in dx.items()}
    macro_replicates = {name: macro_average(a.replicates) for name, a in dx.items()}
    delta = Estimate.from_replicates(
        macro_point["ours"] - macro_point["ecg_only"], macro_replicates["ours"] - macro_replicates["ecg_only"]
    )
    gap, dropped = _gap_closed(macro_point, macro_replicates)
    return {
        "n_labels": n_codes,
        "n_labels_scored": int(np.isfinite(dx["ours"].point).sum()),
        "macro_auroc": {name: a.macro.to_dict() for name, a in dx.items()},
        "delta_ours_minus_ecg_only": delta.to_dict(),
        "gap_closed": gap.to_dict() | {"replicates_dropped": dropped},
    }


def gap_closed(ours: np.ndarray | float, ecg_only: np.ndarray | float, multimodal: np.ndarray | float) -> np.ndarray:
    """``(ours - ecg_only) / (multimodal - ecg_only)``; NaN where multimodal does not beat ECG-only."""
    gap = np.asarray(multimodal, dtype=float) - np.asarray(ecg_only, dtype=float)
    gained = np.asarray(ours, dtype=float) - np.asarray(ecg_only, dtype=float)
    result = np.full(np.broadcast(gap, gained).shape, np.nan)
    np.divide(gained, gap, out=result, where=gap > 0)
    return result


def _gap_closed(point: dict[str, float], replicates: dict[str, np.ndarray]) -> tuple[Estimate, int]:
    value = float(gap_closed(point["ours"], point["ecg_only"], point["multimodal"]))
    per_replicate = gap_closed(replicates["ours"], replicates["ecg_only"], replicates["multimodal"])
    return Estimate.from_replicates(value, per_replicate), int((~np.isfinite(per_replicate)).sum())


def _per_label(predictions: RunPredictions, dx: dict[str, _TaskAurocs], labs: dict[str, _TaskAurocs]) -> dict:
    return {
        "diagnosis": _label_table(predictions.dx_codes, predictions.y_dx_test, dx, predictions, "dx_prob_test"),
        "labs": _label_table(predictions.lab_targets, predictions.y_lab_test, labs, predictions, "lab_prob_test"),
    }


def _label_table(
    names: tuple[str, ...], y_test: np.ndarray, aurocs: dict[str, _TaskAurocs], predictions: RunPredictions, field: str
) -> dict:
    table = {}
    for j, name in enumerate(names):
        known = ~np.isnan(y_test[:, j].astype(np.float64))
        y = y_test[known, j]
        entry: dict[str, object] = {"n_positive": int(y.sum()), "n_known": int(known.sum())}
        for model, task in aurocs.items():
            score = getattr(predictions.models[model], field)[known, j]
            entry[model] = {"auroc": _json_float(task.point[j]), "auprc": _json_float(_auprc(y, score))}
        table[name] = entry
    return table


def _auprc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    if y_true.sum() == 0:
        return math.nan
    return float(average_precision_score(y_true, y_score))


def _thresholds_dict(predictions: RunPredictions, model: str) -> dict:
    thresholds = operating_thresholds(predictions, model)
    return {"diagnosis": thresholds.diagnosis, "labs": thresholds.labs}


def _json_float(value: float) -> float | None:
    """JSON has no NaN: an undefined metric is written as null."""
    return float(value) if np.isfinite(value) else None
