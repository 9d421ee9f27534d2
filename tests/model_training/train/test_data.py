"""Training crops and evaluation windows have the semantics of integrations.ecg's random_crop and eval_windows."""

import numpy as np
import torch

from integrations.ecg import eval_windows as numpy_eval_windows
from model_training.scoring import split_windows
from model_training.train.data import labelled_subset, random_crops
from model_training.train.predict import macro_auroc


def test_a_random_crop_is_one_contiguous_window_at_the_same_start_on_every_lead():
    ecg = torch.arange(3 * 12 * 1000, dtype=torch.float32).reshape(3, 12, 1000)
    crops = random_crops(ecg, 250, torch.Generator().manual_seed(0))
    assert crops.shape == (3, 12, 250)
    for study in range(3):
        start = int(crops[study, 0, 0] - ecg[study, 0, 0])
        assert 0 <= start <= 750
        torch.testing.assert_close(crops[study], ecg[study, :, start : start + 250])


def test_random_crops_cover_every_start_including_the_last():
    ecg = torch.arange(20, dtype=torch.float32).reshape(1, 1, 20).expand(400, 1, 20)
    starts = random_crops(ecg, 16, torch.Generator().manual_seed(1))[:, 0, 0]
    assert set(starts.int().tolist()) == {0, 1, 2, 3, 4}


def test_random_crops_are_reproducible_for_a_seed():
    ecg = torch.randn(8, 12, 1000)
    first = random_crops(ecg, 250, torch.Generator().manual_seed(5))
    torch.testing.assert_close(first, random_crops(ecg, 250, torch.Generator().manual_seed(5)))


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
