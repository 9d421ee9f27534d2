"""The release policy: which labels a model writes back to the chart, and which it only stores.

Decided on the validation fold, per diagnosis and lab target, from the calibrated
probabilities at the label's operating threshold:

- AUROC with a percentile-bootstrap CI over validation studies (the bootstrap of
  :mod:`model_training.evaluate`, seeded);
- sensitivity, specificity and PPV at the threshold (``prob >= threshold``), the PPV at
  the validation fold's prevalence (studies with a known label);
- ``charted`` when the fold holds at least ``min_positives`` positives, the AUROC's lower
  CI bound reaches ``min_auroc_ci_low`` **and** the PPV reaches ``min_ppv``; otherwise the
  label is stored only.

Why those defaults (``release:`` in the training config):

- Lower CI bound ≥ 0.80, not the point estimate: a label the fold cannot tell apart from
  a weak one (few positives, wide interval) is not charted on luck. 0.80 is the level at
  which an ECG finding is commonly taken as a useful screening signal; the codes that
  filled charts with noise (hyperlipidemia, GERD, UTI) score 0.66–0.75.
- PPV ≥ 0.30: at most about two false findings per true one. Below that, a finding
  that only prompts a confirmatory test is ignored by the people who read it (alert
  fatigue), and a chart entry costs every later reader time. PPV depends on
  prevalence, so the entry records the prevalence it holds at (see
  :class:`model_training.artifact.ReleaseEntry` for the conversion to a site's).
- At least 10 positives: with fewer, the percentile bootstrap has too few distinct
  resamples to bound anything. With one positive, every resample that holds it
  repeats the same rank and the others are undefined and dropped, so the interval
  collapses onto the point estimate (a tiny run charted a 1-in-37 code at "AUROC
  0.97 [0.94, 1.00]"), and the PPV rests on a call or two.

Both are chosen on the fold the thresholds were chosen on, so they are optimistic; the
test fold's figures are in ``report.md`` beside them.

Statistics are not the only gate: codes under a prefix of ``never_charted`` (default: ICD-10
chapter V, mental and behavioural disorders, ``F``, and chapter XXI, factors influencing health
status, ``Z``) are stored only, whatever their figures. An ECG model finds their correlates (a
smoker's heart rate, the rhythm behind long-term anticoagulation), which is why they can score,
but a chart entry such as "nicotine dependence" or "long-term use of anticoagulants" drawn from
an ECG is a statement about the patient's behaviour or medication that the ECG cannot support
and that follows the patient into every later reading of the chart. The demo model charted
nicotine dependence (F17.21) on validation figures alone, with a test PPV of 0.20.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from model_training.artifact import ReleaseEntry, ReleaseRule
from model_training.evaluate import (
    CI_LEVEL,
    Estimate,
    OperatingThresholds,
    RunPredictions,
    bootstrap_weights,
    per_label_auroc,
)

MODEL = "ours"  # the model that ships


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """Confusion-matrix rates of one label at one threshold; None where the fold cannot define them."""

    sensitivity: float | None
    specificity: float | None
    ppv: float | None
    prevalence: float | None
    n_positive: int
    n_known: int


def operating_point(y_true: np.ndarray, prob: np.ndarray, threshold: float) -> OperatingPoint:
    """Rates of predicting ``prob >= threshold``; studies whose label is unknown (NaN) are left out."""
    known = ~np.isnan(np.asarray(y_true, dtype=np.float64))
    y = np.asarray(y_true, dtype=np.float64)[known] == 1
    called = np.asarray(prob)[known] >= threshold
    true_positive = int((y & called).sum())
    n_positive, n_negative, n_called = int(y.sum()), int((~y).sum()), int(called.sum())
    return OperatingPoint(
        sensitivity=_ratio(true_positive, n_positive),
        specificity=_ratio(int((~y & ~called).sum()), n_negative),
        ppv=_ratio(true_positive, n_called),
        prevalence=_ratio(n_positive, int(y.size)),
        n_positive=n_positive,
        n_known=int(y.size),
    )


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator > 0 else None


def decide(auroc_ci_low: float | None, ppv: float | None, n_positive: int, rule: ReleaseRule) -> tuple[bool, str]:
    """``(charted, reason)`` under ``rule``; an undefined AUROC bound or PPV is never charted."""
    failures = []
    if n_positive < rule.min_positives:
        failures.append(f"{n_positive} positives < {rule.min_positives}")
    if auroc_ci_low is None or auroc_ci_low < rule.min_auroc_ci_low:
        failures.append(f"AUROC CI low {_fmt(auroc_ci_low)} < {rule.min_auroc_ci_low:.2f}")
    if ppv is None or ppv < rule.min_ppv:
        failures.append(f"PPV {_fmt(ppv)} < {rule.min_ppv:.2f}")
    if failures:
        return False, "stored only: " + "; ".join(failures)
    return True, (
        f"charted: AUROC CI low {_fmt(auroc_ci_low)} >= {rule.min_auroc_ci_low:.2f}, "
        f"PPV {_fmt(ppv)} >= {rule.min_ppv:.2f}, {n_positive} positives"
    )


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def release_entry(auroc: Estimate, point: OperatingPoint, rule: ReleaseRule) -> ReleaseEntry:
    ci_low = _defined(auroc.ci_low)
    charted, reason = decide(ci_low, point.ppv, point.n_positive, rule)
    return ReleaseEntry(
        auroc=_defined(auroc.value), auroc_ci_low=ci_low, auroc_ci_high=_defined(auroc.ci_high),
        sensitivity=point.sensitivity, specificity=point.specificity, ppv=point.ppv, prevalence=point.prevalence,
        n_positive=point.n_positive, n_known=point.n_known, charted=charted, reason=reason,
    )  # fmt: skip


def _defined(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class ReleaseTable:
    """The rule and one entry per diagnosis code and lab target; what ``metrics.json`` and the manifest carry."""

    rule: ReleaseRule
    diagnosis: dict[str, ReleaseEntry]
    labs: dict[str, ReleaseEntry]

    def to_dict(self) -> dict:
        return {
            "rule": dataclasses.asdict(self.rule),
            "diagnosis": {code: dataclasses.asdict(e) for code, e in self.diagnosis.items()},
            "labs": {target: dataclasses.asdict(e) for target, e in self.labs.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> ReleaseTable:
        return cls(
            ReleaseRule(**data["rule"]),
            {code: ReleaseEntry(**e) for code, e in data["diagnosis"].items()},
            {target: ReleaseEntry(**e) for target, e in data["labs"].items()},
        )

    @classmethod
    def from_metrics(cls, metrics: dict) -> ReleaseTable:
        """The table :func:`release_table` computed, as ``metrics.json`` stores it under ``release``."""
        return cls.from_dict(metrics["release"])


def release_rule(
    *, min_auroc_ci_low: float, min_ppv: float, min_positives: int, n_bootstrap: int, seed: int
) -> ReleaseRule:
    return ReleaseRule(min_auroc_ci_low=min_auroc_ci_low, min_ppv=min_ppv, min_positives=min_positives,
                       ci_level=CI_LEVEL, n_bootstrap=n_bootstrap, seed=seed)  # fmt: skip


def release_table(
    predictions: RunPredictions, thresholds: OperatingThresholds, rule: ReleaseRule,
    *, never_charted: tuple[str, ...] = (),
) -> ReleaseTable:  # fmt: skip
    """Every label of the shipped model under ``rule``, on the validation fold; diagnosis codes under a prefix of
    ``never_charted`` are stored only whatever their figures (see the module docstring)."""
    scores = predictions.models[MODEL]
    weights = bootstrap_weights(predictions.y_dx_val.shape[0], rule.n_bootstrap, rule.seed)
    diagnosis = _entries(predictions.dx_codes, predictions.y_dx_val, scores.dx_prob_val, thresholds.diagnosis,
                         weights, rule)  # fmt: skip
    diagnosis = {code: _unless_excluded(code, entry, never_charted) for code, entry in diagnosis.items()}
    labs = {}
    if scores.lab_prob_val is not None:
        labs = _entries(predictions.lab_targets, predictions.y_lab_val, scores.lab_prob_val, thresholds.labs,
                        weights, rule)  # fmt: skip
    return ReleaseTable(rule, diagnosis, labs)


def _unless_excluded(code: str, entry: ReleaseEntry, never_charted: tuple[str, ...]) -> ReleaseEntry:
    """``entry``, stored only if ``code`` falls under a clinically excluded prefix (its figures kept)."""
    prefix = next((p for p in never_charted if code.startswith(p)), None)
    if prefix is None:
        return entry
    return dataclasses.replace(entry, charted=False, reason=f"stored only: codes under {prefix} are never charted "
                               f"from an ECG (clinical exclusion); figures: {entry.reason}")  # fmt: skip


def _entries(
    names: tuple[str, ...], y_val: np.ndarray, prob_val: np.ndarray, thresholds: dict[str, float],
    weights: np.ndarray, rule: ReleaseRule,
) -> dict[str, ReleaseEntry]:  # fmt: skip
    point = per_label_auroc(y_val, prob_val, np.ones((1, y_val.shape[0])))[:, 0]
    replicates = per_label_auroc(y_val, prob_val, weights)
    return {
        name: release_entry(
            Estimate.from_replicates(float(point[j]), replicates[j]),
            operating_point(y_val[:, j], prob_val[:, j], thresholds[name]),
            rule,
        )
        for j, name in enumerate(names)
    }
