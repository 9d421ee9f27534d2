"""The report's calibration and release sections: ECE before/after, the reliability plot, the release table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from model_training.calibration import ECE_BINS
from model_training.evaluate import RunPredictions
from model_training.names import diagnosis_display, lab_display
from model_training.release import MODEL, operating_point

RELIABILITY_FIGURE = "reliability.png"
FOLD_TITLES = {"val": "validation", "test": "test"}
KIND_TITLES = {"diagnosis": "Diagnoses", "labs": "Lab abnormalities"}


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def calibration_section(calibration: dict) -> str:
    lines = [
        "## Calibration (the shipped model, in the artifact)",
        "",
        f"Per-label Platt scaling fit on the validation fold ({calibration['method']}); the exported module applies "
        "it, so the agent receives calibrated probabilities and thresholds are chosen on that scale. "
        f"ECE: {ECE_BINS} equal-width bins of the predicted probability on [0, 1], "
        "Σ (n_bin / n) · |observed rate − mean predicted| per label, averaged over labels.",
        "",
        "| Labels | Fold | ECE before | ECE after |",
        "|---|---|---|---|",
    ]
    for kind in ("diagnosis", "labs"):
        for fold, ece in calibration[kind]["ece"].items():
            before, after = _fmt(ece["before"]), _fmt(ece["after"])
            lines.append(f"| {KIND_TITLES[kind]} | {FOLD_TITLES[fold]} | {before} | {after} |")
    lines += ["", f"![Reliability before and after calibration]({RELIABILITY_FIGURE})"]
    return "\n".join(lines)


def release_section(release: dict, thresholds: dict, predictions: RunPredictions) -> str:
    """The release table (validation) with the test fold's rates at the same thresholds beside it.

    ``thresholds`` are the shipped model's (``metrics["thresholds"]["ours"]``).
    """
    rule = release["rule"]
    lines = [
        "## What reaches the chart (release table, validation fold)",
        "",
        f"Charted when the fold holds at least {rule['min_positives']} positives, the lower bound of the validation "
        f"AUROC's {rule['ci_level']:.0%} bootstrap CI "
        f"({rule['n_bootstrap']} resamples) is at least {rule['min_auroc_ci_low']:.2f} and the PPV at the operating "
        f"threshold is at least {rule['min_ppv']:.2f}, at the {rule['prevalence']}'s prevalence; otherwise stored "
        "only. Thresholds and the rule share the validation fold, so its rates are optimistic: the test fold's are "
        "beside them.",
        "",
        "| Label | Name | Positives | AUROC [95 % CI] | Threshold | Sens | Spec | PPV | Prevalence | Sens test "
        "| PPV test | Release |",
        "|---" * 12 + "|",
    ]
    scores = predictions.models[MODEL]
    families = (
        ("diagnosis", predictions.dx_codes, predictions.y_dx_test, scores.dx_prob_test),
        ("labs", predictions.lab_targets, predictions.y_lab_test, scores.lab_prob_test),
    )
    n_charted = 0
    for kind, names, y_test, prob_test in families:
        for j, name in enumerate(names):
            entry = release[kind][name]
            threshold = float(thresholds[kind][name])
            test = operating_point(y_test[:, j], prob_test[:, j], threshold) if prob_test is not None else None
            n_charted += entry["charted"]
            lines.append(
                f"| {name} | {_display(kind, name)} | {entry['n_positive']} / {entry['n_known']} | "
                f"{_fmt(entry['auroc'])} [{_fmt(entry['auroc_ci_low'])}, "
                f"{_fmt(entry['auroc_ci_high'])}] | {threshold:.3f} | {_fmt(entry['sensitivity'])} | "
                f"{_fmt(entry['specificity'])} | {_fmt(entry['ppv'])} | {_fmt(entry['prevalence'])} | "
                f"{_fmt(test.sensitivity if test else None)} | {_fmt(test.ppv if test else None)} | "
                f"{'charted' if entry['charted'] else 'stored'} |"
            )
    total = len(predictions.dx_codes) + len(predictions.lab_targets)
    lines += ["", f"{n_charted} of {total} labels charted."]
    return "\n".join(lines)


def _display(kind: str, name: str) -> str:
    if kind == "diagnosis":
        return diagnosis_display(name)
    lab, _, direction = name.rpartition("_")
    return lab_display(lab, direction)


def plot_reliability(calibration: dict, path: Path) -> None:
    """Observed rate against mean predicted probability, before and after, per label family and fold."""
    figure = Figure(figsize=(8, 7.2), dpi=110)
    FigureCanvasAgg(figure)  # the object API: no pyplot state, no display needed
    axes = figure.subplots(2, 2, squeeze=False)
    for row, kind in enumerate(("diagnosis", "labs")):
        for column, fold in enumerate(("val", "test")):
            axis = axes[row][column]
            ece = calibration[kind]["ece"][fold]
            for stage, style in (("before", "o--"), ("after", "s-")):
                curve = calibration[kind]["reliability"][fold][stage]
                axis.plot(curve["mean_predicted"], curve["observed"], style, markersize=4,
                          label=f"{stage} (ECE {_fmt(ece[stage])})")  # fmt: skip
            axis.plot([0, 1], [0, 1], color="grey", linewidth=0.5, linestyle=":")
            axis.set_xlim(0, 1)
            axis.set_ylim(0, 1)
            axis.set_title(f"{KIND_TITLES[kind]}, {FOLD_TITLES[fold]}", fontsize=9)
            axis.set_xlabel("Mean predicted probability", fontsize=8)
            axis.set_ylabel("Observed rate", fontsize=8)
            axis.set_xticks(np.linspace(0, 1, 6))
            axis.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
