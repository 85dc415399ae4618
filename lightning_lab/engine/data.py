"""Data loading the engine controls: a seeded, resumable (and distributed) sampler, batch transfer."""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, RandomSampler, Sampler


class ResumableSampler(Sampler[int]):
    """Yields this rank's share of the dataset in an order fixed by ``(seed, epoch)``.

    Like ``DistributedSampler``: the shuffled order is padded (training) so every rank gets the
    same count, and rank ``r`` takes positions ``r, r + world, ...`` — so batch ``i`` of all ranks
    together is batch ``i`` of a single process with a batch ``world`` times larger. For evaluation
    (``pad=False``) nothing is repeated, so metrics never count a sample twice. ``skip(n)`` drops
    the first ``n`` indices of the next pass: that is how a mid-epoch resume avoids loading the
    batches it has already trained on.
    """

    def __init__(self, size: int, *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1,
                 pad: bool = True, sample_seeds: bool = False) -> None:
        self.size = size
        self.sample_seeds = sample_seeds
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next pass yields."""
        self.epoch = epoch

    def skip(self, count: int) -> None:
        """Leave out the first ``count`` indices of the next pass only."""
        self._skip = count

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.size / self.world_size)
        return len(range(self.rank, self.size, self.world_size))

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=gen).tolist()
        else:
            order = list(range(self.size))
        if self.pad and self.world_size > 1:
            total = len(self) * self.world_size
            order += (order * math.ceil(total / max(self.size, 1)))[: total - self.size]
        mine = order[self.rank :: self.world_size]
        skip, self._skip = self._skip, 0
        if not self.sample_seeds:
            return iter(mine[skip:])
        # Each sample's seed depends on (seed, epoch, its place in the epoch) only: which worker
        # loads it, or where a resumed epoch starts, changes nothing.
        world, rank, base = self.world_size, self.rank, (self.seed, self.epoch)
        return iter([(index, hash((*base, rank + world * k)) & 0xFFFFFFFF)
                     for k, index in enumerate(mine[skip:], start=skip)])


class SeededSamples(torch.utils.data.Dataset):
    """Wraps a map-style dataset loaded by worker processes: before loading a sample it seeds
    the worker's python, numpy and torch generators with the sample's seed (from
    :class:`ResumableSampler`), so random augmentation is reproducible and exact on resume."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)  # torch.manual_seed would also touch CUDA: 100× slower
        return self.dataset[index]


class PreparedLoader:
    """A DataLoader rebuilt around a :class:`ResumableSampler`, with per-epoch seeding."""

    def __init__(self, loader: DataLoader, sampler: ResumableSampler, generator: torch.Generator) -> None:
        self.loader = loader
        self.sampler = sampler
        self.generator = generator
        self.batch_size = loader.batch_size or 1

    def __len__(self) -> int:
        return len(self.loader)

    def iterate(self, epoch: int, skip_batches: int = 0) -> Iterator[Any]:
        """Iterate epoch ``epoch``'s batches, starting after the first ``skip_batches``."""
        self.sampler.set_epoch(epoch)
        self.sampler.skip(skip_batches * self.batch_size)
        # Worker seeds come from this generator, never from the global RNG: iterating does not
        # move the training RNG stream, so a resumed run draws the same dropout masks.
        self.generator.manual_seed(self.sampler.seed * 1_000_003 + epoch)
        return iter(self.loader)


def prepare_loader(loader: Any, *, seed: int, rank: int, world_size: int, train: bool) -> Any:
    """Give ``loader`` an engine-owned sampler (seeded order, exact resume, rank sharding).

    Returns a :class:`PreparedLoader`, or ``loader`` unchanged when it cannot be rebuilt (an
    iterable that is not a DataLoader, an ``IterableDataset``, a custom batch sampler).
    """
    if not isinstance(loader, DataLoader):
        return loader
    if isinstance(loader.dataset, IterableDataset) or type(loader.batch_sampler) is not BatchSampler:
        if world_size > 1:
            warnings.warn(
                "This DataLoader uses an IterableDataset or a custom batch_sampler, which lightning_lab "
                "cannot shard: every process will see the same data. Shard it yourself by rank.",
                stacklevel=3,
            )
        return loader
    shuffle = isinstance(loader.sampler, RandomSampler)
    workers = loader.num_workers > 0
    sampler = ResumableSampler(
        len(loader.dataset), shuffle=shuffle, seed=seed, rank=rank, world_size=world_size, pad=train,
        sample_seeds=workers,
    )
    generator = torch.Generator()
    extra: dict[str, Any] = {}
    if loader.num_workers > 0:
        extra = {"prefetch_factor": loader.prefetch_factor, "persistent_workers": loader.persistent_workers}
    rebuilt = DataLoader(
        SeededSamples(loader.dataset) if workers else loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=generator,
        pin_memory_device=loader.pin_memory_device,
        **extra,
    )
    return PreparedLoader(rebuilt, sampler, generator)


def iterate(loader: Any, epoch: int, skip_batches: int = 0) -> Iterator[Any]:
    """Iterate a prepared or plain loader; plain ones skip batches by consuming them."""
    if isinstance(loader, PreparedLoader):
        return loader.iterate(epoch, skip_batches)
    it = iter(loader)
    for _ in range(skip_batches):
        next(it, None)
    return it


def loader_length(loader: Any) -> int | None:
    """Number of batches, or ``None`` for an iterable without a length."""
    try:
        return len(loader)
    except TypeError:
        return None


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to ``device``; other values pass through."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(b, device) for b in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(b, device) for b in batch)
    if isinstance(batch, Mapping):
        return type(batch)({k: move_to_device(v, device) for k, v in batch.items()})
    return batch


def batch_size_of(batch: Any) -> int:
    """The leading dimension of the first tensor found in ``batch`` (1 when there is none)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            size = batch_size_of(item)
            if size:
                return size
        return 1
    return 1
