"""Under ``torchrun --nproc_per_node=2`` (gloo, CPU) the same run trains with DDP; rank 0 alone writes; a killed
stage resumes from its last epoch with each rank's own random streams."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model_training.config import CONFIG_DIR
from model_training.train.distributed import DistContext, init_distributed

TORCHRUN = Path(sys.executable).parent / "torchrun"


def test_a_single_process_is_not_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed("cpu") == DistContext(0, 1, torch.device("cpu"))


@pytest.mark.slow
def test_two_gloo_processes_train_every_stage_and_rank_0_writes(tiny_dataset, tmp_path):
    assert TORCHRUN.exists(), "torchrun is not installed beside this Python"
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    out = tmp_path / "out"
    tiny = str(CONFIG_DIR / "tiny.yaml")
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "model_training.cli", "run",
               "--config", tiny, "--data", str(data), "--out", str(out), "--no-progress"]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["diagnosis"]["macro_auroc"]) == {"ecg_only", "ours", "multimodal"}
    assert len(list((out / "checkpoints").glob("*.pt"))) == 5
    assert (out / "model" / "model.ts").exists()
    assert "DistributedDataParallel: 2 processes, backend gloo" in result.stderr
    assert result.stdout.count("diagnosis macro AUROC ours") == 1  # printed by rank 0 only


@pytest.mark.slow
def test_two_gloo_processes_resume_a_killed_stage_to_the_weights_of_a_run_never_stopped(tiny_dataset, tmp_path):
    script = Path(__file__).with_name("distributed_resume.py")
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(script), str(tiny_dataset), str(tmp_path)]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[3])}
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stages = json.loads((tmp_path / "result.json").read_text())
    assert set(stages) == {"pretrain", "multimodal"}
    for name, outcome in stages.items():
        assert (outcome["next_epoch"], outcome["world_size"], outcome["ranks_with_random_states"]) == (1, 2, 2), name
        assert outcome["same_weights"] and outcome["same_history"], name
        assert not outcome["epoch_checkpoint_left"], name
