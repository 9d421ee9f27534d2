"""Training reads ECG windows from the cohort's file on disk: no copy of the cohort in memory, the same batches
as the former in-memory path for a seed, and disjoint shards under DistributedDataParallel."""

import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from model_training.data.cohort import load_cohort
from model_training.train.data import CohortTensors
from model_training.train.distributed import DistContext
from model_training.train.loop import FitSettings, training_loader

CPU = torch.device("cpu")


def _settings(*, seed: int = 7, batch_size: int = 16, loader_workers: int = 0) -> FitSettings:
    return FitSettings(epochs=1, batch_size=batch_size, seed=seed, weight_decay=0.0, progress=False, desc="test",
                       loader_workers=loader_workers)  # fmt: skip


def _epoch(data: CohortTensors, settings: FitSettings, ctx: DistContext, epoch: int) -> list[tuple[torch.Tensor, ...]]:
    loader, batches = training_loader(data, settings, ctx)
    batches.set_epoch(epoch)
    return [(rows, ecg) for rows, ecg in loader]


def _in_memory_epoch(data: CohortTensors, ecg_mv: torch.Tensor, settings: FitSettings, epoch: int) -> list:
    """The former path: the whole cohort copied into a tensor, rows batched by a DataLoader over the row
    indices, one random start per study drawn for the batch and gathered on every lead."""
    rows = data.splits[settings.split]
    sampler = DistributedSampler(rows, num_replicas=1, rank=0, shuffle=True, seed=settings.seed, drop_last=True)
    sampler.set_epoch(epoch)
    generator = torch.Generator().manual_seed(settings.seed * 100_003 + epoch * 101)
    batches = []
    for batch_rows in DataLoader(rows, batch_size=settings.batch_size, sampler=sampler, drop_last=True):
        studies = ecg_mv[batch_rows]
        n, leads, samples = studies.shape
        starts = torch.randint(0, samples - data.window_samples + 1, (n,), generator=generator)
        positions = (starts[:, None] + torch.arange(data.window_samples))[:, None, :].expand(n, leads, -1)
        batches.append((batch_rows, torch.gather(studies, 2, positions)))
    return batches


def test_the_training_data_maps_the_cohort_file_and_copies_none_of_it(tiny_dataset):
    cohort_dir = tiny_dataset / "cohort"
    ecg_file_bytes = (cohort_dir / "ecg.f32").stat().st_size
    cohort = load_cohort(cohort_dir)
    tracemalloc.start()
    data = CohortTensors.from_cohort(cohort)
    _, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert data.ecg.path == cohort_dir / "ecg.f32"
    assert peak_bytes < ecg_file_bytes / 4  # the clinical tables only: a few kB a study, not 48 kB of ECG


def test_a_store_sent_to_a_worker_carries_the_path_not_the_signals(tiny_tensors):
    store = tiny_tensors.ecg
    rows = torch.arange(len(store))
    before = store.records(rows)  # opens the map in this process
    pickled = pickle.dumps(store)
    assert len(pickled) < 1000
    torch.testing.assert_close(pickle.loads(pickled).records(rows), before)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the resident set from /proc")
def test_reading_every_ecg_leaves_the_file_out_of_the_resident_set(tiny_tensors):
    store = pickle.loads(pickle.dumps(tiny_tensors.ecg))  # a fresh, unopened store
    file_bytes = store.path.stat().st_size
    before = _resident_file_bytes()
    for rows in torch.arange(len(store)).split(8):
        store.records(rows)
    assert _resident_file_bytes() - before < file_bytes / 2


def _resident_file_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssFile in /proc/self/status")


def test_a_seed_gives_the_batches_of_the_former_in_memory_path(tiny_dataset, tiny_tensors):
    ecg_mv = torch.from_numpy(np.array(load_cohort(tiny_dataset / "cohort").ecg))
    settings = _settings()
    single = DistContext(0, 1, CPU)
    for epoch in (0, 1):
        streamed = _epoch(tiny_tensors, settings, single, epoch)
        expected = _in_memory_epoch(tiny_tensors, ecg_mv, settings, epoch)
        assert len(streamed) == len(expected) > 1
        for (rows, ecg), (expected_rows, expected_ecg) in zip(streamed, expected, strict=True):
            torch.testing.assert_close(rows, expected_rows, rtol=0, atol=0)
            torch.testing.assert_close(ecg, expected_ecg, rtol=0, atol=0)


def test_loader_workers_read_the_same_batches_as_the_training_process(tiny_tensors):
    single = DistContext(0, 1, CPU)
    in_process = _epoch(tiny_tensors, _settings(), single, epoch=1)
    in_workers = _epoch(tiny_tensors, _settings(loader_workers=2), single, epoch=1)
    assert len(in_workers) == len(in_process)
    for (rows, ecg), (rows_w, ecg_w) in zip(in_process, in_workers, strict=True):
        assert torch.equal(rows, rows_w) and torch.equal(ecg, ecg_w)


def test_two_ranks_train_on_disjoint_shards_of_equal_size(tiny_tensors):
    settings = _settings(batch_size=8)
    shards = [torch.cat([rows for rows, _ in _epoch(tiny_tensors, settings, DistContext(rank, 2, CPU), 0)])
              for rank in (0, 1)]  # fmt: skip
    rank0, rank1 = (set(shard.tolist()) for shard in shards)
    assert len(rank0) == len(shards[0]) and len(rank1) == len(shards[1])  # no study twice within a rank
    assert rank0.isdisjoint(rank1)
    assert len(rank0) == len(rank1) > 0
    assert rank0 | rank1 <= set(tiny_tensors.splits["train"].tolist())
