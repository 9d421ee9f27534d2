"""The cohort's preprocessed ECGs read from disk a batch at a time, never held whole in memory.

At MIMIC-IV-ECG scale (about 800,000 ECGs, 12 leads, 10 s at 100 Hz, float32) the ECG file is
about 38 GB: more than a training machine's memory, and under ``torchrun`` every rank would
hold its own copy. :class:`EcgStore` maps the file read-only instead, so the operating system's
page cache holds at most one copy per machine, shared by every rank and DataLoader worker.

Each process opens the map lazily on first read; pickling a store (to send it to a DataLoader
worker) carries only the path and the shape. After each ECG it reads, the store drops the pages
it mapped from its own address space (``MADV_DONTNEED``): they stay in the shared page cache, but
neither a batch nor a whole epoch piles the file up in every process's resident set.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

_DTYPE = np.dtype(np.float32)  # the cohort's ECG file: C-ordered float32 [studies, leads, samples]
# A read can map a whole large page-cache folio (up to 2 MB on recent kernels): after each ECG the store releases
# the 2 MB-aligned blocks around it, or a batch of 512 scattered ECGs maps about 1 GB before it ends.
_RELEASE_BLOCK_BYTES = 2 << 20


@dataclass(slots=True)
class EcgStore:
    """ECGs [studies, leads, samples] in mV; ``path`` None holds a small in-memory array (an empty cohort)."""

    shape: tuple[int, int, int]
    path: Path | None = None
    offset_bytes: int = 0
    _array: np.ndarray | None = field(default=None, repr=False)
    _map: mmap.mmap | None = field(default=None, repr=False)

    @classmethod
    def of(cls, ecg: np.ndarray) -> EcgStore:
        """The store behind a cohort's ``ecg``: the file of a memmap, or the array itself when in memory."""
        shape = (int(ecg.shape[0]), int(ecg.shape[1]), int(ecg.shape[2]))
        if isinstance(ecg, np.memmap) and ecg.filename is not None:
            return cls(shape, Path(ecg.filename), int(ecg.offset))
        return cls(shape, _array=np.ascontiguousarray(ecg, dtype=_DTYPE))

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def n_samples(self) -> int:
        return self.shape[2]

    def records(self, rows: Tensor) -> Tensor:
        """Whole ECGs of ``rows``: float32 [len(rows), leads, samples], a copy."""
        array = self._opened()
        out = np.empty((len(rows), *self.shape[1:]), dtype=_DTYPE)
        for i, row in enumerate(rows.tolist()):
            out[i] = array[row]
            self._release(row)
        return torch.from_numpy(out)

    def windows(self, rows: Tensor, starts: Tensor, window_samples: int) -> Tensor:
        """``window_samples`` from ``starts[i]`` on every lead of ``rows[i]``: [len(rows), leads, window_samples]."""
        array = self._opened()
        out = np.empty((len(rows), self.shape[1], window_samples), dtype=_DTYPE)
        for i, (row, start) in enumerate(zip(rows.tolist(), starts.tolist(), strict=True)):
            out[i] = array[row, :, start : start + window_samples]
            self._release(row)
        return torch.from_numpy(out)

    def _opened(self) -> np.ndarray:
        if self._array is None:
            assert self.path is not None
            with self.path.open("rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            count = int(np.prod(self.shape))
            self._array = np.frombuffer(self._map, dtype=_DTYPE, count=count, offset=self.offset_bytes)
            self._array = self._array.reshape(self.shape)
        return self._array

    def _release(self, row: int) -> None:
        """Unmap the blocks around ``row`` from this process; the shared page cache keeps them."""
        if self._map is None:
            return
        row_bytes = self.shape[1] * self.shape[2] * _DTYPE.itemsize
        first = self.offset_bytes + row * row_bytes
        start = first // _RELEASE_BLOCK_BYTES * _RELEASE_BLOCK_BYTES
        end = min(len(self._map), -(-(first + row_bytes) // _RELEASE_BLOCK_BYTES) * _RELEASE_BLOCK_BYTES)
        self._map.madvise(mmap.MADV_DONTNEED, start, end - start)

    def __getstate__(self) -> dict[str, object]:
        state = {"shape": self.shape, "path": self.path, "offset_bytes": self.offset_bytes}
        state["_array"] = self._array if self.path is None else None  # an open map is never pickled
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        for name, value in state.items():
            setattr(self, name, value)
        self._map = None
