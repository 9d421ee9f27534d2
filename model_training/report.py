"""The run report: ``report.md`` with its figures, and the lab ↔ diagnosis association table.

The association table answers "which predicted lab abnormalities go with which
diagnosis": on the validation fold, a lab target counts as predicted when the
model's probability reaches its operating threshold, and for every diagnosis the
lab targets are ranked by lift, P(lab predicted | diagnosis present) / P(lab
predicted). It is written to ``explanations.json`` and embedded in the model's
manifest, where the agent takes the explanation that goes with each diagnosis.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from model_training.artifact import LabAssociation
from model_training.evaluate import MODEL_NAMES, OperatingThresholds, RunPredictions
from model_training.names import diagnosis_display
from model_training.report_release import RELIABILITY_FIGURE, calibration_section, plot_reliability, release_section

REPORT_FILE = "report.md"
EXPLANATIONS_FILE = "explanations.json"
MACRO_FIGURE = "macro_auroc.png"
ROC_FIGURE = "roc_top_labels.png"
N_ROC_LABELS = 6
TOP_LABS_PER_DIAGNOSIS = 5
MIN_SUPPORT = 5  # fewer validation studies with both than this is noise, not an explanation
MODEL_TITLES = {"ecg_only": "ECG-only", "ours": "Ours", "multimodal": "Multimodal"}


@dataclass(frozen=True, slots=True)
class AssociationRule:
    """How the association table was built; written beside it."""

    model: str = "ours"
    fold: str = "validation"
    lab_predicted: str = "lab_prob >= the target's operating threshold"
    diagnosis: str = "true label"
    ranking: str = "lift = P(lab predicted | diagnosis) / P(lab predicted), lift > 1 only"
    min_support: int = MIN_SUPPORT
    top_k: int = TOP_LABS_PER_DIAGNOSIS


def lab_associations(
    predictions: RunPredictions, thresholds: OperatingThresholds, rule: AssociationRule = AssociationRule()
) -> dict[str, tuple[LabAssociation, ...]]:
    """Per diagnosis code, the lab targets predicted with it, by lift, best first (see the module docstring)."""
    lab_prob = predictions.models[rule.model].lab_prob_val
    if lab_prob is None or not predictions.lab_targets:
        return {code: () for code in predictions.dx_codes}
    cutoffs = np.array([thresholds.labs[target] for target in predictions.lab_targets])
    lab_predicted = (lab_prob >= cutoffs).astype(np.float64)  # [val, targets]
    diagnosis = predictions.y_dx_val.astype(np.float64)  # [val, codes]
    both = diagnosis.T @ lab_predicted  # [codes, targets]: studies with the diagnosis and the lab predicted
    p_lab = lab_predicted.mean(axis=0)
    n_diagnosis = diagnosis.sum(axis=0)[:, None]
    p_lab_given_dx = np.divide(both, n_diagnosis, out=np.zeros_like(both), where=n_diagnosis > 0)
    lift = np.divide(p_lab_given_dx, p_lab, out=np.zeros_like(both), where=p_lab > 0)
    return {
        code: _ranked(lift[i], both[i], predictions.lab_targets, rule) for i, code in enumerate(predictions.dx_codes)
    }


def _ranked(
    lift: np.ndarray, support: np.ndarray, targets: tuple[str, ...], rule: AssociationRule
) -> tuple[LabAssociation, ...]:
    eligible = np.flatnonzero((lift > 1.0) & (support >= rule.min_support))
    best = eligible[np.argsort(-lift[eligible], kind="stable")][: rule.top_k]
    return tuple(LabAssociation(targets[j], round(float(lift[j]), 4), int(support[j])) for j in best)


def write_explanations(associations: dict[str, tuple[LabAssociation, ...]], rule: AssociationRule, path: Path) -> None:
    document = {
        "rule": asdict(rule),
        "diagnoses": {code: [asdict(item) for item in items] for code, items in associations.items()},
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def read_explanations(path: Path) -> dict[str, tuple[LabAssociation, ...]]:
    """The table :func:`write_report` saved, in the form :func:`model_training.export.export_artifact` takes."""
    document = json.loads(path.read_text())
    return {code: tuple(LabAssociation(**item) for item in items) for code, items in document["diagnoses"].items()}


# ---------------------------------------------------------------- report


def write_report(metrics: dict, predictions: RunPredictions, out_dir: Path) -> Path:
    """Write ``report.md``, its PNGs and ``explanations.json`` under ``out_dir``; return the report path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rule = AssociationRule()
    associations = lab_associations(predictions, OperatingThresholds.from_metrics(metrics, rule.model), rule)
    write_explanations(associations, rule, out_dir / EXPLANATIONS_FILE)
    plot_macro_auroc(metrics, out_dir / MACRO_FIGURE)
    plot_top_roc_curves(metrics, predictions, out_dir / ROC_FIGURE)
    plot_reliability(metrics["calibration"], out_dir / RELIABILITY_FIGURE)
    sections = [
        _headline_section(metrics),
        f"![Macro AUROC]({MACRO_FIGURE})\n\n![ROC curves of the best-predicted diagnoses]({ROC_FIGURE})",
        calibration_section(metrics["calibration"]),
        release_section(metrics["release"], metrics["thresholds"]["ours"], predictions),
        _label_section("Diagnoses", metrics["per_label"]["diagnosis"], metrics["thresholds"], "diagnosis"),
        _label_section("Lab abnormalities", metrics["per_label"]["labs"], metrics["thresholds"], "labs"),
        _association_section(associations, rule),
        _method_section(metrics),
    ]
    path = out_dir / REPORT_FILE
    path.write_text("# Evaluation report\n\n" + "\n\n".join(sections) + "\n")
    return path


def _ci(estimate: dict) -> str:
    if estimate.get("value") is None:
        return "n/a"
    if estimate.get("ci_low") is None:
        return f"{estimate['value']:.3f}"
    return f"{estimate['value']:.3f} [{estimate['ci_low']:.3f}, {estimate['ci_high']:.3f}]"


def _headline_section(metrics: dict) -> str:
    diagnosis, labs = metrics["diagnosis"], metrics["labs"]
    rows = [
        f"| {MODEL_TITLES[name]} | {_ci(diagnosis['macro_auroc'][name])} | {_ci(labs['macro_auroc'].get(name, {}))} |"
        for name in MODEL_NAMES
    ]
    n_test = metrics["n_studies"]["test"]
    return "\n".join(
        [
            f"## Headline (test fold, {n_test} studies, 95 % bootstrap CI)",
            "",
            "| Model | Diagnosis macro AUROC | Lab macro AUROC |",
            "|---|---|---|",
            *rows,
            "",
            "Ours: ECG encoder pretrained against the clinical encoder, ECG only at inference.",
            "",
            f"- Ours − ECG-only (paired bootstrap): {_ci(diagnosis['delta_ours_minus_ecg_only'])}",
            f"- Gap closed, (ours − ECG-only) / (multimodal − ECG-only): {_ci(diagnosis['gap_closed'])}",
            f"- Diagnosis labels scored: {diagnosis['n_labels_scored']} of {diagnosis['n_labels']}",
        ]
    )


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _label_section(title: str, table: dict, thresholds: dict, kind: str) -> str:
    if not table:
        return f"## {title}\n\nNone."
    models = [name for name in MODEL_NAMES if name in next(iter(table.values()))]
    header = "| Label | Positives / known | " + " | ".join(f"AUROC {MODEL_TITLES[m]}" for m in models)
    header += " | AUPRC ours | Threshold ours |"
    lines = [f"## {title} (test fold)", "", header, "|---" * (len(models) + 4) + "|"]
    for name, entry in table.items():
        label = f"{name} {diagnosis_display(name)}".strip() if kind == "diagnosis" else name
        aurocs = " | ".join(_fmt(entry[m]["auroc"]) for m in models)
        auprc = _fmt(entry["ours"]["auprc"]) if "ours" in entry else "–"
        threshold = _fmt(thresholds["ours"][kind].get(name))
        lines.append(f"| {label} | {entry['n_positive']} / {entry['n_known']} | {aurocs} | {auprc} | {threshold} |")
    if kind == "labs":
        lines += ["", "LOINC codes come from `model_training/data/catalogue.py` and **need clinical review**."]
    return "\n".join(lines)


def _association_section(associations: dict[str, tuple[LabAssociation, ...]], rule: AssociationRule) -> str:
    lines = [
        "## Which predicted lab abnormalities go with which diagnosis (validation)",
        "",
        f"A lab counts as predicted when {rule.lab_predicted}; diagnoses are the {rule.diagnosis}s. "
        f"Ranked by {rule.ranking}, at least {rule.min_support} studies with both. "
        f"The full table is `{EXPLANATIONS_FILE}`; the manifest embeds it.",
        "",
        "| Diagnosis | Lab abnormalities (lift, studies with both) |",
        "|---|---|",
    ]
    for code, items in associations.items():
        labs = ", ".join(f"{a.lab_target} ({a.lift:.2f}, {a.support})" for a in items) or "–"
        lines.append(f"| {f'{code} {diagnosis_display(code)}'.strip()} | {labs} |")
    return "\n".join(lines)


def _method_section(metrics: dict) -> str:
    method = metrics["method"]
    return "\n".join(["## Method", "", *(f"- {key}: {value}" for key, value in method.items())])


# ---------------------------------------------------------------- figures


def plot_macro_auroc(metrics: dict, path: Path) -> None:
    """Bars of the three models' macro AUROC (diagnosis, and labs where the model has them), with 95 % CIs."""
    tasks = {"Diagnosis": metrics["diagnosis"]["macro_auroc"], "Lab abnormalities": metrics["labs"]["macro_auroc"]}
    figure = _figure(7, 4)
    axis = figure.subplots()
    width = 0.8 / len(MODEL_NAMES)
    for k, name in enumerate(MODEL_NAMES):
        estimates = [task.get(name, {}) for task in tasks.values()]
        values = [e.get("value") or np.nan for e in estimates]
        errors = [_error_bar(e) for e in estimates]
        positions = np.arange(len(tasks)) + (k - 1) * width
        axis.bar(positions, values, width, yerr=np.array(errors).T, capsize=4, label=MODEL_TITLES[name])
    axis.set_xticks(np.arange(len(tasks)), list(tasks))
    axis.set_ylim(0.5, 1.0)
    axis.set_ylabel("Macro AUROC (test, 95 % CI)")
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def _figure(width_in: float, height_in: float) -> Figure:
    """A figure on the Agg canvas: the object API, so no pyplot state and no display needed."""
    figure = Figure(figsize=(width_in, height_in), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def _error_bar(estimate: dict) -> tuple[float, float]:
    if estimate.get("ci_low") is None or estimate.get("value") is None:
        return (0.0, 0.0)
    return (estimate["value"] - estimate["ci_low"], estimate["ci_high"] - estimate["value"])


def plot_top_roc_curves(metrics: dict, predictions: RunPredictions, path: Path) -> None:
    """ROC curves of the diagnoses ours predicts best on test, all three models per panel."""
    table = metrics["per_label"]["diagnosis"]
    scored = [(entry["ours"]["auroc"], code) for code, entry in table.items() if entry["ours"]["auroc"] is not None]
    top = [code for _, code in sorted(scored, reverse=True)[:N_ROC_LABELS]]
    columns = max(1, min(3, len(top)))
    rows = max(1, -(-len(top) // columns))
    figure = _figure(4 * columns, 3.6 * rows)
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis, code in zip(axes.flat, top, strict=False):
        j = predictions.dx_codes.index(code)
        for name in MODEL_NAMES:
            fpr, tpr, _ = roc_curve(predictions.y_dx_test[:, j], predictions.models[name].dx_prob_test[:, j])
            axis.plot(fpr, tpr, label=f"{MODEL_TITLES[name]} {table[code][name]['auroc']:.3f}")
        axis.plot([0, 1], [0, 1], color="grey", linewidth=0.5, linestyle=":")
        axis.set_title(f"{code} {diagnosis_display(code)}"[:48], fontsize=9)
        axis.set_xlabel("1 − specificity", fontsize=8)
        axis.set_ylabel("Sensitivity", fontsize=8)
        axis.legend(fontsize=6, loc="lower right")
    for axis in list(axes.flat)[len(top) :]:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path)
