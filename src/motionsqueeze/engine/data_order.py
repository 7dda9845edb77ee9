"""Data order that can be resumed mid-epoch and reproduced across worker counts.

:class:`ResumableSampler` yields ``(epoch, index)`` pairs: a permutation drawn from
``seed + epoch``, split across processes like ``DistributedSampler`` (padded to a multiple
of the world size), starting at any position of the epoch. :class:`SeededDataset` seeds
torch, NumPy and Python's ``random`` from ``(seed, epoch, index)`` before reading an item,
so random sampling and augmentation of an item do not depend on which worker reads it or on
what was read before. Together they make an interrupted and resumed run see exactly the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

__all__ = ["ResumableSampler", "SeededDataset", "item_seed", "batch_generator"]


def item_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + index * 104_729 + 12_345) % (2**31 - 1)


def batch_generator(seed: int, rank: int, epoch: int, step: int) -> torch.Generator:
    """A CPU generator for the random choices made on a whole batch (batch augmentation),
    seeded from ``(seed, rank, epoch, step in epoch)`` so that a resumed run draws the same."""
    return torch.Generator().manual_seed(item_seed(seed + 7_777 * rank, epoch, 1_000_000 + step))


class ResumableSampler(Sampler):
    """Shuffled (or sequential) indices for one process, as ``(epoch, index)`` pairs.

    Args:
        num_items: dataset length.
        seed: base seed of the permutation (epoch e uses ``seed + e``).
        shuffle: permute, or keep dataset order.
        rank, world_size: this process's share (every ``world_size``-th item from ``rank``).
        weights: per-item sampling weights (``(num_items,)``, class-balanced sampling); each
            epoch then draws ``num_items`` items with replacement in proportion to them
            instead of a permutation. ``None`` for a permutation.
    """

    def __init__(self, num_items: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 weights: torch.Tensor | None = None):
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0
        self.per_rank = -(-num_items // world_size)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if self.weights is not None and (len(self.weights) != num_items or not bool((self.weights >= 0).all())
                                         or float(self.weights.sum()) <= 0):
            raise ValueError(f"sampler weights must be {num_items} non-negative numbers, not all zero")

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch and skip its first ``start`` items of this rank."""
        self.epoch = epoch
        self.start = start

    def indices(self) -> list[int]:
        if self.weights is not None:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.multinomial(self.weights, self.num_items, replacement=True, generator=g).tolist()
        elif self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_items, generator=g).tolist()
        else:
            order = list(range(self.num_items))
        order += order[: self.per_rank * self.world_size - len(order)]  # pad like DistributedSampler
        return order[self.rank :: self.world_size]

    def __iter__(self):
        for index in self.indices()[self.start :]:
            yield (self.epoch, index)

    def __len__(self) -> int:
        return self.per_rank - self.start


class SeededDataset(Dataset):
    """Wrap a dataset so that item ``(epoch, index)`` is read under a fixed seed."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        s = item_seed(self.seed, epoch, index)
        # Items are read on the CPU: seed its generator only. (``torch.manual_seed`` would
        # also queue a seed for every accelerator, recording a stack trace each time: 1% of
        # the demo's training time went there.)
        if get_worker_info() is not None:
            # A worker process owns its RNGs: just seed them.
            torch.default_generator.manual_seed(s)
            np.random.seed(s)
            random.seed(s)
            return self.dataset[index]
        # In the main process, leave the caller's RNG streams (dropout, ...) untouched.
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(s)
            np.random.seed(s)
            random.seed(s)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
