"""The one epoch loop every stage and baseline trains with.

A *task* is an ``nn.Module`` whose ``forward(batch)`` returns the loss (open_clip's
pattern): it holds exactly the parameters being trained, so the same task can be
wrapped in DDP unchanged. After each epoch ``validate`` scores the unwrapped task on the
validation fold; the best-scoring weights are kept (model selection on validation
macro AUROC). Every rank validates on the whole validation fold with identical weights,
so every rank selects the same epoch without communicating.

Given an :class:`~model_training.train.epoch_checkpoint.EpochCheckpoint`, ``fit`` writes the
state after each epoch and can continue from one written before: a run killed mid-stage and
resumed ends with exactly the weights and history of one never stopped
(:mod:`model_training.train.epoch_checkpoint` says what is saved and why that is enough).
"""

from __future__ import annotations

import copy
import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from model_training.train.data import CohortTensors, CropBatches, TrainingWindows, to_device
from model_training.train.distributed import DistContext, wrap
from model_training.train.epoch_checkpoint import (
    EpochCheckpoint,
    EpochState,
    capture_random_states,
    restore_random_states,
    save_epoch_checkpoint,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FitSettings:
    epochs: int
    batch_size: int
    seed: int
    weight_decay: float
    progress: bool
    desc: str
    split: str = "train"  # which rows of CohortTensors.splits to train on
    loader_workers: int = 0  # DataLoader worker processes reading ECG windows; 0 reads in the training process


@dataclass(slots=True)
class FitResult:
    best_epoch: int = -1
    best_score: float = math.nan  # the kept epoch's validation score; NaN when nothing was validated
    history: list[dict[str, float]] = field(default_factory=list)


def fit(
    task: nn.Module,
    param_groups: list[dict],
    data: CohortTensors,
    settings: FitSettings,
    ctx: DistContext,
    validate: Callable[[nn.Module], float] | None = None,
    checkpoint: EpochCheckpoint | None = None,
) -> FitResult:
    """Train ``task`` on the training fold with AdamW + one-cycle schedule; keep the best validated weights.

    ``param_groups`` are AdamW groups with their own ``lr``; without ``validate`` the last epoch is kept.
    With ``checkpoint``, the state after every epoch is written to ``checkpoint.path``, and training goes on
    from ``checkpoint.resume_from`` when it holds one (unless it was cut into other steps per epoch).
    """
    task.to(ctx.device)
    trained = wrap(task, ctx)
    loader, batches = training_loader(data, settings, ctx)
    optimizer = torch.optim.AdamW(param_groups, weight_decay=settings.weight_decay)
    steps = max(1, settings.epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in param_groups], total_steps=steps, pct_start=0.2
    )
    result, best_state, first_epoch = FitResult(), None, 0
    resume_from = _continuable(checkpoint, settings, len(loader), ctx)
    if resume_from is not None:
        result, best_state = _restore(resume_from, task, optimizer, scheduler, ctx)
        first_epoch = resume_from.next_epoch
    for epoch in range(first_epoch, settings.epochs):
        batches.set_epoch(epoch)
        loss = _train_epoch(trained, loader, data, optimizer, scheduler, settings, ctx, epoch)
        entry = {"epoch": float(epoch), "train_loss": loss}
        if validate is not None:
            entry["val_score"] = validate(task)
            if best_state is None or entry["val_score"] > result.best_score:
                result.best_epoch, result.best_score = epoch, entry["val_score"]
                best_state = copy.deepcopy(task.state_dict())
        result.history.append(entry)
        if ctx.is_main:
            log.info("%s epoch %d: %s", settings.desc, epoch, {k: round(v, 4) for k, v in entry.items()})
        if checkpoint is not None:
            state = EpochState(next_epoch=epoch + 1, epochs=settings.epochs, steps_per_epoch=len(loader),
                               world_size=ctx.world_size, config=checkpoint.config, task=task.state_dict(),
                               optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                               history=result.history, best_epoch=result.best_epoch, best_score=result.best_score,
                               best_state=best_state,
                               random_states=[capture_random_states(task, ctx.device)])  # fmt: skip
            save_epoch_checkpoint(checkpoint.path, state, ctx)
    if best_state is not None:
        task.load_state_dict(best_state)
    else:
        result.best_epoch = settings.epochs - 1
    return result


def _continuable(
    checkpoint: EpochCheckpoint | None, settings: FitSettings, steps_per_epoch: int, ctx: DistContext
) -> EpochState | None:
    """``checkpoint.resume_from`` if this run cuts its epochs as the one that wrote it did (else None, logged)."""
    state = checkpoint.resume_from if checkpoint is not None else None
    if state is None:
        return None
    if (state.epochs, state.steps_per_epoch) != (settings.epochs, steps_per_epoch):
        if ctx.is_main:
            log.warning("%s: the epoch checkpoint %s was written for %d epochs of %d steps, this run has %d of %d: "
                        "training the stage from the start", settings.desc, checkpoint.path, state.epochs,
                        state.steps_per_epoch, settings.epochs, steps_per_epoch)  # fmt: skip
        return None
    if ctx.is_main:
        log.info("%s: resuming from epoch %d of %d (%s)", settings.desc, state.next_epoch, settings.epochs,
                 checkpoint.path)  # fmt: skip
    return state


def _restore(
    state: EpochState,
    task: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ctx: DistContext,
) -> tuple[FitResult, dict[str, torch.Tensor] | None]:
    """Put the task, optimizer, schedule and this rank's random streams where ``state`` left them."""
    task.load_state_dict(state.task)
    optimizer.load_state_dict(state.optimizer)
    scheduler.load_state_dict(state.scheduler)
    restore_random_states(state.random_states[ctx.rank], task, ctx.device)
    # Interned keys are the very objects the loop's literals are: the stage checkpoint then pickles to the bytes of
    # a run never stopped (pickle refers back to a key object it has written), and its hash is the model version.
    history = [{sys.intern(key): value for key, value in entry.items()} for entry in state.history]
    return FitResult(state.best_epoch, state.best_score, history), state.best_state


def training_loader(data: CohortTensors, settings: FitSettings, ctx: DistContext) -> tuple[DataLoader, CropBatches]:
    """Batches of ``settings.split`` (this rank's shard) as ``(rows, ecg windows)``; ``set_epoch`` the
    :class:`CropBatches` before each epoch."""
    rows = data.splits[settings.split]
    # Explicit replicas/rank: the same sampler shards under DDP and shuffles in a single process.
    sampler = DistributedSampler(rows, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=settings.seed,
                                 drop_last=True)  # fmt: skip
    per_rank = len(rows) // ctx.world_size
    # A batch of one breaks batch norm; tiny cohorts shrink the batch rather than train on nothing.
    batch_size = max(2, min(settings.batch_size, per_rank))
    batches = CropBatches(rows, sampler, batch_size=batch_size, n_samples=data.ecg.n_samples,
                          window_samples=data.window_samples, seed=settings.seed, rank=ctx.rank)  # fmt: skip
    # batch_size=None: each CropBatches item is already a whole batch, read by one worker.
    loader = DataLoader(TrainingWindows(data.ecg, data.window_samples), sampler=batches, batch_size=None,
                        num_workers=settings.loader_workers, pin_memory=ctx.device.type == "cuda")  # fmt: skip
    return loader, batches


def _train_epoch(
    trained: nn.Module,
    loader: DataLoader,
    data: CohortTensors,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    settings: FitSettings,
    ctx: DistContext,
    epoch: int,
) -> float:
    trained.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=f"{settings.desc} {epoch + 1}/{settings.epochs}", leave=False,
               disable=not (settings.progress and ctx.is_main))  # fmt: skip
    for rows, ecg_windows in bar:
        batch = to_device(data.training_batch(rows, ecg_windows), ctx.device)
        loss = trained(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total, count = total + float(loss.detach()), count + 1
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1)
