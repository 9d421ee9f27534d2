"""A tiny simulated hospital and its cohort, built once per session for the trainer's tests."""

from pathlib import Path

import pytest

from model_training.config import CONFIG_DIR
from model_training.data.cohort import CohortConfig, build_cohort, load_cohort
from model_training.simulator.simulate import simulate_hospital
from model_training.train.data import CohortTensors

TINY_CONFIG = CONFIG_DIR / "tiny.yaml"
# 120 patients (~170 studies); wider validation and test folds than the 18/1/1 default, so both have positives.
TINY_COHORT = CohortConfig(min_dx_count=5, min_lab_positives=3, train_folds=tuple(range(12)),
                           val_folds=(12, 13, 14, 15), test_folds=(16, 17, 18, 19))  # fmt: skip


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A dataset root with ``cohort/`` already built (so ``ecg-train run`` reuses it)."""
    root = tmp_path_factory.mktemp("hospital")
    simulate_hospital(root, n_patients=120, seed=3, workers=1, progress=False)
    build_cohort(root, root / "cohort", config=TINY_COHORT, workers=1, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_tensors(tiny_dataset) -> CohortTensors:
    return CohortTensors.from_cohort(load_cohort(tiny_dataset / "cohort"))


@pytest.fixture
def tiny_config_path() -> Path:
    return TINY_CONFIG
