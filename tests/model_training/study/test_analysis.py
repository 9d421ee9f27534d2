"""The study's analysis on synthetic numbers: visibility groups, per-cell figures, paired tests, goals, report."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from model_training.study.analysis import (
    MIXED,
    UNDOCUMENTED,
    cell_result,
    check_goals,
    code_visibility,
    holm_adjusted,
    paired_test,
    summarize,
    summarize_study,
)
from model_training.study.grid import Goals, grid_from_dict
from model_training.study.report import StudyReport, markdown

MODELS = ("ecg_only", "ours", "multimodal")


def metrics(macro: dict[str, float], per_code: dict[str, tuple[float | None, ...]], lab: float = 0.75) -> dict:
    """A metrics.json as ``evaluate_run`` writes it, reduced to what the study reads."""
    per_label = {
        code: {m: {"auroc": a} for m, a in zip(MODELS, aurocs, strict=True)} for code, aurocs in per_code.items()
    }
    return {
        "diagnosis": {"macro_auroc": {m: {"value": v, "ci_low": None, "ci_high": None} for m, v in macro.items()}},
        "labs": {"macro_auroc": {"ours": {"value": lab, "ci_low": None, "ci_high": None}}},
        "per_label": {"diagnosis": per_label},
    }


def test_a_cohort_code_takes_the_visibility_of_the_documented_codes_it_stands_for():
    documented = {"I4891": "visible", "I2510": "partial", "I252": "partial", "E785": "invisible", "E780": "partial",
                  "F17210": "partial"}  # fmt: skip
    groups = code_visibility(["I48", "I4891", "I25", "I252", "E785", "E78", "F1721", "Z99"], documented)
    assert groups["I48"] == groups["I4891"] == "visible"
    assert groups["I25"] == groups["I252"] == "partial"
    assert groups["E785"] == "invisible"
    assert groups["F1721"] == "partial", "a 6-character documented code is cut to 5 like the cohort cuts it"
    assert groups["E78"] == MIXED, "a parent over invisible and partial codes belongs to neither"
    assert groups["Z99"] == UNDOCUMENTED


def test_a_cell_gives_delta_gap_closed_lab_auroc_and_group_macros():
    per_code = {"A": (0.90, 0.92, 0.95), "B": (0.60, 0.70, 0.80), "C": (0.50, 0.55, 0.90), "D": (None, 0.6, 0.7)}
    cell = cell_result("full", "ours", 3, metrics({"ecg_only": 0.70, "ours": 0.74, "multimodal": 0.80}, per_code),
                       {"A": "visible", "B": "partial", "C": "partial", "D": "partial"})  # fmt: skip
    assert cell.delta == pytest.approx(0.04)
    assert cell.gap_closed == pytest.approx(0.4)
    assert cell.lab_macro == 0.75
    assert cell.groups["visible"].n_codes == 1 and cell.groups["visible"].delta == pytest.approx(0.02)
    partial = cell.groups["partial"]
    assert partial.n_codes == 2, "a code one model could not be scored on is left out of every model's group macro"
    assert partial.macro["ours"] == pytest.approx(0.625) and partial.delta == pytest.approx(0.075)
    assert cell.groups["invisible"].n_codes == 0 and math.isnan(cell.groups["invisible"].delta)


def test_gap_closed_is_undefined_when_multimodal_does_not_beat_ecg_only():
    cell = cell_result("full", "ours", 0, metrics({"ecg_only": 0.8, "ours": 0.82, "multimodal": 0.79}, {}), {})
    assert math.isnan(cell.gap_closed)
    assert summarize([cell.gap_closed, 0.5]).n == 1


def test_mean_and_sd_use_ddof_1():
    summary = summarize([0.70, 0.72, 0.74])
    assert (summary.n, summary.mean, summary.sd) == (3, pytest.approx(0.72), pytest.approx(0.02))
    assert math.isnan(summarize([0.7]).sd)


def test_paired_test_of_five_seeds_matches_the_textbook_formulas():
    ecg_only = np.array([0.70, 0.71, 0.69, 0.72, 0.70])
    deltas = np.array([0.01, 0.03, 0.02, 0.05, 0.04])
    test = paired_test(ecg_only + deltas, ecg_only)
    sd = deltas.std(ddof=1)
    half_width = stats.t.ppf(0.975, 4) * sd / math.sqrt(5)
    assert (test.n, test.n_positive) == (5, 5)
    assert test.mean_delta == pytest.approx(0.03) and test.sd_delta == pytest.approx(sd)
    assert (test.ci_low, test.ci_high) == (pytest.approx(0.03 - half_width), pytest.approx(0.03 + half_width))
    t = 0.03 / (sd / math.sqrt(5))
    assert test.t == pytest.approx(t) and test.p_t == pytest.approx(2 * stats.t.sf(t, 4))
    assert test.p_wilcoxon == pytest.approx(2 / 2**5), "all five positive: the exact two-sided p is 2/32"


def test_below_five_seeds_there_is_no_wilcoxon_p_and_one_seed_has_no_interval():
    three = paired_test([0.75, 0.70, 0.74], [0.70, 0.71, 0.70])
    assert three.n == 3 and three.n_positive == 2 and three.p_wilcoxon is None and math.isfinite(three.p_t)
    one = paired_test([0.75], [0.70])
    assert one.mean_delta == pytest.approx(0.05) and math.isnan(one.ci_low) and math.isnan(one.p_t)


def cells(deltas: list[float], *, arm="full", config="ours", multimodal=0.80, lab=0.75) -> list:
    return [cell_result(arm, config, seed, metrics({"ecg_only": 0.70, "ours": 0.70 + d, "multimodal": multimodal},
                                                    {"A": (0.7, 0.7 + d, multimodal)}, lab), {"A": "partial"})
            for seed, d in enumerate(deltas)]  # fmt: skip


def test_goals_are_met_only_when_every_seed_improves_enough():
    goals = Goals(delta_positive_every_seed=True, min_gap_closed=0.35, min_lab_macro_auroc=0.70)
    met = check_goals(summarize_study(cells([0.04, 0.05, 0.04]))[0], goals)
    assert [g.met for g in met] == [True, True, True]
    one_seed_worse = check_goals(summarize_study(cells([0.05, -0.01, 0.08]))[0], goals)
    assert [g.met for g in one_seed_worse] == [False, True, True]
    small_gap_weak_labs = check_goals(summarize_study(cells([0.01, 0.02, 0.01], lab=0.65))[0], goals)
    assert [g.met for g in small_gap_weak_labs] == [True, False, False]


def test_the_study_summarises_each_arm_and_config_apart():
    results = cells([0.04, 0.05]) + cells([0.01], arm="labels-10pct") + cells([0.06, 0.02], config="lab-regression")
    summaries = summarize_study(results)
    assert [(s.arm, s.config, s.seeds) for s in summaries] == [
        ("full", "ours", (0, 1)), ("labels-10pct", "ours", (0,)), ("full", "lab-regression", (0, 1))]  # fmt: skip
    assert summaries[0].delta.mean_delta == pytest.approx(0.045)
    assert summaries[2].groups["partial"].delta.mean_delta == pytest.approx(0.04)


def test_the_report_is_json_without_nan_and_a_markdown_table(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 0\n")
    raw = {"base_config": "base.yaml", "patients": 100, "seeds": [0, 1, 2],
           "arms": [{"name": "full", "label_fraction": 1.0}], "configs": {"ours": {}}}  # fmt: skip
    grid = grid_from_dict(raw, tmp_path)
    report = StudyReport.of(grid, cells([0.04, 0.05, 0.03]), n_cells_expected=3)
    document = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert document["primary_endpoint"]["result"]["n"] == 3 and document["primary_endpoint"]["all_goals_met"]
    assert document["cells"][0]["groups"]["invisible"]["delta"] is None
    text = markdown(report)
    assert "| full | ours | 3 | 0.700 ± 0.000 | 0.740 ± 0.010 |" in text
    assert "| delta > 0 in every seed | 3 of 3 seeds | 3 | yes |" in text


def test_a_gap_closed_undefined_in_some_seeds_says_over_how_many(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 0\n")
    raw = {"base_config": "base.yaml", "patients": 100, "seeds": [0, 1],
           "arms": [{"name": "full", "label_fraction": 1.0}], "configs": {"ours": {}}}  # fmt: skip
    results = [*cells([0.04]), cells([0.0, 0.02], multimodal=0.69)[1]]  # seed 1: multimodal below ECG-only
    text = markdown(StudyReport.of(grid_from_dict(raw, tmp_path), results, n_cells_expected=2))
    assert "| 0.400 (n=1) |" in text


def test_holm_multiplies_the_ith_smallest_p_by_the_tests_left_and_keeps_the_order():
    # Holm (1979): sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> made monotone 0.06
    assert holm_adjusted([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjusted([0.5, 0.9]) == [1.0, 1.0], "capped at 1"
    adjusted = holm_adjusted([0.02, math.nan, 0.04])
    assert adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04), (
        "a test without a p-value (one seed) is not counted in the family"
    )


def test_the_improvement_variants_are_reported_with_their_p_adjusted_together(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 0\n")
    raw = {"base_config": "base.yaml", "patients": 100, "seeds": [0, 1, 2],
           "arms": [{"name": "full", "label_fraction": 1.0}],
           "configs": {"ours": {}, "lab-regression": {}, "large-batch": {}}}  # fmt: skip
    results = (cells([0.04, 0.05, 0.03]) + cells([0.01, 0.03, 0.02], config="lab-regression")
               + cells([0.02, -0.01, 0.0], config="large-batch"))  # fmt: skip
    report = StudyReport.of(grid_from_dict(raw, tmp_path), results, n_cells_expected=9)
    variants = sorted((s.delta.p_t, s.config) for s in report.summaries if s.config != "ours")
    (p_first, first), (p_second, second) = variants  # Holm with 2 tests: the smaller p x 2, the larger x 1
    expected = {first: min(1.0, 2 * p_first), second: max(min(1.0, 2 * p_first), p_second)}
    assert report.holm_p() == pytest.approx(expected), "ours, the pre-registered test, is not in the family"
    assert json.loads(json.dumps(report.to_dict()))["variants_p_t_holm"] == pytest.approx(expected)
    text = markdown(report)
    assert "their p adjusted by Holm over the 2 of them run so far" in text
    assert "| lab-regression | 3 | +0.020 [" in text and f"| {expected['lab-regression']:.3g} | 3/3 |" in text
    assert "| ours | 3 | +0.040 [" in text
