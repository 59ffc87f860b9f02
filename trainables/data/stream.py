"""Images left on disk and decoded batch by batch: a teacher's full training split.

A student's few-sample subset is decoded once into memory (`load_images`), but a
teacher's full split may not fit there (FaceForensics++ c23 at 299 px is tens of GB as
uint8). `FileSet` names the files; `BatchStream` decodes the batches the training loop
asks for, in that order, with DataLoader worker processes (kept alive across epochs) and
pinned memory on CUDA. Decoding is `images.decode`, the in-memory path's: a streamed run
sees the same pixels and gives the same numbers as an in-memory one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from trainables.data.images import decode


@dataclass
class FileSet:
    """Images on disk (decoded to size x size uint8 when a batch needs them) and labels."""
    paths: Sequence[str]
    labels: Tensor  # (N,) long, 0 = real, 1 = fake
    size: int
    videos: Sequence[str] | None = None
    workers: int = 2  # DataLoader worker processes; 0 decodes in the training process

    def __post_init__(self):
        self.paths = [os.fspath(p) for p in self.paths]
        self.labels = torch.as_tensor(self.labels, dtype=torch.long)
        if len(self.labels) != len(self.paths):
            raise ValueError(f"{len(self.paths)} image paths but {len(self.labels)} labels")
        if self.workers < 0:
            raise ValueError(f"workers={self.workers} must be >= 0")

    def __len__(self) -> int:
        return len(self.paths)


class _Decoded(Dataset):
    def __init__(self, paths: Sequence[str], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor:
        return torch.from_numpy(decode(self.paths[i], self.size)).permute(2, 0, 1)  # (3, S, S)


class _Plan:
    """The batch sampler: the index batches of the current pass, set before each pass."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # a worker decodes; the training process owns the cores


class BatchStream:
    """Decodes given index batches of a FileSet, in the given order.

    One DataLoader serves every pass (`batches(...)`), so its workers start once per
    trial, not once per epoch. It is given its own generator: creating its iterators
    must not draw from torch's global RNG, which the training run's numbers depend on.
    Use as a context manager (or call `close()`) to stop the workers.
    """

    def __init__(self, data: FileSet, pin_memory: bool = False, prefetch: int = 4):
        self.plan = _Plan()
        workers = data.workers
        self.loader = DataLoader(
            _Decoded(data.paths, data.size),
            batch_sampler=self.plan,
            num_workers=workers,
            pin_memory=pin_memory,
            persistent_workers=workers > 0,
            prefetch_factor=prefetch if workers > 0 else None,
            worker_init_fn=_one_thread if workers > 0 else None,
            generator=torch.Generator().manual_seed(0),
        )
        self._iter: Iterator | None = None

    def batches(self, index_batches: Iterable[Sequence[int] | Tensor]) -> Iterator[Tensor]:
        """uint8 (B, 3, S, S) per index batch, in order."""
        self.plan.batches = [[int(i) for i in idx] for idx in index_batches]
        if not self.plan.batches:
            return iter(())
        return iter(self.loader)

    def close(self) -> None:
        """Stop the persistent worker processes now. torch has no public call for it: a
        DataLoader with persistent_workers keeps its iterator (and the workers) in the private
        `_iterator` until the loader is garbage-collected, which may be much later (a reference
        in a traceback, a cycle); the tests check that the workers are gone after training."""
        it = getattr(self.loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self.loader._iterator = None

    def __enter__(self) -> "BatchStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
