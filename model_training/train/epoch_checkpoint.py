"""The epoch checkpoint: after every finished epoch, all a killed stage needs to go on as if it had never stopped.

:func:`model_training.train.loop.fit` writes it after each epoch (validation and the choice of the best
epoch done) to ``OUT/checkpoints/<stage>.epoch.pt``, atomically as the stage checkpoints are. It holds:

* the task's weights, AdamW's moments and the one-cycle schedule's position, and the next epoch to train;
* the history so far, the best epoch and score, and the best weights kept;
* every random state the remaining epochs draw from: torch's global generator (dropout, and the
  DataLoader's per-epoch base seed), CUDA's on CUDA, and the generators the task holds
  (:class:`HoldsGenerators`: pre-training's augmentations and feature masks).

The batch order (``DistributedSampler``: its seed plus the epoch) and the crop starts (``CropBatches``, reseeded
by ``set_epoch``) are functions of the seed and the epoch, so nothing of theirs is saved. Nothing here draws a
random number, so writing checkpoints leaves an uninterrupted run's numbers as they were.

Under ``torchrun`` the weights and the optimizer are the same on every rank, but each rank augments and masks
with generators of its own: rank 0 gathers every rank's random states and writes one file, so weights and
random states always come from the same epoch. A checkpoint written by another number of processes is not
continued (the shards and the per-rank streams would differ).
"""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from model_training.errors import ModelTrainingError
from model_training.train.distributed import DistContext


@runtime_checkable
class HoldsGenerators(Protocol):
    """A task whose ``forward`` draws from generators of its own (not torch's global one)."""

    def generators(self) -> dict[str, torch.Generator]:
        """Every generator the task draws from, by a stable name."""
        ...


@dataclass(frozen=True, slots=True)
class RandomStates:
    """One rank's random states between two epochs."""

    torch_cpu: Tensor  # torch's global generator
    cuda: Tensor | None  # the device's generator when training on CUDA
    generators: dict[str, Tensor]  # the task's own, by :meth:`HoldsGenerators.generators` name


@dataclass(frozen=True, slots=True)
class EpochState:
    """Where a stage stood after its epoch ``next_epoch - 1``."""

    next_epoch: int
    epochs: int  # the stage's total
    steps_per_epoch: int
    world_size: int
    config: dict[str, object]  # :func:`model_training.train.checkpoints.stage_config` of the run that wrote it
    task: dict[str, Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    history: list[dict[str, float]]
    best_epoch: int
    best_score: float
    best_state: dict[str, Tensor] | None  # the best validated weights; None when nothing is validated
    random_states: list[RandomStates]  # one per rank, in rank order


@dataclass(frozen=True, slots=True)
class EpochCheckpoint:
    """``fit``'s epoch checkpoint: where to write it, the stage settings it records, and what to continue from."""

    path: Path
    config: dict[str, object]
    resume_from: EpochState | None = None  # an epoch checkpoint already checked against this run's settings


def epoch_checkpoint_path(checkpoint_dir: Path, stage: str) -> Path:
    return checkpoint_dir / f"{stage}.epoch.pt"


def partial_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place."""
    return path.with_suffix(".pt.partial")


def task_generators(task: nn.Module) -> dict[str, torch.Generator]:
    return task.generators() if isinstance(task, HoldsGenerators) else {}


def capture_random_states(task: nn.Module, device: torch.device) -> RandomStates:
    """This rank's random states; reading them draws nothing."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    generators = {name: generator.get_state() for name, generator in task_generators(task).items()}
    return RandomStates(torch.get_rng_state(), cuda, generators)


def restore_random_states(states: RandomStates, task: nn.Module, device: torch.device) -> None:
    """Put back what :func:`capture_random_states` read (CUDA's only when it was saved on CUDA and runs on CUDA)."""
    generators = task_generators(task)
    if set(generators) != set(states.generators):
        raise ModelTrainingError(f"the task draws from {sorted(generators)}, the epoch checkpoint saved "
                                 f"{sorted(states.generators)}")  # fmt: skip
    torch.set_rng_state(states.torch_cpu)
    if device.type == "cuda" and states.cuda is not None:
        torch.cuda.set_rng_state(states.cuda, device)
    for name, generator in generators.items():
        generator.set_state(states.generators[name])


def save_epoch_checkpoint(path: Path, state: EpochState, ctx: DistContext) -> None:
    """Rank 0 writes ``state`` with every rank's random states; each rank's ``state.random_states`` is its own."""
    (mine,) = state.random_states
    if not ctx.distributed:
        write_epoch_state(path, state)
        return
    gathered: list[RandomStates] | None = [mine] * ctx.world_size if ctx.is_main else None
    dist.gather_object(mine, gathered, dst=0)
    if gathered is not None:
        write_epoch_state(path, dataclasses.replace(state, random_states=gathered))


def write_epoch_state(path: Path, state: EpochState) -> None:
    """Write ``state`` atomically: a crash mid-write leaves the previous epoch's checkpoint (or none) in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {field.name: getattr(state, field.name) for field in dataclasses.fields(state)}  # no deep copy
    payload["random_states"] = [dataclasses.asdict(states) for states in state.random_states]
    partial = partial_path(path)
    torch.save(payload, partial)
    partial.replace(path)


def read_epoch_state(path: Path) -> EpochState:
    """The state :func:`write_epoch_state` wrote; raises ``ModelTrainingError`` for a file it did not write."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        payload["random_states"] = [RandomStates(**states) for states in payload["random_states"]]
        return EpochState(**payload)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, KeyError, TypeError) as exc:
        raise ModelTrainingError(f"{path}: not an epoch checkpoint this version can read ({exc})") from exc


def remove_epoch_checkpoint(path: Path) -> None:
    """Drop the epoch checkpoint ``path`` and any half-written one beside it."""
    path.unlink(missing_ok=True)
    partial_path(path).unlink(missing_ok=True)
