"""A stage killed mid-way and resumed goes on from its last finished epoch to the weights of a run never stopped.

The kill is simulated by an epoch that raises as it starts: the epochs before it have finished and
written their epoch checkpoint, as a process killed during that epoch would have left them.
"""

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from model_training.config import CONFIG_DIR, load_config
from model_training.train import loop, stages
from model_training.train.checkpoints import checkpoint_path
from model_training.train.distributed import DistContext
from model_training.train.epoch_checkpoint import (
    epoch_checkpoint_path,
    partial_path,
    read_epoch_state,
    write_epoch_state,
)
from model_training.train.stages import StageRunner

CPU = DistContext(0, 1, torch.device("cpu"))
EPOCHS = 3
#: Pre-training draws from every random stream a stage has: dropout (torch's global generator), the
#: DataLoader's base seed, the augmentations' and the feature masks' generators. The multimodal baseline
#: has dropout and validation, so the best epoch and its weights are carried across the kill too.
STAGES = {"pretrain": stages.pretrain, "multimodal": stages.multimodal}


class Killed(Exception):
    """The stand-in for a killed process."""


def config(**changes: object):
    return load_config(CONFIG_DIR / "tiny.yaml", {
        "pretrain.epochs": EPOCHS, "baselines.epochs": EPOCHS, "pretrain.batch_size": 32, "pretrain.mask_ratio": 0.3,
        "pretrain.augment.amplitude_scale": 0.1, "pretrain.augment.baseline_wander_mv": 0.1,
        "pretrain.augment.noise_mv": 0.02, "pretrain.augment.lead_dropout": 0.1, **changes})  # fmt: skip


def train(stage: str, folder: Path, tensors, *, resume: bool, settings=None) -> None:
    STAGES[stage](StageRunner(settings or config(), tensors, CPU, folder, resume=resume))


def train_killed(stage: str, folder: Path, tensors, monkeypatch, *, at_epoch: int, settings=None) -> None:
    """Train ``stage`` until its epoch ``at_epoch`` (0-based) starts, and die there."""
    real = loop._train_epoch

    def dies(*args):
        if args[-1] == at_epoch:
            raise Killed
        return real(*args)

    with monkeypatch.context() as patch:
        patch.setattr(loop, "_train_epoch", dies)
        with pytest.raises(Killed):
            train(stage, folder, tensors, resume=False, settings=settings)
    assert not checkpoint_path(folder, stage).exists()
    assert read_epoch_state(epoch_checkpoint_path(folder, stage)).next_epoch == at_epoch


def record_epochs(monkeypatch) -> list[int]:
    """The epochs trained from now on, in order."""
    trained: list[int] = []
    real = loop._train_epoch

    def recording(*args):
        trained.append(args[-1])
        return real(*args)

    monkeypatch.setattr(loop, "_train_epoch", recording)
    return trained


def assert_same_stage(folder: Path, other: Path, stage: str) -> None:
    mine, theirs = (torch.load(checkpoint_path(f, stage), weights_only=True) for f in (folder, other))
    assert mine["modules"].keys() == theirs["modules"].keys()
    for name, state in mine["modules"].items():
        assert state.keys() == theirs["modules"][name].keys()
        for key, tensor in state.items():
            assert torch.equal(tensor, theirs["modules"][name][key]), f"{stage}: {name}.{key} differs"
    outcome = ("history", "best_epoch", "best_score")
    np.testing.assert_equal({k: mine[k] for k in outcome}, {k: theirs[k] for k in outcome})  # NaN equals NaN
    same_bytes = checkpoint_path(folder, stage).read_bytes() == checkpoint_path(other, stage).read_bytes()
    assert same_bytes, f"{stage}: the checkpoint's bytes differ (its hash is the model version)"


def assert_no_epoch_checkpoint(folder: Path, stage: str) -> None:
    path = epoch_checkpoint_path(folder, stage)
    assert not path.exists() and not partial_path(path).exists()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Train on one thread, as the tiny configuration's runs do: two on a busy 2-core machine are many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def never_stopped(tiny_tensors, tmp_path_factory) -> Path:
    """Each stage trained in one go."""
    folder = tmp_path_factory.mktemp("never-stopped")
    for stage in STAGES:
        train(stage, folder, tiny_tensors, resume=False)
        assert_no_epoch_checkpoint(folder, stage)
    return folder


@pytest.mark.parametrize(("stage", "killed_at"), [("pretrain", 1), ("multimodal", 2)])
def test_a_stage_killed_mid_way_resumes_from_its_last_epoch_to_the_weights_of_a_run_never_stopped(
    stage, killed_at, never_stopped, tiny_tensors, tmp_path, monkeypatch, caplog
):
    train_killed(stage, tmp_path, tiny_tensors, monkeypatch, at_epoch=killed_at)
    trained = record_epochs(monkeypatch)
    with caplog.at_level(logging.INFO, logger="model_training.train.loop"):
        train(stage, tmp_path, tiny_tensors, resume=True)
    assert trained == list(range(killed_at, EPOCHS))
    assert f"{stage}: resuming from epoch {killed_at} of {EPOCHS} ({epoch_checkpoint_path(tmp_path, stage)})" in (
        caplog.text
    )
    assert_same_stage(tmp_path, never_stopped, stage)
    assert_no_epoch_checkpoint(tmp_path, stage)


def test_writing_epoch_checkpoints_leaves_an_uninterrupted_runs_numbers_alone(
    never_stopped, tiny_tensors, tmp_path, monkeypatch
):
    def fit_without_checkpoint(task, groups, data, settings, ctx, validate=None, checkpoint=None):
        return loop.fit(task, groups, data, settings, ctx, validate)

    monkeypatch.setattr(stages, "fit", fit_without_checkpoint)
    train("pretrain", tmp_path, tiny_tensors, resume=False)
    assert_same_stage(tmp_path, never_stopped, "pretrain")


def _as_if_written_by_two_processes(path: Path) -> None:
    write_epoch_state(path, dataclasses.replace(read_epoch_state(path), world_size=2))


def _garble(path: Path) -> None:
    path.write_bytes(b"not a checkpoint")


@pytest.mark.parametrize(
    ("killed_under", "then", "reason"),
    [({"baselines.lr": 1e-3}, None, "written under other settings (baselines.lr)"),
     ({}, _as_if_written_by_two_processes, "written by 2 processes, this run has 1"),
     ({}, _garble, "not an epoch checkpoint this version can read")],
)  # fmt: skip
def test_an_epoch_checkpoint_this_run_cannot_continue_is_not_used_and_the_log_says_why(
    killed_under, then, reason, never_stopped, tiny_tensors, tmp_path, monkeypatch, caplog
):
    path = epoch_checkpoint_path(tmp_path, "multimodal")
    train_killed("multimodal", tmp_path, tiny_tensors, monkeypatch, at_epoch=1, settings=config(**killed_under))
    if then is not None:
        then(path)
    trained = record_epochs(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="model_training.train.stages"):
        train("multimodal", tmp_path, tiny_tensors, resume=True)
    assert trained == list(range(EPOCHS)), "the stage is trained from the start"
    assert f"multimodal: not resuming from {path}, " in caplog.text and reason in caplog.text
    assert "training the stage from the start" in caplog.text
    assert_same_stage(tmp_path, never_stopped, "multimodal")
    assert_no_epoch_checkpoint(tmp_path, "multimodal")


def test_an_epoch_checkpoint_of_a_training_fold_cut_into_other_steps_is_not_continued(
    tiny_tensors, tmp_path, monkeypatch, caplog
):
    train_killed("multimodal", tmp_path, tiny_tensors, monkeypatch, at_epoch=1)
    rows = tiny_tensors.splits["train_labelled"]
    smaller = dataclasses.replace(
        tiny_tensors, splits={**tiny_tensors.splits, "train_labelled": rows[: len(rows) // 2]}
    )
    trained = record_epochs(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="model_training.train.loop"):
        train("multimodal", tmp_path, smaller, resume=True)
    assert trained == list(range(EPOCHS))
    batch = config().batch_size
    steps, fewer = len(rows) // batch, len(rows) // 2 // batch  # the incomplete last batch is dropped
    assert f"written for {EPOCHS} epochs of {steps} steps, this run has {EPOCHS} of {fewer}" in caplog.text
    assert_no_epoch_checkpoint(tmp_path, "multimodal")


def test_without_resume_a_stale_epoch_checkpoint_is_ignored(never_stopped, tiny_tensors, tmp_path, monkeypatch):
    train_killed("multimodal", tmp_path, tiny_tensors, monkeypatch, at_epoch=2)
    trained = record_epochs(monkeypatch)
    train("multimodal", tmp_path, tiny_tensors, resume=False)
    assert trained == list(range(EPOCHS))
    assert_same_stage(tmp_path, never_stopped, "multimodal")
    assert_no_epoch_checkpoint(tmp_path, "multimodal")


def test_a_crash_while_writing_leaves_the_previous_epoch_checkpoint_whole(
    never_stopped, tiny_tensors, tmp_path, monkeypatch
):
    real_save, writes = torch.save, []

    def dies_half_way_through_the_second(payload, target):
        writes.append(target)
        if len(writes) == 2:
            Path(target).write_bytes(b"PK\x03\x04 half a zip archive")
            raise Killed
        real_save(payload, target)

    path = epoch_checkpoint_path(tmp_path, "multimodal")
    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", dies_half_way_through_the_second)
        with pytest.raises(Killed):
            train("multimodal", tmp_path, tiny_tensors, resume=False)
    assert writes == [partial_path(path)] * 2, "written beside, then renamed into place"
    assert read_epoch_state(path).next_epoch == 1, "the first epoch's checkpoint, whole"
    trained = record_epochs(monkeypatch)
    train("multimodal", tmp_path, tiny_tensors, resume=True)
    assert trained == [1, 2]
    assert_same_stage(tmp_path, never_stopped, "multimodal")
    assert_no_epoch_checkpoint(tmp_path, "multimodal")


def test_pretraining_names_every_generator_its_task_draws_from(tiny_tensors, monkeypatch):
    built = {}
    monkeypatch.setattr(StageRunner, "run", lambda self, stage, modules, train: built.update(modules))
    stages.pretrain(StageRunner(config(), tiny_tensors, CPU, Path("unused"), resume=False))
    task = built["task"]
    held = {id(value) for module in task.modules() for value in vars(module).values()
            if isinstance(value, torch.Generator)}  # fmt: skip
    assert len(held) == 2, "the augmentations' and the masks'"
    assert {id(generator) for generator in task.generators().values()} == held
