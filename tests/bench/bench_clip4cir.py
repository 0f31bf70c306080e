"""CLIP4Cir stage 2: a training epoch with cached frozen features versus without, measured side by side.

Each configuration trains two epochs of the synth-cir training loader (the first fills the cache); rounds are
interleaved. Epoch time includes data loading (decoding reference and target images, which the cache does not
save); step time is the compute between a batch's arrival and the end of its optimizer step (slowed by the
loader workers sharing the cores). For scale, the same steps on one batch held in memory (no loader) follow.

    python tests/bench/bench_clip4cir.py [--preset small] [--batches 40] [--rounds 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import fashion_bench  # noqa: F401  (torchvision guard before lightning)
import lightning.pytorch as pl
import torch

from fashion_bench.data.datamodule import FashionDataModule
from fashion_bench.methods.base import EncoderConfig, OptimConfig
from fashion_bench.methods.clip4cir import Clip4CirCombiner


class EpochTimer(pl.Callback):
    def __init__(self) -> None:
        self.epochs: list[float] = []
        self.steps: list[list[float]] = []

    def on_train_epoch_start(self, *args) -> None:
        self._epoch = time.perf_counter()
        self.steps.append([])

    def on_train_batch_start(self, *args) -> None:
        self._step = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        self.steps[-1].append(time.perf_counter() - self._step)

    def on_train_epoch_end(self, *args) -> None:
        self.epochs.append(time.perf_counter() - self._epoch)


def two_epochs(cache: bool, args: argparse.Namespace) -> EpochTimer:
    torch.manual_seed(0)
    method = Clip4CirCombiner(EncoderConfig(), OptimConfig(lr=1e-4, weight_decay=0.0), cache_features=cache)
    data = FashionDataModule(dataset="synth-cir", synthetic_preset=args.preset, batch_size=args.batch, num_workers=args.workers)
    timer = EpochTimer()
    trainer = pl.Trainer(
        max_epochs=2, limit_train_batches=args.batches, limit_val_batches=0, accelerator="cpu", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )
    trainer.fit(method, datamodule=data)
    return timer


def in_memory_step(cache: bool, batch: int, steps: int = 12) -> float:
    """Median step on one fixed batch without a loader (after the first step has filled the cache)."""
    torch.manual_seed(0)
    method = Clip4CirCombiner(EncoderConfig(), cache_features=cache).train()
    method.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    optimizer = torch.optim.Adam(method.combiner.parameters(), lr=1e-4)
    images = torch.randn(2 * batch, 3, 64, 64)
    data = {"reference": images[:batch], "target": images[batch:], "target_key": torch.arange(batch),
            "text": method.encoder.tokenize([f"is red and has stripes {i}" for i in range(batch)])}
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = method.composed_loss(data)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batches", type=int, default=40, help="training batches per epoch")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    runs: dict[bool, list[EpochTimer]] = {False: [], True: []}
    for _ in range(args.rounds):
        for cache in (False, True):
            runs[cache].append(two_epochs(cache, args))

    def median(cache: bool, epoch: int, steps: bool = False) -> float:
        if steps:
            return statistics.median(s for t in runs[cache] for s in t.steps[epoch][1:])
        return statistics.median(t.epochs[epoch] for t in runs[cache])

    plain = statistics.median(median(False, e) for e in (0, 1))
    plain_step = statistics.median(median(False, e, steps=True) for e in (0, 1))
    print(f"stage-2 epoch, {args.batches} batches of {args.batch} ({args.preset}, {args.workers} workers), median of {args.rounds} rounds")
    print(f"uncached epoch               : {plain:7.2f} s   step {plain_step * 1000:7.1f} ms")
    print(f"cached, first epoch (fills)  : {median(True, 0):7.2f} s   step {median(True, 0, steps=True) * 1000:7.1f} ms")
    print(f"cached, later epoch          : {median(True, 1):7.2f} s   step {median(True, 1, steps=True) * 1000:7.1f} ms")
    print(f"ratio uncached / cached epoch: {plain / median(True, 1):7.2f}x   (steps only: {plain_step / median(True, 1, steps=True):.1f}x)")
    plain_mem, cached_mem = in_memory_step(False, args.batch), in_memory_step(True, args.batch)
    print(f"in-memory step, uncached / cached: {plain_mem * 1000:.1f} / {cached_mem * 1000:.1f} ms = {plain_mem / cached_mem:.1f}x")


if __name__ == "__main__":
    main()
