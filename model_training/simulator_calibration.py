"""Calibrating the simulated hospital against what an ECG-only deep model reaches on real ED data.

``ecg-train calibrate`` simulates (or reuses) a hospital, trains the two baselines of the
training pipeline — the ECG-only model from scratch and the late-fusion multimodal model,
exactly as ``ecg-train run`` trains them — and compares the ECG-only test AUROC of every
diagnosis code with the published per-code AUROC on real MIMIC-IV-ECG ED data
(``simulator/reference``), and the two macro AUROCs with MDS-ED's. The recipe is fixed
(``configs/calibrate.yaml``: 20,000 patients, seed 0); only the physiology table may be
tuned on its output, never on the three-stage model, its lab heads or the gap.

The calibration cohort holds folds 16-19 out for testing (20 %, about 5,600 ECGs at
20,000 patients, against the published test fold's 7,694), so a code's AUROC rests on
enough positives to be compared within ±0.05.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from model_training.config import CONFIG_DIR, TrainConfig
from model_training.data.cohort import Cohort, CohortConfig, build_cohort, load_cohort
from model_training.data.cohort_report import icd_display
from model_training.data.layout import DataLayout
from model_training.errors import DatasetError
from model_training.simulator.simulate import COMPLETION_MARKER, SIMULATOR_VERSION, simulate_hospital
from model_training.train import stages
from model_training.train.data import CohortTensors
from model_training.train.distributed import DistContext
from model_training.train.predict import window_probabilities

log = logging.getLogger(__name__)

CALIBRATE_CONFIG = CONFIG_DIR / "calibrate.yaml"
REFERENCE_CSV = Path(__file__).parent / "simulator" / "reference" / "ecg_only_auroc_mimic_iv_ecg_ed.csv"
CALIBRATION_FILE = "simulator_calibration.json"
FIGURE_FILE = "simulator_calibration.png"
COHORT_SUBDIR = "cohort-calibration"
CALIBRATION_COHORT = CohortConfig(train_folds=tuple(range(15)), val_folds=(15,), test_folds=(16, 17, 18, 19))

#: MDS-ED's macro AUROC over 1,428 diagnosis labels on the same real data.
MDS_ED_MACRO_AUROC = {"ecg_only": 0.768, "multimodal": 0.826, "clinical_only": 0.747}
TOLERANCE = 0.05  # a code is calibrated when its simulated AUROC is within this of the published one
MAX_MISS = 0.10  # and none may miss by more than this
MIN_TEST_POSITIVES = 20  # codes with fewer test positives are shown but not counted
GOAL_SHARE = 0.80
PREDICT_BATCH = 256


@dataclass(frozen=True, slots=True)
class PublishedAuroc:
    code: str
    description: str
    auroc: float
    ci_low: float
    ci_high: float
    test_positives: int | None  # not given for every code


def load_reference(path: Path = REFERENCE_CSV) -> dict[str, PublishedAuroc]:
    """The published per-code table, keyed by code without a dot."""
    with path.open(newline="") as handle:
        return {row["icd10"]: _published(row) for row in csv.DictReader(handle)}


def _published(row: dict[str, str]) -> PublishedAuroc:
    positives = int(row["test_positive_ecgs"]) if row["test_positive_ecgs"] else None
    return PublishedAuroc(row["icd10"], row["description"], float(row["auroc"]), float(row["ci_low"]),
                          float(row["ci_high"]), positives)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CodeCalibration:
    """One code: the simulated ECG-only test AUROC next to the published one (and the multimodal baseline's)."""

    code: str
    description: str
    test_positives: int
    simulated: float  # NaN when the test folds hold no positive
    published: float
    ci_low: float
    ci_high: float
    multimodal: float  # the late-fusion baseline on the same codes: where the clinical side's strength comes from

    @property
    def difference(self) -> float:
        return self.simulated - self.published

    @property
    def within(self) -> bool:
        return abs(self.difference) <= TOLERANCE

    @property
    def counted(self) -> bool:
        return self.test_positives >= MIN_TEST_POSITIVES and not np.isnan(self.simulated)


@dataclass(slots=True)
class CalibrationResult:
    rows: list[CodeCalibration]
    macro_ecg_only: float  # over every code of the cohort, as the training pipeline's evaluation averages
    macro_multimodal: float
    recipe: dict[str, object] = field(default_factory=dict)

    @property
    def counted(self) -> list[CodeCalibration]:
        return [r for r in self.rows if r.counted]

    @property
    def n_within(self) -> int:
        return sum(r.within for r in self.counted)

    @property
    def share_within(self) -> float:
        return self.n_within / len(self.counted) if self.counted else float("nan")

    @property
    def worst(self) -> list[CodeCalibration]:
        return sorted(self.counted, key=lambda r: -abs(r.difference))

    @property
    def goal_met(self) -> bool:
        counted = self.counted
        return bool(counted) and self.share_within >= GOAL_SHARE and all(abs(r.difference) <= MAX_MISS for r in counted)

    def to_json(self) -> dict[str, object]:
        return {
            "recipe": self.recipe,
            "codes": [asdict(r) | {"difference": r.difference, "within": r.within, "counted": r.counted}
                      for r in self.rows],
            "macro_auroc": {"ecg_only": self.macro_ecg_only, "multimodal": self.macro_multimodal},
            "mds_ed_macro_auroc": MDS_ED_MACRO_AUROC,
            "tolerance": TOLERANCE, "max_miss": MAX_MISS, "min_test_positives": MIN_TEST_POSITIVES,
            "counted": len(self.counted), "within": self.n_within, "share_within": self.share_within,
            "goal_share": GOAL_SHARE, "goal_met": self.goal_met,
        }  # fmt: skip


def calibrate(
    config: TrainConfig,
    data_dir: Path,
    out_dir: Path,
    *,
    cohort_config: CohortConfig = CALIBRATION_COHORT,
    resume: bool = False,
) -> CalibrationResult:
    """Simulate or reuse ``data_dir``, train both baselines into ``out_dir``, compare with the reference table."""
    started_s = time.monotonic()
    torch.set_num_threads(config.num_threads)
    cohort = _calibration_cohort(config, data_dir, cohort_config)
    data = CohortTensors.from_cohort(cohort, label_fraction=config.label_fraction, seed=config.seed)
    ctx = DistContext(0, 1, torch.device(config.device))
    runner = stages.StageRunner(config, data, ctx, out_dir / "checkpoints", resume)
    encoder, head = stages.ecg_only(runner)
    multimodal = stages.multimodal(runner)
    test = data.splits["test"]
    y_test = cohort.dx_labels[test.numpy()]
    ecg_only_probs, fused_probs = _test_probabilities(data, encoder, head, multimodal, ctx.device)
    ecg_only_auroc = _per_code_auroc(y_test, ecg_only_probs)
    multimodal_auroc = _per_code_auroc(y_test, fused_probs)
    reference = load_reference()
    rows = [
        CodeCalibration(code, reference[code].description, int(y_test[:, j].sum()), ecg_only_auroc[j],
                        reference[code].auroc, reference[code].ci_low, reference[code].ci_high, multimodal_auroc[j])
        for j, code in enumerate(cohort.dx_codes) if code in reference
    ]  # fmt: skip
    marker = json.loads((data_dir / COMPLETION_MARKER).read_text())
    if marker.get("simulator_version") != SIMULATOR_VERSION:
        log.warning("%s was simulated by simulator %s, not %s: the table describes that version",
                    data_dir, marker.get("simulator_version"), SIMULATOR_VERSION)  # fmt: skip
    recipe = {"simulator": marker, "n_test_studies": len(test), "n_studies": len(cohort.study_ids),
              "test_folds": list(cohort_config.test_folds), "baselines": asdict(config.baselines),
              "model": asdict(config.model), "seed": config.seed,
              "wall_s": round(time.monotonic() - started_s, 1)}  # fmt: skip
    return CalibrationResult(rows, _nanmean(ecg_only_auroc), _nanmean(multimodal_auroc), recipe)


def _test_probabilities(
    data: CohortTensors, encoder: nn.Module, head: nn.Module, multimodal: nn.Module, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Test-fold probabilities of the ECG-only and the multimodal baseline, windows averaged as the pipeline does."""
    for module in (encoder, head, multimodal):
        module.to(device).eval()
    test = data.splits["test"]
    ecg_only = window_probabilities(lambda b: head(encoder(b["ecg"])), data, test, batch_size=PREDICT_BATCH,
                                    device=device)  # fmt: skip
    fused = window_probabilities(lambda b: multimodal(b["ecg"], b["values"], b["observed"]), data, test,
                                 batch_size=PREDICT_BATCH, device=device)  # fmt: skip
    return ecg_only, fused


def _calibration_cohort(config: TrainConfig, data_dir: Path, cohort_config: CohortConfig) -> Cohort:
    layout = DataLayout()
    cohort_dir = data_dir / COHORT_SUBDIR
    if (cohort_dir / "cohort.json").exists():
        return load_cohort(cohort_dir)
    if not layout.resolve(data_dir, layout.record_list).exists():
        log.info("no dataset in %s: simulating %d patients", data_dir, config.data.simulate_patients)
        simulate_hospital(data_dir, n_patients=config.data.simulate_patients, seed=config.data.simulate_seed,
                          workers=config.data.workers, progress=config.progress)  # fmt: skip
    if not (data_dir / COMPLETION_MARKER).exists():
        raise DatasetError(data_dir / COMPLETION_MARKER, "not found; calibrate runs on a simulated hospital only")
    return build_cohort(data_dir, cohort_dir, config=cohort_config, layout=layout, workers=config.data.workers,
                        progress=config.progress)  # fmt: skip


def _per_code_auroc(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    out = np.full(labels.shape[1], np.nan)
    for j in range(labels.shape[1]):
        if 0 < labels[:, j].sum() < len(labels):
            out[j] = roc_auc_score(labels[:, j], probs[:, j])
    return out


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def format_table(result: CalibrationResult) -> str:
    """The per-code table (worst first among counted codes, then the rest) and the summary lines."""
    counted = {r.code for r in result.counted}
    ordered = result.worst + sorted((r for r in result.rows if r.code not in counted), key=lambda r: r.code)
    lines = [
        f"| code | description | test positives | simulated | published [95 % CI] | difference | within ±{TOLERANCE} "
        "| multimodal |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in ordered:
        mark = ("yes" if r.within else "no") if r.counted else f"(< {MIN_TEST_POSITIVES} positives)"
        published = f"{r.published:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
        lines.append(f"| {r.code} | {r.description or icd_display(r.code)} | {r.test_positives} | {r.simulated:.3f} | "
                     f"{published} | {r.difference:+.3f} | {mark} | {r.multimodal:.3f} |")  # fmt: skip
    n_miss = sum(abs(r.difference) > MAX_MISS for r in result.counted)
    lines += [
        "",
        f"macro AUROC ECG-only {result.macro_ecg_only:.3f} (MDS-ED {MDS_ED_MACRO_AUROC['ecg_only']}), "
        f"multimodal {result.macro_multimodal:.3f} (MDS-ED {MDS_ED_MACRO_AUROC['multimodal']})",
        f"codes with ≥ {MIN_TEST_POSITIVES} test positives within ±{TOLERANCE}: {result.n_within} of "
        f"{len(result.counted)} ({result.share_within:.0%}; goal {GOAL_SHARE:.0%}); off by more than {MAX_MISS}: "
        f"{n_miss}; goal {'met' if result.goal_met else 'not met'}",
    ]
    return "\n".join(lines) + "\n"


def write_outputs(result: CalibrationResult, out_dir: Path) -> tuple[Path, Path]:
    """``simulator_calibration.json`` and the scatter figure; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / CALIBRATION_FILE
    json_path.write_text(json.dumps(result.to_json(), indent=2, default=_json_default) + "\n")
    return json_path, plot_calibration(result, out_dir / FIGURE_FILE)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def plot_calibration(result: CalibrationResult, path: Path) -> Path:
    """Simulated versus published AUROC per code, the ±tolerance band shaded; uncounted codes hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 6.0), dpi=120)
    line = np.array([0.3, 1.0])
    axis.fill_between(line, line - TOLERANCE, line + TOLERANCE, color="tab:green", alpha=0.15,
                      label=f"within ±{TOLERANCE}")  # fmt: skip
    axis.plot(line, line, color="tab:green", linewidth=0.8)
    for counted, style in ((True, {"color": "tab:blue"}), (False, {"facecolors": "none", "edgecolors": "tab:gray"})):
        rows = [r for r in result.rows if r.counted == counted and not np.isnan(r.simulated)]
        label = f"≥ {MIN_TEST_POSITIVES} test positives" if counted else f"< {MIN_TEST_POSITIVES} test positives"
        axis.scatter([r.published for r in rows], [r.simulated for r in rows], s=18, label=label, **style)
    for r in result.worst[:6]:
        axis.annotate(r.code, (r.published, r.simulated), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axis.set(xlim=(0.45, 1.0), ylim=(0.3, 1.0), xlabel="published ECG-only AUROC (real MIMIC-IV-ECG, ED)",
             ylabel="simulated ECG-only AUROC")  # fmt: skip
    axis.set_title(
        f"{result.n_within}/{len(result.counted)} codes within ±{TOLERANCE}; macro ECG-only "
        f"{result.macro_ecg_only:.3f}, multimodal {result.macro_multimodal:.3f}",
        fontsize=9,
    )
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
