"""Size and write time of one epoch checkpoint of the demo model. Prints one JSON object.

    .venv/bin/python bench/epoch_checkpoint.py [--config model_training/configs/demo.yaml] [--repeats 5]

Every training epoch ends by writing ``OUT/checkpoints/<stage>.epoch.pt``
(:mod:`model_training.train.epoch_checkpoint`); this is what that costs per epoch, for the two shapes of stage:

- ``pretrain``: the largest task (ECG and clinical encoders, both projectors, the masked-feature head), its AdamW
  moments, no best weights (pre-training is not validated), augmentation and mask generators on;
- ``ecg_only``: the ECG encoder and diagnosis head, their AdamW moments and a best-weights copy (validated stages).

Each task takes one AdamW step on a random batch so that the optimizer holds its moments, as after any epoch. The
write is timed to the local disk (wall, median of ``--repeats``), file included; the figure scales with the
parameter count, not with the cohort.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model_training.config import AugmentConfig, TrainConfig, load_config
from model_training.losses import ClipLoss, multilabel_loss
from model_training.models import ClinicalScaler
from model_training.train import builders
from model_training.train.augment import EcgAugmentation
from model_training.train.epoch_checkpoint import EpochState, capture_random_states, write_epoch_state
from model_training.train.tasks import EcgHeadsTask, PretrainTask

N_FEATURES, N_DX, BATCH, WINDOW_SAMPLES = 60, 82, 16, 250
DEMO = Path(__file__).resolve().parents[1] / "model_training" / "configs" / "demo.yaml"


def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"ecg": torch.randn(BATCH, 12, WINDOW_SAMPLES, generator=generator),
            "values": torch.randn(BATCH, N_FEATURES, generator=generator),
            "observed": torch.ones(BATCH, N_FEATURES),
            "dx": (torch.rand(BATCH, N_DX, generator=generator) < 0.1).float()}  # fmt: skip


def pretrain_task(config: TrainConfig) -> PretrainTask:
    scaler = ClinicalScaler.fit(np.random.default_rng(0).normal(size=(100, N_FEATURES)).astype(np.float32))
    model = config.model
    augment = AugmentConfig(amplitude_scale=0.1, baseline_wander_mv=0.1, noise_mv=0.02, lead_dropout=0.1)
    return PretrainTask(builders.ecg_encoder(model, seed=0), builders.clinical_encoder(model, scaler, seed=1),
                        builders.projector(model, seed=2), builders.projector(model, seed=3), ClipLoss(0.07),
                        augmentation=EcgAugmentation(augment, seed=5),
                        mask_head=builders.head(model, N_FEATURES, seed=6), mask_ratio=0.3, mask_seed=7)  # fmt: skip


def ecg_only_task(config: TrainConfig) -> EcgHeadsTask:
    encoder = builders.ecg_encoder(config.model, seed=0)
    return EcgHeadsTask(encoder, dx_head=builders.head(config.model, N_DX, seed=1), dx_loss=multilabel_loss("bce"))


def epoch_state(task: nn.Module, *, keep_best: bool) -> EpochState:
    """The state after one AdamW step, as ``fit`` writes it after an epoch."""
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=10)
    task.train()(batch()).backward()
    optimizer.step()
    scheduler.step()
    return EpochState(next_epoch=1, epochs=10, steps_per_epoch=1, world_size=1, config={}, task=task.state_dict(),
                      optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                      history=[{"epoch": 0.0, "train_loss": 1.0}], best_epoch=0, best_score=0.5,
                      best_state=copy.deepcopy(task.state_dict()) if keep_best else None,
                      random_states=[capture_random_states(task, torch.device("cpu"))])  # fmt: skip


def measure(task: nn.Module, *, keep_best: bool, repeats: int, folder: Path) -> dict[str, float]:
    state, path = epoch_state(task, keep_best=keep_best), folder / "stage.epoch.pt"
    times_s = []
    for _ in range(repeats):
        start_s = time.perf_counter()
        write_epoch_state(path, state)
        times_s.append(time.perf_counter() - start_s)
    return {"parameters": sum(p.numel() for p in task.parameters()),
            "bytes": path.stat().st_size, "write_ms_median": round(statistics.median(times_s) * 1000, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEMO)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = load_config(args.config)
    torch.set_num_threads(config.num_threads)
    with tempfile.TemporaryDirectory() as folder:
        result = {
            "config": args.config.name,
            "pretrain": measure(pretrain_task(config), keep_best=False, repeats=args.repeats, folder=Path(folder)),
            "ecg_only": measure(ecg_only_task(config), keep_best=True, repeats=args.repeats, folder=Path(folder)),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
