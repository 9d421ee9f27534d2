"""The cohort as in-memory tensors, and training batches of random 2.5 s crops.

The crop is :func:`integrations.ecg.random_crop` done on a whole batch at once: one start
per study drawn uniformly from ``[0, samples - window]``, the window taken on every lead.
Evaluation uses the non-overlapping windows of :func:`integrations.ecg.eval_windows`
(see :mod:`model_training.train.predict`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from model_training.data.cohort import Cohort
from model_training.models.clinical_encoder import ClinicalScaler

Batch = dict[str, Tensor]


@dataclass(frozen=True, slots=True)
class CohortTensors:
    """Every study of the cohort, aligned: ECGs, clinical inputs and labels, plus the split indices."""

    ecg_mv: Tensor  # float32 [studies, leads, samples]
    values: Tensor  # float32 [studies, features], median-imputed
    observed: Tensor  # float32 [studies, features], 1 where measured
    dx: Tensor  # float32 [studies, codes]
    labs: Tensor  # float32 [studies, targets], NaN unknown
    splits: dict[str, Tensor]  # "train" | "train_labelled" | "val" | "test" → int64 row indices
    window_samples: int
    scaler: ClinicalScaler  # fitted on the training fold

    @classmethod
    def from_cohort(cls, cohort: Cohort, *, label_fraction: float = 1.0, seed: int = 0) -> CohortTensors:
        """``label_fraction`` < 1 keeps the labels of only that (seeded, random) share of the training studies."""
        values, observed = cohort.clinical_inputs()
        splits = {name: torch.as_tensor(cohort.split(name), dtype=torch.int64) for name in ("train", "val", "test")}
        splits["train_labelled"] = labelled_subset(splits["train"], label_fraction, seed)
        return cls(
            ecg_mv=torch.from_numpy(np.array(cohort.ecg, dtype=np.float32)),  # a copy of the read-only memmap
            values=torch.from_numpy(values.astype(np.float32)),
            observed=torch.from_numpy(observed.astype(np.float32)),
            dx=torch.from_numpy(cohort.dx_labels.astype(np.float32)),
            labs=torch.from_numpy(cohort.lab_labels.astype(np.float32)),
            splits=splits,
            window_samples=cohort.config.preprocess.window_samples,
            scaler=ClinicalScaler.fit(values[cohort.split("train")]),
        )

    @property
    def n_dx(self) -> int:
        return int(self.dx.shape[1])

    @property
    def n_labs(self) -> int:
        return int(self.labs.shape[1])

    @property
    def n_features(self) -> int:
        return int(self.values.shape[1])

    def training_batch(self, rows: Tensor, generator: torch.Generator) -> Batch:
        """The studies ``rows`` with a random ``window_samples`` crop of each ECG."""
        return {
            "ecg": random_crops(self.ecg_mv[rows], self.window_samples, generator),
            "values": self.values[rows],
            "observed": self.observed[rows],
            "dx": self.dx[rows],
            "labs": self.labs[rows],
        }


def labelled_subset(train_rows: Tensor, fraction: float, seed: int) -> Tensor:
    """A sorted, seeded random ``fraction`` of ``train_rows`` (all at 1.0), to study how much labelled data matters."""
    if fraction >= 1.0:
        return train_rows
    n_kept = max(2, round(fraction * len(train_rows)))
    order = torch.randperm(len(train_rows), generator=torch.Generator().manual_seed(seed))
    return train_rows[order[:n_kept].sort().values]


def random_crops(ecg_mv: Tensor, window_samples: int, generator: torch.Generator) -> Tensor:
    """One random window per study: [B, leads, samples] → [B, leads, window_samples]."""
    n_studies, n_leads, n_samples = ecg_mv.shape
    starts = torch.randint(0, n_samples - window_samples + 1, (n_studies,), generator=generator)
    positions = starts[:, None] + torch.arange(window_samples)
    return torch.gather(ecg_mv, 2, positions[:, None, :].expand(n_studies, n_leads, window_samples))


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
