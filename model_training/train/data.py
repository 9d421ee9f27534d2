"""The cohort as training inputs: clinical tables in memory, ECG windows streamed from disk.

Only the clinical side (imputed values, missingness mask, labels: a few hundred bytes per
study) is held in memory. The ECGs stay in the cohort's on-disk file (:class:`EcgStore`)
and each batch reads just its windows.

A training batch is :func:`integrations.ecg.random_crop` done on a whole batch at once: one
start per study drawn uniformly from ``[0, samples - window]``, the window taken on every
lead. :class:`CropBatches` draws the rows and the starts in the main process, from the
epoch's seeded generator, so a seed gives the same batches with or without DataLoader
workers; :class:`TrainingWindows` (the Dataset) reads them in the worker. Evaluation reads
whole ECGs and cuts the non-overlapping windows of :func:`integrations.ecg.eval_windows`
(see :mod:`model_training.train.predict`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

from model_training.data.cohort import Cohort
from model_training.models.clinical_encoder import ClinicalScaler
from model_training.train.ecg_store import EcgStore

Batch = dict[str, Tensor]


@dataclass(frozen=True, slots=True)
class CohortTensors:
    """Every study of the cohort, aligned: ECGs (on disk), clinical inputs and labels, plus the split indices."""

    ecg: EcgStore  # float32 [studies, leads, samples], read a batch at a time
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
            ecg=EcgStore.of(cohort.ecg),
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

    def training_batch(self, rows: Tensor, ecg_windows: Tensor) -> Batch:
        """The studies ``rows`` with their ECG windows (read by :class:`TrainingWindows`)."""
        return {
            "ecg": ecg_windows,
            "values": self.values[rows],
            "observed": self.observed[rows],
            "dx": self.dx[rows],
            "labs": self.labs[rows],
        }


@dataclass(frozen=True, slots=True)
class CropRequest:
    """One training batch to read: the studies and where each one's window starts."""

    rows: Tensor  # int64 [batch]
    starts: Tensor  # int64 [batch], in samples


class CropBatches:
    """Batches of ``rows`` in the order of a :class:`DistributedSampler`, each with random crop starts.

    The sampler shards the rows across ranks (and shuffles by its seed and epoch); ``set_epoch``
    also reseeds the crop generator, so every epoch and rank draws its own, reproducible starts.
    """

    def __init__(self, rows: Tensor, sampler: DistributedSampler, *, batch_size: int, n_samples: int,
                 window_samples: int, seed: int, rank: int) -> None:  # fmt: skip
        self.rows, self.sampler, self.batch_size = rows, sampler, batch_size
        self.n_samples, self.window_samples, self.seed, self.rank = n_samples, window_samples, seed, rank
        self.generator = torch.Generator()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.generator.manual_seed(self.seed * 100_003 + epoch * 101 + self.rank)

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size  # incomplete last batch dropped

    def __iter__(self) -> Iterator[CropRequest]:
        positions = list(self.sampler)
        for first in range(0, len(self) * self.batch_size, self.batch_size):
            rows = self.rows[positions[first : first + self.batch_size]]
            starts = torch.randint(0, self.n_samples - self.window_samples + 1, (len(rows),), generator=self.generator)
            yield CropRequest(rows, starts)


class TrainingWindows(Dataset):
    """Reads a :class:`CropRequest`'s windows from the ECG store: ``(rows, ecg windows)``.

    Only the store travels to DataLoader workers (as a path: each worker maps the file itself).
    """

    def __init__(self, ecg: EcgStore, window_samples: int) -> None:
        self.ecg, self.window_samples = ecg, window_samples

    def __getitem__(self, request: CropRequest) -> tuple[Tensor, Tensor]:
        return request.rows, self.ecg.windows(request.rows, request.starts, self.window_samples)


def labelled_subset(train_rows: Tensor, fraction: float, seed: int) -> Tensor:
    """A sorted, seeded random ``fraction`` of ``train_rows`` (all at 1.0), to study how much labelled data matters."""
    if fraction >= 1.0:
        return train_rows
    n_kept = max(2, round(fraction * len(train_rows)))
    order = torch.randperm(len(train_rows), generator=torch.Generator().manual_seed(seed))
    return train_rows[order[:n_kept].sort().values]


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
