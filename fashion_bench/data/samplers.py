"""Training samplers that are deterministic by (seed, epoch), rank-aware, and resumable mid-epoch.

Each sampler yields ``(index, epoch)`` keys so that per-sample randomness in the datasets (which caption, which
caption order) depends only on the seed, the epoch and the index, never on worker scheduling. They subclass
``DistributedSampler`` so that Lightning leaves them in place under DDP (each rank takes its own slice).

Resuming: Lightning restores the epoch loop's batch progress before it iterates the loader again; ``progress``
returns ``(epoch, batches already completed in this epoch)`` and the sampler skips those batches, so a resumed run
sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, Iterator, Sequence

import torch
from torch.utils.data import DistributedSampler

ProgressFn = Callable[[], tuple[int, int]]


def _no_progress() -> tuple[int, int]:
    return 0, 0


class _ResumableSampler(DistributedSampler):
    def __init__(
        self, num_samples: int, batch_size: int, *, seed: int, num_replicas: int = 1, rank: int = 0,
        progress: ProgressFn = _no_progress,
    ) -> None:
        self.n = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.progress = progress
        self.epoch = 0
        self.shuffle = True
        self.drop_last = True

    def order(self, epoch: int) -> list[int]:
        """The global sample order of an epoch (before splitting across ranks)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.batches_per_rank() * self.batch_size

    def batches_per_rank(self) -> int:
        return max(1, self.n // (self.batch_size * self.num_replicas))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, done_batches = self.progress()
        order = self.order(epoch)
        per_rank = self.batches_per_rank() * self.batch_size
        if len(order) < per_rank * self.num_replicas:
            order = (order * math.ceil(per_rank * self.num_replicas / max(1, len(order))))[: per_rank * self.num_replicas]
        mine = order[self.rank * per_rank : (self.rank + 1) * per_rank]
        for index in mine[done_batches * self.batch_size :]:
            yield index, epoch


class EpochShuffleSampler(_ResumableSampler):
    """A fresh random permutation per epoch, seeded by (seed, epoch)."""

    def order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()


class IdentityBatchSampler(_ResumableSampler):
    """P x K batches: P identities with K images each (sampled with replacement when an identity has fewer).

    Yields a flat order in which every consecutive ``P * K`` block is one identity-balanced batch; use it with
    ``batch_size = P * K`` and ``drop_last=True``.
    """

    def __init__(self, identities: Sequence[str], p: int, k: int, **kwargs) -> None:
        self.by_identity: dict[str, list[int]] = defaultdict(list)
        for index, identity in enumerate(identities):
            self.by_identity[identity].append(index)
        if len(self.by_identity) < p:
            raise ValueError(
                f"P x K sampling needs at least P={p} identities in the training split, found {len(self.by_identity)}"
            )
        self.p, self.k = p, k
        super().__init__(len(identities), p * k, **kwargs)

    def order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        names = sorted(self.by_identity)
        groups: list[list[int]] = []
        for name in names:
            members = self.by_identity[name]
            perm = torch.randperm(len(members), generator=g).tolist()
            if len(members) < self.k:
                perm += torch.randint(len(members), (self.k - len(members),), generator=g).tolist()
            shuffled = [members[i] for i in perm]
            groups += [shuffled[i : i + self.k] for i in range(0, len(shuffled) - self.k + 1, self.k)]
        chunks = [groups[i] for i in torch.randperm(len(groups), generator=g).tolist()]
        out: list[int] = []
        batch: list[list[int]] = []
        used: set[int] = set()
        identity_of = {i: name for name in names for i in self.by_identity[name]}
        for chunk in chunks:
            identity = identity_of[chunk[0]]
            if identity in used:
                continue
            batch.append(chunk)
            used.add(identity)
            if len(batch) == self.p:
                out += [i for c in batch for i in c]
                batch, used = [], set()
        return out
