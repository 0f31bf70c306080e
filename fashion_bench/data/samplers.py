"""Training samplers that are deterministic by (seed, epoch), rank-aware, and resumable mid-epoch.

Each sampler yields ``(index, epoch)`` keys so that per-sample randomness in the datasets (which caption, which
caption order) depends only on the seed, the epoch and the index, never on worker scheduling. They subclass
``DistributedSampler`` so that Lightning leaves them in place under DDP (each rank takes its own slice).

Under DDP each global batch (``batch_size`` x ranks consecutive samples of the order) is shared out rank by
rank, so N processes with batch size B / N train on the very batches of one process with batch size B.

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
        span = self.batch_size * self.num_replicas  # one global batch: consecutive rank shares of the order
        mine = [
            i
            for start in range(0, per_rank * self.num_replicas, span)
            for i in order[start + self.rank * self.batch_size : start + (self.rank + 1) * self.batch_size]
        ]
        for index in mine[done_batches * self.batch_size :]:
            yield index, epoch


class EpochShuffleSampler(_ResumableSampler):
    """A fresh random permutation per epoch, seeded by (seed, epoch)."""

    def order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()


class IdentityBatchSampler(_ResumableSampler):
    """P x K batches: P distinct identities with K images each.

    Each identity's images are shuffled and cut into chunks of K (its last chunk, and an identity with fewer than
    K images, filled up with its own images drawn again), so every image appears in an epoch. Batches take one
    chunk from each of the P identities with the most chunks left (ties in a random order), which spreads every
    identity over the epoch and leaves fewer than P identities' chunks unused; no batch repeats within an epoch.
    Yields a flat order in which every consecutive ``P * K`` block is one batch; use it with
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
        self._batches = max(1, len(self.order(0)) // (self.batch_size * self.num_replicas))

    def batches_per_rank(self) -> int:
        return self._batches

    def _chunks(self, members: list[int], g: torch.Generator) -> list[list[int]]:
        shuffled = [members[i] for i in torch.randperm(len(members), generator=g).tolist()]
        missing = -len(shuffled) % self.k
        shuffled += [members[i] for i in torch.randint(len(members), (missing,), generator=g).tolist()]
        return [shuffled[i : i + self.k] for i in range(0, len(shuffled), self.k)]

    def order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        left = {name: self._chunks(self.by_identity[name], g) for name in sorted(self.by_identity)}
        out: list[int] = []
        while sum(1 for chunks in left.values() if chunks) >= self.p:
            tie = torch.rand(len(left), generator=g).tolist()
            ranked = sorted(zip(left, tie), key=lambda pair: (-len(left[pair[0]]), pair[1]))
            for name, _ in ranked[: self.p]:
                out += left[name].pop()
        return out
