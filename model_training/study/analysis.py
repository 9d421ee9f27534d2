"""From each cell's metrics to the study's answer: per-seed results, means ± sd, paired tests, goals.

Pure functions over numbers; reading and writing files is :mod:`model_training.study.runner`'s and
:mod:`model_training.study.report`'s.

* Per cell: the test-fold macro AUROC of each model (``metrics.json``), ``delta = ours - ecg_only``,
  ``gap closed = delta / (multimodal - ecg_only)`` (undefined when multimodal does not beat
  ECG-only), the method's lab-abnormality macro AUROC, and per visibility group (the simulator's
  documented visibility of each code) the macro AUROC of each model over the group's codes that all
  three models could be scored on.
* Per (arm, variant), across seeds: mean ± sd (ddof = 1) of each figure; for delta, a paired test:
  the one-sample t-test of the per-seed deltas (= the paired t-test of ours against ECG-only), its
  95 % CI from the t distribution, the exact Wilcoxon signed-rank p-value when there are at least 5
  seeds (fewer cannot reach p < 0.05 two-sided), and how many seeds have delta > 0.
* The improvement variants are several tests of one question (does some variant beat ECG-only?), so their paired
  t-test p-values on the primary arm are also given adjusted for multiplicity, by Holm's step-down method
  (S. Holm, "A simple sequentially rejective multiple test procedure", Scand. J. Statist. 6:65-70, 1979), which
  controls the family-wise error rate without assuming the tests independent (they share the seeds and the
  ECG-only model). The pre-registered variant is the confirmatory test and is not in that family.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from model_training.evaluate import MODEL_NAMES, gap_closed
from model_training.study.grid import Goals

GROUPS: tuple[str, ...] = ("visible", "partial", "invisible")
MIXED, UNDOCUMENTED = "mixed", "undocumented"
CI_LEVEL = 0.95
MIN_SEEDS_WILCOXON = 5
ICD_CUT = 5  # the cohort cuts codes to 5 characters (and adds their parents)


def code_visibility(codes: Iterable[str], documented: Mapping[str, str]) -> dict[str, str]:
    """Each cohort code's visibility group from the documented one of the codes it stands for.

    A cohort code is a documented code cut to 5 characters or one of its parents: it takes the group
    of every documented code it covers when they agree, ``mixed`` when they do not, ``undocumented``
    when it covers none.
    """
    groups = {}
    for code in codes:
        covered = {group for doc, group in documented.items() if doc[:ICD_CUT].startswith(code)}
        groups[code] = covered.pop() if len(covered) == 1 else (MIXED if covered else UNDOCUMENTED)
    return groups


@dataclass(frozen=True, slots=True)
class GroupAuroc:
    """Macro AUROC of each model over one visibility group's codes."""

    n_codes: int
    macro: dict[str, float]  # model → macro AUROC

    @property
    def delta(self) -> float:
        return self.macro["ours"] - self.macro["ecg_only"]


@dataclass(frozen=True, slots=True)
class CellResult:
    arm: str
    config: str
    seed: int
    macro: dict[str, float]  # model → test macro AUROC over diagnosis codes
    lab_macro: float  # the method's lab-abnormality macro AUROC
    groups: dict[str, GroupAuroc]  # visibility group → macro AUROC of each model

    @property
    def delta(self) -> float:
        return self.macro["ours"] - self.macro["ecg_only"]

    @property
    def gap_closed(self) -> float:
        return float(gap_closed(self.macro["ours"], self.macro["ecg_only"], self.macro["multimodal"]))


def cell_result(arm: str, config: str, seed: int, metrics: Mapping, visibility: Mapping[str, str]) -> CellResult:
    """One cell's figures from its ``metrics.json`` and its codes' visibility groups."""
    dx = metrics["diagnosis"]
    macro = {m: _number(dx["macro_auroc"][m]["value"]) for m in MODEL_NAMES}
    per_code = metrics["per_label"]["diagnosis"]
    groups = {}
    for group in GROUPS:
        scored = [code for code, g in visibility.items() if g == group and code in per_code
                  and all(per_code[code][m]["auroc"] is not None for m in MODEL_NAMES)]  # fmt: skip
        group_macro = {m: float(np.mean([per_code[c][m]["auroc"] for c in scored])) if scored else math.nan
                       for m in MODEL_NAMES}  # fmt: skip
        groups[group] = GroupAuroc(len(scored), group_macro)
    lab_macro = _number(metrics["labs"]["macro_auroc"]["ours"]["value"])
    return CellResult(arm, config, seed, macro, lab_macro, groups)


@dataclass(frozen=True, slots=True)
class Summary:
    """Mean ± sd (ddof = 1) over seeds of one figure; NaNs (undefined in a seed) left out and counted out of n."""

    n: int
    mean: float
    sd: float


def summarize(values: Iterable[float]) -> Summary:
    finite = np.array([v for v in values if math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return Summary(0, math.nan, math.nan)
    sd = float(np.std(finite, ddof=1)) if finite.size > 1 else math.nan
    return Summary(int(finite.size), float(finite.mean()), sd)


@dataclass(frozen=True, slots=True)
class PairedTest:
    """The paired comparison of ours against ECG-only across seeds."""

    n: int
    mean_delta: float
    sd_delta: float
    ci_low: float  # 95 % CI of the mean delta, t distribution with n - 1 degrees of freedom
    ci_high: float
    t: float
    p_t: float  # two-sided, paired t-test
    p_wilcoxon: float | None  # two-sided, exact signed-rank; None below MIN_SEEDS_WILCOXON seeds
    n_positive: int  # seeds with delta > 0


def paired_test(ours: Iterable[float], ecg_only: Iterable[float]) -> PairedTest:
    pairs = [(o, e) for o, e in zip(ours, ecg_only, strict=True) if math.isfinite(o) and math.isfinite(e)]
    a, b = np.array([p[0] for p in pairs], dtype=float), np.array([p[1] for p in pairs], dtype=float)
    deltas = a - b
    n = int(deltas.size)
    summary = summarize(deltas)
    if n < 2:
        return PairedTest(
            n, summary.mean, math.nan, math.nan, math.nan, math.nan, math.nan, None, int((deltas > 0).sum())
        )
    half_width = float(stats.t.ppf(0.5 + CI_LEVEL / 2, n - 1)) * summary.sd / math.sqrt(n)
    with warnings.catch_warnings():  # identical deltas: the t statistic is undefined, scipy warns and returns NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        t = stats.ttest_rel(a, b)
    p_wilcoxon = None
    if n >= MIN_SEEDS_WILCOXON and np.any(deltas != 0):
        p_wilcoxon = float(stats.wilcoxon(deltas, method="exact").pvalue)
    return PairedTest(n, summary.mean, summary.sd, summary.mean - half_width, summary.mean + half_width,
                      float(t.statistic), float(t.pvalue), p_wilcoxon, int((deltas > 0).sum()))  # fmt: skip


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """One visibility group across seeds."""

    n_codes: Summary
    macro: dict[str, Summary]
    delta: PairedTest


@dataclass(frozen=True, slots=True)
class ArmSummary:
    """One (arm, variant) across its seeds."""

    arm: str
    config: str
    seeds: tuple[int, ...]
    macro: dict[str, Summary]  # model → test macro AUROC
    delta: PairedTest  # the primary endpoint when (arm, config) is the pre-registered one
    gap_closed: Summary
    lab_macro: Summary
    groups: dict[str, GroupSummary]


def summarize_arm(results: list[CellResult]) -> ArmSummary:
    """Aggregate the cells of one (arm, variant); ``results`` share arm and config."""
    first = results[0]
    if any((r.arm, r.config) != (first.arm, first.config) for r in results):
        raise ValueError("summarize_arm takes the cells of one (arm, config)")
    groups = {}
    for group in GROUPS:
        cells = [r.groups[group] for r in results]
        groups[group] = GroupSummary(
            n_codes=summarize(float(c.n_codes) for c in cells),
            macro={m: summarize(c.macro[m] for c in cells) for m in MODEL_NAMES},
            delta=paired_test((c.macro["ours"] for c in cells), (c.macro["ecg_only"] for c in cells)),
        )
    return ArmSummary(
        arm=first.arm,
        config=first.config,
        seeds=tuple(r.seed for r in results),
        macro={m: summarize(r.macro[m] for r in results) for m in MODEL_NAMES},
        delta=paired_test((r.macro["ours"] for r in results), (r.macro["ecg_only"] for r in results)),
        gap_closed=summarize(r.gap_closed for r in results),
        lab_macro=summarize(r.lab_macro for r in results),
        groups=groups,
    )


def summarize_study(results: list[CellResult]) -> list[ArmSummary]:
    """One :class:`ArmSummary` per (arm, variant), in the order the cells come."""
    keys = list(dict.fromkeys((r.arm, r.config) for r in results))
    return [summarize_arm([r for r in results if (r.arm, r.config) == key]) for key in keys]


@dataclass(frozen=True, slots=True)
class GoalCheck:
    name: str
    target: str
    value: float
    met: bool


def check_goals(summary: ArmSummary, goals: Goals) -> list[GoalCheck]:
    """The pre-registered goals on one (arm, variant)."""
    delta, n = summary.delta, summary.delta.n
    checks = []
    if goals.delta_positive_every_seed:
        checks.append(GoalCheck("delta > 0 in every seed", f"{n} of {n} seeds", float(delta.n_positive),
                                n > 0 and delta.n_positive == n))  # fmt: skip
    gap, lab = summary.gap_closed.mean, summary.lab_macro.mean
    checks.append(GoalCheck("gap closed (mean over seeds)", f">= {goals.min_gap_closed:.2f}", gap,
                            math.isfinite(gap) and gap >= goals.min_gap_closed))  # fmt: skip
    checks.append(GoalCheck("lab macro AUROC (mean over seeds)", f">= {goals.min_lab_macro_auroc:.2f}", lab,
                            math.isfinite(lab) and lab >= goals.min_lab_macro_auroc))  # fmt: skip
    return checks


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``p_values`` tested together, in their order: the i-th smallest of the m
    defined ones times (m - i + 1), made non-decreasing in that order, capped at 1. NaN (a test with one seed)
    stays NaN and does not count in m."""
    defined = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    adjusted = [math.nan] * len(p_values)
    running_max = 0.0
    for rank, (p, index) in enumerate(defined):
        running_max = max(running_max, min(1.0, p * (len(defined) - rank)))
        adjusted[index] = running_max
    return adjusted


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)
