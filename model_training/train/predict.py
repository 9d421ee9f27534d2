"""Predictions on whole 10 s ECGs: non-overlapping 2.5 s windows, probabilities averaged per study.

Used for validation during training (model selection) and for the multimodal baseline,
which the served ECG-only scoring module cannot run. The windows come from the scoring module's own
:func:`model_training.scoring.split_windows`, and averaging probabilities (not logits) matches
:class:`model_training.scoring.EcgScoringModule`; a test holds the two together.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor

from model_training.scoring import split_windows
from model_training.train.data import Batch, CohortTensors, to_device


@torch.no_grad()
def window_probabilities(
    logits_fn: Callable[[Batch], Tensor],
    data: CohortTensors,
    rows: Tensor,
    *,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """Per-study probabilities [len(rows), outputs] from ``logits_fn`` applied to every window.

    ``logits_fn`` gets a batch with ``ecg`` windows and each window's study's ``values``/``observed``.
    """
    outputs = []
    for chunk in rows.split(batch_size):
        windows = split_windows(data.ecg.records(chunk), data.window_samples)
        n_studies, n_windows = windows.shape[:2]
        batch = {
            "ecg": windows.reshape(n_studies * n_windows, *windows.shape[2:]),
            "values": data.values[chunk].repeat_interleave(n_windows, dim=0),
            "observed": data.observed[chunk].repeat_interleave(n_windows, dim=0),
        }
        probs = torch.sigmoid(logits_fn(to_device(batch, device))).reshape(n_studies, n_windows, -1).mean(dim=1)
        outputs.append(probs.cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, 0), dtype=np.float32)


def macro_auroc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean AUROC over the labels with both classes among the known (non-NaN) studies; NaN if none has."""
    scores = []
    for j in range(labels.shape[1]):
        known = ~np.isnan(labels[:, j])
        y = labels[known, j]
        if y.size and 0 < y.sum() < y.size:
            scores.append(roc_auc_score(y, probs[known, j]))
    return float(np.mean(scores)) if scores else float("nan")
