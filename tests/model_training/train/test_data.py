"""Training crops and evaluation windows have the semantics of integrations.ecg's random_crop and eval_windows."""

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from integrations.ecg import eval_windows as numpy_eval_windows
from model_training.scoring import split_windows
from model_training.train.data import CropBatches, TrainingWindows, labelled_subset
from model_training.train.ecg_store import EcgStore
from model_training.train.predict import macro_auroc


def _crops(ecg: np.ndarray, window_samples: int, seed: int) -> torch.Tensor:
    """One epoch of single-process crops of every study, in study order."""
    rows = torch.arange(len(ecg))
    sampler = DistributedSampler(rows, num_replicas=1, rank=0, shuffle=False)
    batches = CropBatches(rows, sampler, batch_size=len(ecg), n_samples=ecg.shape[2], window_samples=window_samples,
                          seed=seed, rank=0)  # fmt: skip
    windows = TrainingWindows(EcgStore.of(ecg), window_samples)
    return torch.cat([windows[request][1] for request in batches])


def test_a_random_crop_is_one_contiguous_window_at_the_same_start_on_every_lead():
    ecg = np.arange(3 * 12 * 1000, dtype=np.float32).reshape(3, 12, 1000)
    crops = _crops(ecg, 250, seed=0)
    assert crops.shape == (3, 12, 250)
    for study in range(3):
        start = int(crops[study, 0, 0] - ecg[study, 0, 0])
        assert 0 <= start <= 750
        np.testing.assert_array_equal(crops[study].numpy(), ecg[study, :, start : start + 250])


def test_random_crops_cover_every_start_including_the_last():
    ecg = np.broadcast_to(np.arange(20, dtype=np.float32).reshape(1, 1, 20), (400, 1, 20))
    starts = _crops(ecg, 16, seed=1)[:, 0, 0]
    assert set(starts.int().tolist()) == {0, 1, 2, 3, 4}


def test_random_crops_are_reproducible_for_a_seed():
    ecg = np.random.default_rng(0).normal(size=(8, 12, 1000)).astype(np.float32)
    torch.testing.assert_close(_crops(ecg, 250, seed=5), _crops(ecg, 250, seed=5))


def test_evaluation_windows_match_the_shared_numpy_function():
    ecg = np.random.default_rng(0).normal(size=(2, 12, 1010)).astype(np.float32)
    windows = split_windows(torch.from_numpy(ecg), 250)
    assert windows.shape == (2, 4, 12, 250)
    for study in range(2):
        np.testing.assert_array_equal(windows[study].numpy(), numpy_eval_windows(ecg[study], 250))


def test_macro_auroc_skips_single_class_and_unknown_labels():
    labels = np.array([[1, 0, np.nan], [0, 0, 1], [1, 0, np.nan], [0, 0, 0]], dtype=np.float32)
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.1, 0.9], [0.8, 0.1, 0.5], [0.1, 0.1, 0.1]])
    assert macro_auroc(labels, probs) == 1.0  # column 1 has one class, column 2 is scored on its two known rows


def test_the_labelled_subset_is_a_seeded_sorted_share_of_the_training_rows():
    rows = torch.arange(100, 200)
    subset = labelled_subset(rows, 0.2, seed=0)
    assert len(subset) == 20 and set(subset.tolist()) <= set(rows.tolist())
    assert subset.tolist() == sorted(subset.tolist())
    torch.testing.assert_close(subset, labelled_subset(rows, 0.2, seed=0))
    assert labelled_subset(rows, 1.0, seed=0) is rows


def test_pretraining_sees_every_training_study_and_labelled_stages_only_the_share(tiny_dataset):
    from model_training.data.cohort import load_cohort
    from model_training.train.data import CohortTensors

    data = CohortTensors.from_cohort(load_cohort(tiny_dataset / "cohort"), label_fraction=0.5, seed=1)
    assert len(data.splits["train_labelled"]) == round(0.5 * len(data.splits["train"]))
