"""Run by ``torchrun --nproc_per_node=2`` from test_distributed.py: each stage never stopped, then killed and resumed.

``python distributed_resume.py DATA OUT``: pre-training (augmentations and masks drawn per rank) and the multimodal
baseline (dropout, validation) are trained in OUT/whole, then in OUT/cut killed as their epoch 1 starts on every
rank and resumed. Rank 0 writes OUT/result.json: per stage, what the epoch checkpoint held and whether the resumed
stage checkpoint equals the uninterrupted one.
"""

import contextlib
import json
import sys
from pathlib import Path

import torch

from model_training.config import CONFIG_DIR, load_config
from model_training.data.cohort import load_cohort
from model_training.train import loop, stages
from model_training.train.data import CohortTensors
from model_training.train.distributed import barrier, init_distributed, shutdown
from model_training.train.epoch_checkpoint import epoch_checkpoint_path, read_epoch_state

KILLED_AT = 1


class Killed(Exception):
    pass


def dies(*args):
    if args[-1] == KILLED_AT:
        raise Killed
    return real_train_epoch(*args)


real_train_epoch = loop._train_epoch
data_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
torch.set_num_threads(1)
ctx = init_distributed("cpu")
config = load_config(CONFIG_DIR / "tiny.yaml", {
    "pretrain.epochs": 3, "baselines.epochs": 3, "pretrain.batch_size": 32, "pretrain.mask_ratio": 0.3,
    "pretrain.augment.amplitude_scale": 0.1, "pretrain.augment.noise_mv": 0.02})  # fmt: skip
tensors = CohortTensors.from_cohort(load_cohort(data_dir / "cohort"))
result = {}
for name, stage in (("pretrain", stages.pretrain), ("multimodal", stages.multimodal)):
    stage(stages.StageRunner(config, tensors, ctx, out / "whole", resume=False))
    loop._train_epoch = dies
    with contextlib.suppress(Killed):  # the epoch checkpoint read below is there only if it was killed
        stage(stages.StageRunner(config, tensors, ctx, out / "cut", resume=False))
    loop._train_epoch = real_train_epoch
    barrier(ctx)
    state = read_epoch_state(epoch_checkpoint_path(out / "cut", name))
    barrier(ctx)
    stage(stages.StageRunner(config, tensors, ctx, out / "cut", resume=True))
    if ctx.is_main:
        whole, cut = (torch.load(out / run / f"{name}.pt", weights_only=True) for run in ("whole", "cut"))
        result[name] = {
            "next_epoch": state.next_epoch,
            "world_size": state.world_size,
            "ranks_with_random_states": len(state.random_states),
            "same_weights": all(torch.equal(tensor, cut["modules"][module][key])
                                for module, weights in whole["modules"].items() for key, tensor in weights.items()),
            "same_history": whole["history"] == cut["history"],
            "epoch_checkpoint_left": epoch_checkpoint_path(out / "cut", name).exists(),
        }  # fmt: skip
    barrier(ctx)
if ctx.is_main:
    (out / "result.json").write_text(json.dumps(result))
shutdown(ctx)
