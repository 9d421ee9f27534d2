"""Per-label probability calibration fit on the validation fold, and how well calibrated a model is.

Why Platt scaling, per label: ``sigmoid(a · logit(p) + b)`` with ``a > 0``.

- Temperature scaling (one ``a``, ``b = 0``) only sharpens or flattens; a multi-label
  model trained with BCE on labels of 1 % to 60 % prevalence is off by a *shift* that
  differs per label (the rare ones are over-called), which needs the intercept.
- Isotonic regression is exact in TorchScript only as a step function, turns close
  scores into ties (it changes the AUROC and makes thresholds ambiguous), and with the
  handful of validation positives a rare label has, it overfits.
- Two parameters per label fit stably on a few hundred studies; ``a > 0`` (enforced as
  a bound) keeps every label's ranking, so AUROC is unchanged and thresholds map one to one.
- Platt's own targets, (N₊ + 1)/(N₊ + 2) and 1/(N₋ + 2) instead of 1 and 0, keep a
  label with few positives from being mapped to certainties.

A label whose validation fold lacks a class keeps the identity map.

ECE (expected calibration error) uses **10 equal-width bins** of the predicted probability
on [0, 1]: Σ_bins (n_bin / n) · |mean(y) − mean(p)| per label over studies with a known
label, reported as the mean over labels (diagnoses and lab targets separately). The
reliability curve pools every label's (p, y) pairs into the same bins.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize

from model_training.evaluate import ModelScores, RunPredictions
from model_training.scoring import LOGIT_EPS, PlattCalibration

METHOD = "platt_scaling_per_label_on_validation"
CALIBRATION_FILE = "calibration.json"
ECE_BINS = 10
MIN_SLOPE = 1e-3  # the bound that keeps the map increasing
MAX_SLOPE = 100.0


@dataclass(frozen=True, slots=True)
class PlattMap:
    """``sigmoid(slope · logit(p) + intercept)``; the identity is slope 1, intercept 0."""

    slope: float = 1.0
    intercept: float = 0.0

    def apply(self, prob: np.ndarray) -> np.ndarray:
        return _sigmoid(self.slope * _logit(prob) + self.intercept)


def _logit(prob: np.ndarray) -> np.ndarray:
    clamped = np.clip(np.asarray(prob, dtype=np.float64), LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(clamped) - np.log1p(-clamped)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warning for large |x|


def fit_platt(y_true: np.ndarray, prob: np.ndarray) -> PlattMap:
    """The Platt map minimising log-loss against Platt's smoothed targets; NaN labels ignored."""
    known = ~np.isnan(np.asarray(y_true, dtype=np.float64))
    y, z = np.asarray(y_true, dtype=np.float64)[known], _logit(np.asarray(prob)[known])
    n_positive, n_negative = int(y.sum()), int((1 - y).sum())
    if n_positive == 0 or n_negative == 0:
        return PlattMap()
    target = np.where(y == 1, (n_positive + 1.0) / (n_positive + 2.0), 1.0 / (n_negative + 2.0))

    def loss_and_gradient(params: np.ndarray) -> tuple[float, np.ndarray]:
        logit = params[0] * z + params[1]
        # log-loss written with logaddexp: stable for any logit
        loss = float(np.sum(target * np.logaddexp(0.0, -logit) + (1.0 - target) * np.logaddexp(0.0, logit)))
        residual = _sigmoid(logit) - target
        return loss, np.array([np.dot(residual, z), residual.sum()])

    result = minimize(loss_and_gradient, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B",
                      bounds=[(MIN_SLOPE, MAX_SLOPE), (None, None)])  # fmt: skip
    return PlattMap(float(result.x[0]), float(result.x[1]))


@dataclass(frozen=True, slots=True)
class LabelCalibration:
    """One Platt map per diagnosis code and per lab target, in the model's output order."""

    diagnosis: dict[str, PlattMap]
    labs: dict[str, PlattMap]
    method: str = METHOD

    @classmethod
    def fit(
        cls, dx_codes: tuple[str, ...], y_dx: np.ndarray, dx_prob: np.ndarray,
        lab_targets: tuple[str, ...], y_lab: np.ndarray, lab_prob: np.ndarray,
    ) -> LabelCalibration:  # fmt: skip
        """Fit on the validation fold's labels and uncalibrated probabilities."""
        return cls(
            {code: fit_platt(y_dx[:, j], dx_prob[:, j]) for j, code in enumerate(dx_codes)},
            {target: fit_platt(y_lab[:, j], lab_prob[:, j]) for j, target in enumerate(lab_targets)},
        )

    def apply_diagnosis(self, prob: np.ndarray) -> np.ndarray:
        return _apply(tuple(self.diagnosis.values()), prob)

    def apply_labs(self, prob: np.ndarray) -> np.ndarray:
        return _apply(tuple(self.labs.values()), prob)

    def modules(self) -> tuple[PlattCalibration, PlattCalibration]:
        """The (diagnosis, lab) maps as torch modules for :class:`model_training.scoring.EcgScoringModule`."""
        return _module(tuple(self.diagnosis.values())), _module(tuple(self.labs.values()))

    def save(self, path: Path) -> None:
        document = {"method": self.method} | {
            kind: {name: asdict(m) for name, m in maps.items()}
            for kind, maps in (("diagnosis", self.diagnosis), ("labs", self.labs))
        }
        path.write_text(json.dumps(document, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> LabelCalibration:
        document = json.loads(path.read_text())
        return cls(
            {code: PlattMap(**m) for code, m in document["diagnosis"].items()},
            {target: PlattMap(**m) for target, m in document["labs"].items()},
            document["method"],
        )

    def in_order(self, dx_codes: tuple[str, ...], lab_targets: tuple[str, ...]) -> LabelCalibration:
        """The maps re-keyed in the model's output order; a label without a map is an error, not the identity."""
        missing = sorted((set(dx_codes) - set(self.diagnosis)) | (set(lab_targets) - set(self.labs)))
        if missing:
            raise KeyError(f"no calibration map for {missing}")
        return LabelCalibration(
            {c: self.diagnosis[c] for c in dx_codes}, {t: self.labs[t] for t in lab_targets}, self.method
        )


def _apply(maps: tuple[PlattMap, ...], prob: np.ndarray) -> np.ndarray:
    if prob.shape[1] != len(maps):
        raise ValueError(f"{prob.shape[1]} probability columns for {len(maps)} calibration maps")
    slope, intercept = (np.array([getattr(m, name) for m in maps]) for name in ("slope", "intercept"))
    return _sigmoid(slope * _logit(prob) + intercept).astype(np.float32)


def _module(maps: tuple[PlattMap, ...]) -> PlattCalibration:
    return PlattCalibration(
        torch.tensor([m.slope for m in maps], dtype=torch.float32),
        torch.tensor([m.intercept for m in maps], dtype=torch.float32),
    )


# ---------------------------------------------------------------- measuring it


def _bin_index(prob: np.ndarray, n_bins: int) -> np.ndarray:
    return np.clip((prob * n_bins).astype(np.int64), 0, n_bins - 1)


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE of one label over ``n_bins`` equal-width bins; NaN labels ignored; NaN when none is known."""
    known = ~np.isnan(np.asarray(y_true, dtype=np.float64))
    y, p = np.asarray(y_true, dtype=np.float64)[known], np.asarray(prob, dtype=np.float64)[known]
    if y.size == 0:
        return float("nan")
    bins = _bin_index(p, n_bins)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, weights=y, minlength=n_bins) - np.bincount(bins, weights=p, minlength=n_bins))
    return float(gap.sum() / count.sum())  # Σ n_b/n · |Σy/n_b − Σp/n_b| = Σ |Σy − Σp| / n


def mean_ece(y_true: np.ndarray, prob: np.ndarray, n_bins: int = ECE_BINS) -> float | None:
    """The mean over labels [studies, labels] of each label's ECE (labels with no known value left out)."""
    per_label = [expected_calibration_error(y_true[:, j], prob[:, j], n_bins) for j in range(y_true.shape[1])]
    defined = [e for e in per_label if np.isfinite(e)]
    return float(np.mean(defined)) if defined else None


@dataclass(frozen=True, slots=True)
class ReliabilityCurve:
    """Every label's (p, y) pooled into equal-width bins: mean predicted, observed rate, count (empty bins left out)."""

    mean_predicted: tuple[float, ...]
    observed: tuple[float, ...]
    count: tuple[int, ...]

    @classmethod
    def pooled(cls, y_true: np.ndarray, prob: np.ndarray, n_bins: int = ECE_BINS) -> ReliabilityCurve:
        y, p = np.asarray(y_true, dtype=np.float64).ravel(), np.asarray(prob, dtype=np.float64).ravel()
        known = ~np.isnan(y)
        bins = _bin_index(p[known], n_bins)
        count = np.bincount(bins, minlength=n_bins)
        used = count > 0
        sum_p = np.bincount(bins, weights=p[known], minlength=n_bins)
        sum_y = np.bincount(bins, weights=y[known], minlength=n_bins)
        return cls(
            tuple(float(v) for v in sum_p[used] / count[used]),
            tuple(float(v) for v in sum_y[used] / count[used]),
            tuple(int(v) for v in count[used]),
        )


def calibration_summary(y_val: np.ndarray, y_test: np.ndarray, raw: tuple[np.ndarray, np.ndarray],
                        calibrated: tuple[np.ndarray, np.ndarray]) -> dict:  # fmt: skip
    """ECE (mean over labels) and the pooled reliability curve, before and after, on validation and test.

    ``raw`` and ``calibrated`` are (validation, test) probabilities [studies, labels] of one label family.
    """
    folds = {"val": (y_val, raw[0], calibrated[0]), "test": (y_test, raw[1], calibrated[1])}
    return {
        "ece": {fold: {"before": mean_ece(y, before), "after": mean_ece(y, after)}
                for fold, (y, before, after) in folds.items()},
        "reliability": {fold: {"before": asdict(ReliabilityCurve.pooled(y, before)),
                               "after": asdict(ReliabilityCurve.pooled(y, after))}
                        for fold, (y, before, after) in folds.items()},
    }  # fmt: skip


# ---------------------------------------------------------------- one model of a run


def fit_calibration(raw: RunPredictions, model: str) -> LabelCalibration:
    """``model``'s per-label Platt maps, fit on its uncalibrated validation probabilities."""
    scores = raw.models[model]
    if scores.lab_prob_val is None:
        raise ValueError(f"model {model!r} has no lab outputs to calibrate")
    return LabelCalibration.fit(raw.dx_codes, raw.y_dx_val, scores.dx_prob_val,
                                raw.lab_targets, raw.y_lab_val, scores.lab_prob_val)  # fmt: skip


def calibrated_predictions(raw: RunPredictions, calibration: LabelCalibration, model: str) -> RunPredictions:
    """``raw`` with ``model``'s probabilities calibrated (the other models stay as they are)."""
    scores = raw.models[model]
    calibrated = ModelScores(
        calibration.apply_diagnosis(scores.dx_prob_val), calibration.apply_diagnosis(scores.dx_prob_test),
        calibration.apply_labs(scores.lab_prob_val), calibration.apply_labs(scores.lab_prob_test),
    )  # fmt: skip
    return dataclasses.replace(raw, models=raw.models | {model: calibrated})


def calibration_report(raw: RunPredictions, calibrated: RunPredictions, calibration: LabelCalibration,
                       model: str) -> dict:  # fmt: skip
    """The ``calibration`` section of metrics.json: method, and per label family ECE and reliability curves."""
    before, after = raw.models[model], calibrated.models[model]
    return {
        "method": calibration.method,
        "model": model,
        "ece_binning": f"{ECE_BINS} equal-width bins on [0, 1], mean over labels",
        "diagnosis": calibration_summary(raw.y_dx_val, raw.y_dx_test, (before.dx_prob_val, before.dx_prob_test),
                                         (after.dx_prob_val, after.dx_prob_test)),
        "labs": calibration_summary(raw.y_lab_val, raw.y_lab_test, (before.lab_prob_val, before.lab_prob_test),
                                    (after.lab_prob_val, after.lab_prob_test)),
    }  # fmt: skip
