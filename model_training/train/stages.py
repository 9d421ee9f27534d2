"""The method's three stages and the two baselines, each trained once and checkpointed.

* ``pretrain`` (stage 1): ECG encoder ↔ clinical encoder, CLIP or VICReg, no labels.
* ``labs`` (stage 2): lab-abnormality head on the ECG embedding, encoder frozen or fine-tuned.
* ``diagnosis`` (stage 3): diagnosis head on the ECG embedding; optionally fine-tunes the
  encoder, keeping the lab loss as an auxiliary so the lab head still matches it.
* ``ecg_only``: the same encoder and head from scratch on diagnoses (lower bound).
* ``multimodal``: late fusion of ECG and clinical encoders (upper bound).

Each function returns the trained modules; with ``resume`` a finished stage is loaded
from OUT/checkpoints/<stage>.pt instead of trained again, and a stage cut short goes on from
its last finished epoch (OUT/checkpoints/<stage>.epoch.pt, written after every epoch and
removed once the stage's own checkpoint is saved) to the weights of a run never stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from model_training.config import TrainConfig
from model_training.errors import ModelTrainingError
from model_training.losses import ClipLoss, VicRegLoss, multilabel_loss
from model_training.models import ClinicalEncoder, EcgEncoder, Head, LateFusionModel
from model_training.train import builders
from model_training.train.augment import EcgAugmentation
from model_training.train.checkpoints import checkpoint_path, epoch_mismatch, load_stage, save_stage, stage_config
from model_training.train.data import CohortTensors
from model_training.train.distributed import DistContext, barrier
from model_training.train.epoch_checkpoint import (
    EpochCheckpoint,
    EpochState,
    epoch_checkpoint_path,
    read_epoch_state,
    remove_epoch_checkpoint,
)
from model_training.train.loop import FitResult, FitSettings, fit
from model_training.train.predict import macro_auroc, window_probabilities
from model_training.train.tasks import EcgHeadsTask, MultimodalTask, PretrainTask

log = logging.getLogger(__name__)

#: Seed offsets, so each stage's initialisation is distinct but reproducible.
_SEEDS = {"pretrain": 0, "labs": 10, "diagnosis": 20, "ecg_only": 30, "multimodal": 40}
EVAL_BATCH = 256


@dataclass(slots=True)
class StageRunner:
    """What every stage needs: configuration, data, process context, and where checkpoints live."""

    config: TrainConfig
    data: CohortTensors
    ctx: DistContext
    checkpoint_dir: Path
    resume: bool
    require_checkpoints: bool = False  # evaluate/export: load every stage, train none

    def seed(self, stage: str) -> int:
        return self.config.seed * 1000 + _SEEDS[stage]

    def run(
        self,
        stage: str,
        modules: dict[str, nn.Module],
        train: Callable[[EpochCheckpoint], FitResult],
    ) -> FitResult:
        """Load ``modules`` from the stage's checkpoint when resuming, else ``train(epoch checkpoint)`` and save them
        (rank 0). When resuming, ``train`` gets the stage's epoch checkpoint to continue from, if this run may."""
        path = checkpoint_path(self.checkpoint_dir, stage)
        epochs_path = epoch_checkpoint_path(self.checkpoint_dir, stage)
        if self.require_checkpoints and not path.exists():
            raise ModelTrainingError(f"{path}: no checkpoint for stage {stage!r}; train it with `ecg-train run` first")
        if (self.resume or self.require_checkpoints) and path.exists():
            result = load_stage(path, modules, self.config)
            log.info("%s: resumed from %s (best epoch %d)", stage, path, result.best_epoch)
            if self.ctx.is_main and not self.require_checkpoints:
                remove_epoch_checkpoint(epochs_path)  # left by a run whose stage checkpoint came from elsewhere
            return result
        resume_from = self._epoch_to_resume(stage, epochs_path) if self.resume else None
        if resume_from is None and self.ctx.is_main:
            remove_epoch_checkpoint(epochs_path)  # a stale one must not be taken up by a later --resume
        result = train(EpochCheckpoint(epochs_path, stage_config(self.config, stage), resume_from))
        if self.ctx.is_main:
            save_stage(path, modules, result, self.config)
            remove_epoch_checkpoint(epochs_path)
            log.info("%s: kept epoch %d (%s)", stage, result.best_epoch, _why_kept(result))
        barrier(self.ctx)
        return result

    def _epoch_to_resume(self, stage: str, path: Path) -> EpochState | None:
        """The epoch checkpoint at ``path`` if this run may continue it; else None, and the reason logged."""
        if not path.exists():
            return None
        try:
            state = read_epoch_state(path)
            reason = epoch_mismatch(state, self.config, stage, self.ctx.world_size)
        except ModelTrainingError as exc:
            state, reason = None, str(exc)
        if reason is None:
            return state
        if self.ctx.is_main:
            log.warning("%s: not resuming from %s, %s: training the stage from the start", stage, path, reason)
        return None

    def settings(self, stage: str, epochs: int) -> FitSettings:
        """Pre-training sees every training study (in batches of ``pretrain.batch_size`` when set: the contrastive
        loss draws its negatives from the batch); the labelled stages only ``train_labelled``."""
        config = self.config
        split = "train" if stage == "pretrain" else "train_labelled"
        batch_size = (
            config.pretrain.batch_size if stage == "pretrain" and config.pretrain.batch_size else config.batch_size
        )
        return FitSettings(epochs=epochs, batch_size=batch_size, seed=self.seed(stage),
                           weight_decay=config.weight_decay, progress=config.progress, desc=stage,
                           split=split, loader_workers=config.loader_workers)  # fmt: skip

    def validator(self, target: str) -> Callable[[nn.Module], float]:
        """Validation macro AUROC of ``target`` ("dx" or "lab") from a task's ``<target>_logits``."""
        rows = self.data.splits["val"]
        labels = (self.data.dx if target == "dx" else self.data.labs)[rows].numpy()

        def score(task: nn.Module) -> float:
            task.eval()
            logits_fn = getattr(task, f"{target}_logits")
            probs = window_probabilities(logits_fn, self.data, rows, batch_size=EVAL_BATCH, device=self.ctx.device)
            value = macro_auroc(labels, probs)
            return value if value == value else 0.0  # NaN (a validation fold without positives) selects the last

        return score


def _why_kept(result: FitResult) -> str:
    if result.best_score != result.best_score:  # NaN: the stage has no validation score (pre-training)
        return "the last epoch: this stage is not validated"
    return f"validation macro AUROC {result.best_score:.4f}"


def pretrain(runner: StageRunner) -> tuple[EcgEncoder, ClinicalEncoder]:
    config, seed = runner.config, runner.seed("pretrain")
    ecg = builders.ecg_encoder(config.model, seed=seed)
    clinical = builders.clinical_encoder(config.model, runner.data.scaler, seed=seed + 1)
    projectors = (builders.projector(config.model, seed=seed + 2), builders.projector(config.model, seed=seed + 3))
    loss = ClipLoss(config.pretrain.temperature_init) if config.pretrain.loss == "clip" else VicRegLoss()
    cfg, n_features = config.pretrain, runner.data.n_features
    regression = builders.head(config.model, n_features, seed=seed + 4) if cfg.regression_weight > 0 else None
    rank_seed = seed + 7919 * runner.ctx.rank  # each rank draws its own augmentations and masks
    augmentation = EcgAugmentation(cfg.augment, seed=rank_seed + 5) if cfg.augment.enabled else None
    mask_head = builders.head(config.model, n_features, seed=seed + 6) if cfg.mask_ratio > 0 else None
    task = PretrainTask(ecg, clinical, *projectors, loss, regression_head=regression,
                        regression_weight=cfg.regression_weight, augmentation=augmentation, mask_head=mask_head,
                        mask_ratio=cfg.mask_ratio, mask_weight=cfg.mask_weight, mask_seed=rank_seed + 7)  # fmt: skip
    modules = {"ecg_encoder": ecg, "clinical_encoder": clinical, "task": task}

    def train(checkpoint: EpochCheckpoint) -> FitResult:
        groups = [{"params": [p for p in task.parameters() if p.requires_grad], "lr": config.pretrain.lr}]
        settings = runner.settings("pretrain", config.pretrain.epochs)
        return fit(task, groups, runner.data, settings, runner.ctx, checkpoint=checkpoint)

    runner.run("pretrain", modules, train)
    return ecg, clinical


def labs(runner: StageRunner, encoder: EcgEncoder) -> Head:
    config = runner.config
    lab_head = builders.head(config.model, runner.data.n_labs, seed=runner.seed("labs"))
    frozen = config.labs.encoder == "frozen"
    task = EcgHeadsTask(encoder, lab_head=lab_head, freeze_encoder=frozen)

    def train(checkpoint: EpochCheckpoint) -> FitResult:
        groups = [{"params": list(lab_head.parameters()), "lr": config.labs.lr}]
        if not frozen:
            groups.append({"params": list(encoder.parameters()), "lr": config.labs.lr * config.labs.encoder_lr_scale})
        settings = runner.settings("labs", config.labs.epochs)
        return fit(task, groups, runner.data, settings, runner.ctx, runner.validator("lab"), checkpoint)

    runner.run("labs", {"ecg_encoder": encoder, "lab_head": lab_head}, train)
    encoder.requires_grad_(True)
    return lab_head


def diagnosis(runner: StageRunner, encoder: EcgEncoder, lab_head: Head) -> Head:
    config, cfg = runner.config, runner.config.diagnosis
    dx_head = builders.head(config.model, runner.data.n_dx, seed=runner.seed("diagnosis"))
    aux = cfg.lab_aux_weight > 0
    task = EcgHeadsTask(encoder, dx_head=dx_head, lab_head=lab_head if aux else None, dx_loss=multilabel_loss(cfg.loss),
                        lab_weight=cfg.lab_aux_weight, freeze_encoder=not cfg.finetune_encoder)  # fmt: skip

    def train(checkpoint: EpochCheckpoint) -> FitResult:
        groups = [{"params": list(dx_head.parameters()), "lr": cfg.lr}]
        if aux:
            groups.append({"params": list(lab_head.parameters()), "lr": cfg.lr})
        if cfg.finetune_encoder:
            groups.append({"params": list(encoder.parameters()), "lr": cfg.lr * cfg.encoder_lr_scale})
        settings = runner.settings("diagnosis", cfg.epochs)
        return fit(task, groups, runner.data, settings, runner.ctx, runner.validator("dx"), checkpoint)

    runner.run("diagnosis", {"ecg_encoder": encoder, "lab_head": lab_head, "dx_head": dx_head}, train)
    encoder.requires_grad_(True)
    return dx_head


def ecg_only(runner: StageRunner) -> tuple[EcgEncoder, Head]:
    config, seed = runner.config, runner.seed("ecg_only")
    encoder = builders.ecg_encoder(config.model, seed=seed)
    dx_head = builders.head(config.model, runner.data.n_dx, seed=seed + 1)
    task = EcgHeadsTask(encoder, dx_head=dx_head, dx_loss=multilabel_loss(config.baselines.loss))

    def train(checkpoint: EpochCheckpoint) -> FitResult:
        groups = [{"params": list(task.parameters()), "lr": config.baselines.lr}]
        settings = runner.settings("ecg_only", config.baselines.epochs)
        return fit(task, groups, runner.data, settings, runner.ctx, runner.validator("dx"), checkpoint)

    runner.run("ecg_only", {"ecg_encoder": encoder, "dx_head": dx_head}, train)
    return encoder, dx_head


def multimodal(runner: StageRunner) -> LateFusionModel:
    config = runner.config
    model = builders.late_fusion(config.model, runner.data.scaler, runner.data.n_dx, seed=runner.seed("multimodal"))
    task = MultimodalTask(model, multilabel_loss(config.baselines.loss))

    def train(checkpoint: EpochCheckpoint) -> FitResult:
        groups = [{"params": list(model.parameters()), "lr": config.baselines.lr}]
        settings = runner.settings("multimodal", config.baselines.epochs)
        return fit(task, groups, runner.data, settings, runner.ctx, runner.validator("dx"), checkpoint)

    runner.run("multimodal", {"model": model}, train)
    return model
