"""What a stage trains with: its batch, and when a checkpoint counts as trained with the same settings."""

import dataclasses
from pathlib import Path

import pytest
import torch

from model_training.config import CONFIG_DIR, load_config
from model_training.errors import ConfigError
from model_training.train.checkpoints import same_stage_settings, stage_config
from model_training.train.distributed import DistContext
from model_training.train.stages import StageRunner

TINY = CONFIG_DIR / "tiny.yaml"


def runner(config, tensors) -> StageRunner:
    return StageRunner(config, tensors, DistContext(0, 1, torch.device("cpu")), Path("unused"), resume=False)


def test_pretraining_takes_its_own_batch_size_when_set_and_the_labelled_stages_keep_theirs(tiny_tensors):
    shared = runner(load_config(TINY), tiny_tensors)
    assert shared.settings("pretrain", 1).batch_size == shared.settings("ecg_only", 1).batch_size == 16
    larger = runner(load_config(TINY, {"pretrain.batch_size": 64}), tiny_tensors)
    assert larger.settings("pretrain", 1).batch_size == 64
    assert larger.settings("labs", 1).batch_size == larger.settings("ecg_only", 1).batch_size == 16


@pytest.mark.parametrize("value", [1, -4])
def test_a_pretraining_batch_of_one_or_less_is_refused(value):
    with pytest.raises(ConfigError, match=r"pretrain\.batch_size"):
        load_config(TINY, {"pretrain.batch_size": value})


def test_the_pretraining_batch_is_a_pretraining_setting_only():
    base, larger = load_config(TINY), load_config(TINY, {"pretrain.batch_size": 64})
    assert stage_config(base, "pretrain") != stage_config(larger, "pretrain")
    for stage in ("ecg_only", "multimodal"):
        assert stage_config(base, stage) == stage_config(larger, stage)


def test_a_checkpoint_written_before_a_setting_existed_counts_as_trained_with_its_default():
    config = load_config(TINY)
    older = stage_config(config, "pretrain")
    del older["pretrain"]["batch_size"]  # as a checkpoint of the version before the option stores it
    assert same_stage_settings(older, config, "pretrain")
    changed = dataclasses.replace(config, pretrain=dataclasses.replace(config.pretrain, batch_size=64))
    assert not same_stage_settings(older, changed, "pretrain")
