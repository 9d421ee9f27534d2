"""One checkpoint per stage and baseline under OUT/checkpoints/, so ``--resume`` skips what is done.

A checkpoint records the configuration sections it depends on (a stage depends on its own
section and those of the stages before it); resuming when one of them changed is refused
rather than mixing stages trained under different settings.

Within a stage, the epoch checkpoint ``OUT/checkpoints/<stage>.epoch.pt``
(:mod:`model_training.train.epoch_checkpoint`) records the same settings: ``--resume`` continues a
stage killed mid-way from its last finished epoch only under the settings and the number of
processes that wrote it (:func:`epoch_mismatch`), and trains the stage from the start otherwise.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from model_training.config import TrainConfig, with_defaults
from model_training.errors import ConfigError
from model_training.train.epoch_checkpoint import EpochState
from model_training.train.loop import FitResult

#: What every stage's weights depend on, besides its own section(s).
SHARED_KEYS = ("model", "seed", "batch_size", "weight_decay")

#: The configuration sections each stage's weights depend on.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "pretrain": ("pretrain",),
    "labs": ("pretrain", "labs", "label_fraction"),
    "diagnosis": ("pretrain", "labs", "diagnosis", "label_fraction"),
    "ecg_only": ("baselines", "label_fraction"),
    "multimodal": ("baselines", "label_fraction"),
}


def stage_config(config: TrainConfig, stage: str) -> dict[str, object]:
    """The part of ``config`` that ``stage``'s weights depend on: two runs that agree on it train the same stage."""
    everything = config.to_dict()
    return {key: everything[key] for key in (*SHARED_KEYS, *STAGE_SECTIONS[stage])}


def stored_stage_config(path: Path) -> dict[str, object]:
    """What :func:`stage_config` was for the run that wrote the checkpoint ``path``."""
    return torch.load(path, map_location="cpu", weights_only=True)["config"]


def same_stage_settings(stored: dict[str, object], config: TrainConfig, stage: str) -> bool:
    """Whether a checkpoint whose recorded settings are ``stored`` is what ``config`` would train for ``stage``.

    A setting added after the checkpoint was written is taken at its default (:func:`with_defaults`), so older run
    folders still resume and evaluate.
    """
    return with_defaults(stored, stage_config(TrainConfig(), stage)) == stage_config(config, stage)


def changed_settings(stored: dict[str, object], config: TrainConfig, stage: str) -> list[str]:
    """The settings (dotted: ``pretrain.lr``) that ``stored`` records otherwise than ``config`` has them."""
    return _differences(with_defaults(stored, stage_config(TrainConfig(), stage)), stage_config(config, stage))


def _differences(old: object, new: object, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(old.keys() | new.keys())
        return [name for key in keys for name in _differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.removesuffix(".")]


def epoch_mismatch(state: EpochState, config: TrainConfig, stage: str, world_size: int) -> str | None:
    """Why this run (``config``, ``world_size`` processes) cannot continue the epoch checkpoint ``state``; None if
    it can."""
    changed = changed_settings(state.config, config, stage)  # empty exactly when same_stage_settings holds
    if changed:
        return f"written under other settings ({', '.join(changed)})"
    if state.world_size != world_size:
        return f"written by {state.world_size} processes, this run has {world_size}"
    return None


def checkpoint_path(checkpoint_dir: Path, stage: str) -> Path:
    return checkpoint_dir / f"{stage}.pt"


def save_stage(path: Path, modules: dict[str, nn.Module], result: FitResult, config: TrainConfig) -> None:
    """Write the stage named by ``path``'s stem atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "modules": {name: module.state_dict() for name, module in modules.items()},
        "best_epoch": result.best_epoch,
        "best_score": result.best_score,
        "history": result.history,
        "config": stage_config(config, path.stem),
    }
    partial = path.with_suffix(".pt.partial")
    torch.save(payload, partial)
    partial.replace(path)  # a crash mid-write never leaves a checkpoint that looks finished


def load_stage(path: Path, modules: dict[str, nn.Module], config: TrainConfig | None) -> FitResult:
    """Load ``modules`` in place from ``path``; with ``config``, refuse one trained under other settings."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if config is not None and not same_stage_settings(payload["config"], config, path.stem):
        raise ConfigError(f"{path}: trained with a different configuration; use a new --out or drop --resume")
    for name, module in modules.items():
        module.load_state_dict(payload["modules"][name])
    return FitResult(payload["best_epoch"], payload["best_score"], payload["history"])
