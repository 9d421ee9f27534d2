"""``ecg-train run``: simulate if needed, build the cohort if needed, train everything, evaluate, export.

The run folder OUT holds everything needed to redo the last two steps on their own::

    OUT/config.yaml          the resolved training configuration
    OUT/run.json             dataset and cohort folders, cohort fingerprint
    OUT/checkpoints/*.pt     pretrain, labs, diagnosis, ecg_only, multimodal
    OUT/calibration.json     per-label Platt maps of the shipped model, fit on validation (model_training.calibration)
    OUT/metrics.json         (model_training.evaluate), with the calibration's ECE and the release table
    OUT/report.md, *.png     (model_training.report)
    OUT/model/               model.ts + manifest.json (model_training.export)
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model_training.calibration import (
    CALIBRATION_FILE,
    LabelCalibration,
    calibrated_predictions,
    calibration_report,
    fit_calibration,
)
from model_training.config import TrainConfig, load_config, save_config
from model_training.data.cohort import Cohort, build_cohort, load_cohort
from model_training.data.layout import DataLayout
from model_training.errors import ModelTrainingError
from model_training.evaluate import (
    METRICS_FILE,
    ModelScores,
    OperatingThresholds,
    RunPredictions,
    evaluate_run,
    operating_thresholds,
)
from model_training.export import export_artifact
from model_training.models import ClinicalEncoder, EcgEncoder, Head, LateFusionModel
from model_training.release import MODEL as SHIPPED_MODEL
from model_training.release import ReleaseTable, release_rule, release_table
from model_training.report import EXPLANATIONS_FILE, read_explanations, write_report
from model_training.scoring import EcgScoringModule
from model_training.train import stages
from model_training.train.checkpoints import checkpoint_path
from model_training.train.data import CohortTensors
from model_training.train.distributed import DistContext, barrier, init_distributed, shutdown
from model_training.train.predict import window_probabilities

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
CHECKPOINT_DIR = "checkpoints"
PREDICT_BATCH = 256
EXAMPLE_STUDIES = 4  # test studies the exporter checks eager-versus-scripted parity on
MODEL_NAME = "ecg-clinical-knowledge"
DISTRIBUTION = "ecg-clinical-knowledge"


@dataclass(slots=True)
class TrainedModels:
    ours_encoder: EcgEncoder
    ours_lab_head: Head
    ours_dx_head: Head
    clinical_encoder: ClinicalEncoder  # stage 1's, kept for inspection; not served
    ecg_only_encoder: EcgEncoder
    ecg_only_dx_head: Head
    multimodal: LateFusionModel

    def ours_scoring(self, window_samples: int, clip_mv: float) -> EcgScoringModule:
        return EcgScoringModule(self.ours_encoder, self.ours_dx_head, self.ours_lab_head, window_samples, clip_mv)

    def ecg_only_scoring(self, window_samples: int, clip_mv: float) -> EcgScoringModule:
        # The baseline has no lab heads; the scoring module wants one, so a 1-output placeholder whose output
        # is discarded (a 0-output head would be cleaner, but scoring's window average cannot reshape 0 elements).
        no_labs = Head(self.ecg_only_encoder.embedding_dim, 1)
        return EcgScoringModule(self.ecg_only_encoder, self.ecg_only_dx_head, no_labs, window_samples, clip_mv)


def run_pipeline(
    config: TrainConfig, data_dir: Path, out_dir: Path, *, resume: bool = False, device: str | None = None
) -> dict | None:
    """Train the three stages and both baselines, then (rank 0) evaluate and export. Returns the metrics on rank 0."""
    if device is not None:
        config = dataclasses.replace(config, device=device)
    torch.set_num_threads(config.num_threads)
    ctx = init_distributed(config.device)
    started_s = time.monotonic()
    try:
        cohort_dir = Path(config.data.cohort_dir) if config.data.cohort_dir else data_dir / "cohort"
        if ctx.is_main:
            ensure_cohort(config, data_dir, cohort_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
        barrier(ctx)
        cohort = load_cohort(cohort_dir)
        if ctx.is_main:
            save_config(config, out_dir / CONFIG_FILE)
            _write_run_file(out_dir, data_dir, cohort_dir, cohort)
        data = CohortTensors.from_cohort(cohort, label_fraction=config.label_fraction, seed=config.seed)
        models = train_all(config, data, ctx, out_dir / CHECKPOINT_DIR, resume=resume)
        metrics = None
        if ctx.is_main:
            metrics = evaluate_models(config, cohort, data, models, out_dir, ctx.device)
            export_models(cohort, data, models, metrics, out_dir)
            log.info("run finished in %.0f s", time.monotonic() - started_s)
        barrier(ctx)
        return metrics
    finally:
        shutdown(ctx)


def ensure_cohort(config: TrainConfig, data_dir: Path, cohort_dir: Path) -> None:
    """Simulate a hospital into an empty ``data_dir`` and build the cohort, each only if not there yet."""
    if (cohort_dir / "cohort.json").exists():
        return
    layout = DataLayout()
    if not layout.resolve(data_dir, layout.record_list).exists():
        from model_training.simulator.simulate import simulate_hospital

        log.info("no dataset in %s: simulating %d patients", data_dir, config.data.simulate_patients)
        simulate_hospital(data_dir, n_patients=config.data.simulate_patients, seed=config.data.simulate_seed,
                          workers=config.data.workers, progress=config.progress)  # fmt: skip
    build_cohort(data_dir, cohort_dir, layout=layout, workers=config.data.workers, progress=config.progress)


def train_all(
    config: TrainConfig,
    data: CohortTensors,
    ctx: DistContext,
    checkpoint_dir: Path,
    *,
    resume: bool,
    require_checkpoints: bool = False,
) -> TrainedModels:
    runner = stages.StageRunner(config, data, ctx, checkpoint_dir, resume, require_checkpoints)
    encoder, clinical = stages.pretrain(runner)
    lab_head = stages.labs(runner, encoder)
    dx_head = stages.diagnosis(runner, encoder, lab_head)
    ecg_only_encoder, ecg_only_head = stages.ecg_only(runner)
    multimodal = stages.multimodal(runner)
    return TrainedModels(encoder, lab_head, dx_head, clinical, ecg_only_encoder, ecg_only_head, multimodal)


def predict_all(
    models: TrainedModels, data: CohortTensors, clip_mv: float, device: torch.device
) -> dict[str, ModelScores]:
    """Validation and test probabilities of the three models; ECG-only models through the served scoring module."""
    scores = {}
    for name, scoring in (("ecg_only", models.ecg_only_scoring(data.window_samples, clip_mv)),
                          ("ours", models.ours_scoring(data.window_samples, clip_mv))):  # fmt: skip
        val, test = (_score_ecg(scoring, data, split, device) for split in ("val", "test"))
        has_labs = name == "ours"
        scores[name] = ModelScores(val[0], test[0], val[1] if has_labs else None, test[1] if has_labs else None)
    models.multimodal.to(device).eval()

    def fused(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return models.multimodal(batch["ecg"], batch["values"], batch["observed"])

    val, test = (window_probabilities(fused, data, data.splits[split], batch_size=PREDICT_BATCH, device=device)
                 for split in ("val", "test"))  # fmt: skip
    scores["multimodal"] = ModelScores(val, test)
    return scores


@torch.no_grad()
def _score_ecg(
    scoring: EcgScoringModule, data: CohortTensors, split: str, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    scoring.to(device).eval()
    dx, labs = [], []
    for rows in data.splits[split].split(PREDICT_BATCH):
        dx_prob, lab_prob, _ = scoring(data.ecg.records(rows).to(device))
        dx.append(dx_prob.cpu())
        labs.append(lab_prob.cpu())
    return torch.cat(dx).numpy(), torch.cat(labs).numpy()


def run_predictions(cohort: Cohort, data: CohortTensors, scores: dict[str, ModelScores]) -> RunPredictions:
    val, test = data.splits["val"].numpy(), data.splits["test"].numpy()
    return RunPredictions(
        dx_codes=cohort.dx_codes,
        lab_targets=tuple(t.name for t in cohort.lab_targets),
        y_dx_val=cohort.dx_labels[val], y_dx_test=cohort.dx_labels[test],
        y_lab_val=cohort.lab_labels[val], y_lab_test=cohort.lab_labels[test],
        models=scores,
    )  # fmt: skip


def evaluate_models(
    config: TrainConfig, cohort: Cohort, data: CohortTensors, models: TrainedModels, out_dir: Path, device: torch.device
) -> dict:
    raw = run_predictions(cohort, data, predict_all(models, data, cohort.config.preprocess.clip_mv, device))
    metrics, _ = evaluate_predictions(config, raw, out_dir)
    _log_headline(metrics)
    return metrics


def evaluate_predictions(config: TrainConfig, raw: RunPredictions, out_dir: Path) -> tuple[dict, RunPredictions]:
    """Calibrate the shipped model on validation, then metrics, release table and report; return the metrics and
    the calibrated predictions.

    Everything downstream of the calibration (thresholds, release table, metrics, report) sees the shipped
    model's calibrated probabilities, which are what its artifact outputs.
    """
    calibration = fit_calibration(raw, SHIPPED_MODEL)
    out_dir.mkdir(parents=True, exist_ok=True)
    calibration.save(out_dir / CALIBRATION_FILE)
    predictions = calibrated_predictions(raw, calibration, SHIPPED_MODEL)
    evaluation = config.evaluation
    rule = release_rule(min_auroc_ci_low=config.release.min_auroc_ci_low, min_ppv=config.release.min_ppv,
                        min_positives=config.release.min_positives, n_bootstrap=evaluation.n_bootstrap,
                        seed=evaluation.seed)  # fmt: skip
    release = release_table(predictions, operating_thresholds(predictions, SHIPPED_MODEL), rule,
                            never_charted=config.release.never_charted)  # fmt: skip
    extra = {"calibration": calibration_report(raw, predictions, calibration, SHIPPED_MODEL),
             "release": release.to_dict()}  # fmt: skip
    metrics = evaluate_run(predictions, out_dir, n_bootstrap=evaluation.n_bootstrap, seed=evaluation.seed,
                           extra_sections=extra)  # fmt: skip
    write_report(metrics, predictions, out_dir)
    return metrics, predictions


def export_models(cohort: Cohort, data: CohortTensors, models: TrainedModels, metrics: dict, out_dir: Path) -> Path:
    """Write OUT/model/ for the method's ECG-only model ("ours"): calibrated, with its validation thresholds,
    release table and explanations."""
    preprocess = cohort.config.preprocess
    explanations_path = out_dir / EXPLANATIONS_FILE
    calibration_path = out_dir / CALIBRATION_FILE
    if not calibration_path.exists() or "release" not in metrics:
        raise ModelTrainingError(
            f"{out_dir}: no {CALIBRATION_FILE} or release table; run `ecg-train evaluate --run {out_dir}` again"
        )
    return export_artifact(
        models.ours_scoring(preprocess.window_samples, preprocess.clip_mv).cpu(),
        out_dir=out_dir,
        model_name=MODEL_NAME,
        model_version=model_version(out_dir / CHECKPOINT_DIR, metrics["release"]),
        dx_labels=cohort.dx_codes,
        lab_targets=cohort.lab_targets,
        thresholds=OperatingThresholds.from_metrics(metrics, SHIPPED_MODEL),
        release=ReleaseTable.from_metrics(metrics),
        calibration=LabelCalibration.load(calibration_path),
        preprocess=preprocess,
        metrics=metrics,
        data_fingerprint=cohort.fingerprint,
        example_input=data.ecg.records(data.splits["test"][:EXAMPLE_STUDIES]),
        explanations=read_explanations(explanations_path) if explanations_path.exists() else None,
        simulator_version=cohort.simulator_version,
    )


def model_version(checkpoint_dir: Path, release: dict) -> str:
    """``<package version>+<sha256 prefix of the final stage's checkpoint and the release table>``.

    Distinct for every trained model, and for the same weights released under another rule: what is charted
    differs, so a registry holding the first must not mistake the second for it.
    """
    digest = hashlib.sha256(checkpoint_path(checkpoint_dir, "diagnosis").read_bytes())
    digest.update(json.dumps(release, sort_keys=True).encode())
    return f"{importlib.metadata.version(DISTRIBUTION)}+{digest.hexdigest()[:12]}"


def _log_headline(metrics: dict) -> None:
    dx = metrics["diagnosis"]
    for name, estimate in dx["macro_auroc"].items():
        log.info("diagnosis macro AUROC %s: %s", name, estimate)
    log.info("delta ours - ecg_only: %s; gap closed: %s", dx["delta_ours_minus_ecg_only"], dx["gap_closed"])


# ---------------------------------------------------------------- evaluate / export on their own


def load_run(out_dir: Path, device: str | None = None) -> tuple[TrainConfig, Cohort, CohortTensors, TrainedModels]:
    """Rebuild a finished run's models from OUT/config.yaml and OUT/checkpoints (nothing is trained)."""
    config_path, run_path = out_dir / CONFIG_FILE, out_dir / RUN_FILE
    if not run_path.exists():
        raise ModelTrainingError(f"{run_path}: not a run folder (train it with `ecg-train run --out {out_dir}`)")
    config = load_config(config_path)
    if device is not None:
        config = dataclasses.replace(config, device=device)
    torch.set_num_threads(config.num_threads)
    cohort = load_cohort(Path(json.loads(run_path.read_text())["cohort_dir"]))
    data = CohortTensors.from_cohort(cohort, label_fraction=config.label_fraction, seed=config.seed)
    ctx = DistContext(0, 1, torch.device(config.device))
    models = train_all(config, data, ctx, out_dir / CHECKPOINT_DIR, resume=True, require_checkpoints=True)
    return config, cohort, data, models


def evaluate_run_dir(out_dir: Path, *, device: str | None = None) -> dict:
    config, cohort, data, models = load_run(out_dir, device)
    return evaluate_models(config, cohort, data, models, out_dir, torch.device(config.device))


def export_run_dir(out_dir: Path) -> Path:
    metrics_path = out_dir / METRICS_FILE
    if not metrics_path.exists():
        raise ModelTrainingError(f"{metrics_path}: not found; run `ecg-train evaluate --run {out_dir}` first")
    _, cohort, data, models = load_run(out_dir, "cpu")
    return export_models(cohort, data, models, json.loads(metrics_path.read_text()), out_dir)


def _write_run_file(out_dir: Path, data_dir: Path, cohort_dir: Path, cohort: Cohort) -> None:
    run = {"data_dir": str(data_dir.resolve()), "cohort_dir": str(cohort_dir.resolve()),
           "cohort_fingerprint": cohort.fingerprint}  # fmt: skip
    (out_dir / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n")
