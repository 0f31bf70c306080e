"""Training benchmark: a `clip` training step through Lightning versus a bare open_clip step, and data loading
versus step throughput. Ratios are measured side by side in one run (rounds interleaved), never as timed tests.

    python tests/bench/bench_training.py [--steps 15] [--rounds 3] [--batch 64] [--preset small]
"""

from __future__ import annotations

import argparse
import statistics
import time

import fashion_bench  # noqa: F401  (torchvision guard before lightning)
import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from fashion_bench.encoders.clip import ClipEncoder
from fashion_bench.encoders.text_trim import encode_text_trimmed
from fashion_bench.methods.base import EncoderConfig, OptimConfig
from fashion_bench.methods.clip import ClipMethod


def fixed_batch(encoder: ClipEncoder, batch: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    texts = [f"a red striped shirt number {i}" for i in range(batch)]
    return {"image": torch.randn(batch, 3, 64, 64, generator=g), "text": encoder.tokenize(texts), "label": torch.arange(batch)}


def bare_step_times(batch: dict[str, torch.Tensor], steps: int) -> list[float]:
    """open_clip forward + symmetric CLIP loss + backward + AdamW step, no framework; texts are encoded without
    their padding as ClipEncoder does (exact, encoders/text_trim.py), so the ratio stays the framework's overhead."""
    torch.manual_seed(0)
    model = ClipEncoder("tiny-vit-64").clip
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    labels = torch.arange(batch["image"].shape[0])
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        image = model.encode_image(batch["image"], normalize=True)
        text = F.normalize(encode_text_trimmed(model, batch["text"]), dim=-1)
        logits = model.logit_scale.exp() * image @ text.t()
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


class Repeat(Dataset):
    def __init__(self, batch: dict[str, torch.Tensor], steps: int) -> None:
        self.batch, self.steps = batch, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batch


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        self.times.append(time.perf_counter() - self._start)


def lightning_step_times(batch: dict[str, torch.Tensor], steps: int) -> list[float]:
    """The `clip` method's training step driven by a Lightning Trainer (optimizer step and hooks included)."""
    torch.manual_seed(0)
    method = ClipMethod(EncoderConfig(), OptimConfig(lr=1e-4))
    timer = StepTimer()
    trainer = pl.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=[timer],
    )
    loader = DataLoader(Repeat(batch, steps), batch_size=None)
    trainer.fit(method, train_dataloaders=loader)
    return timer.times


def loader_throughput(preset: str, batch: int, batches: int, workers: int) -> float:
    """Samples per second of the synth-t2i training loader (PIL decoding + transforms + tokenising in workers)."""
    from fashion_bench.contracts import Preprocessing
    from fashion_bench.data.datamodule import FashionDataModule

    encoder = ClipEncoder("tiny-vit-64")
    dm = FashionDataModule(dataset="synth-t2i", synthetic_preset=preset, batch_size=batch, num_workers=workers)
    dm.attach_preprocessing(Preprocessing(encoder.image_spec, encoder.tokenize))
    loader = dm.train_dataloader()
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    start = time.perf_counter()
    seen = 0
    for _ in range(batches):
        seen += next(iterator)["image"].shape[0]
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    batch = fixed_batch(ClipEncoder("tiny-vit-64"), args.batch)
    bare, ours = [], []
    for _ in range(args.rounds):  # interleaved, warm-up steps dropped
        bare += bare_step_times(batch, args.steps)[3:]
        ours += lightning_step_times(batch, args.steps)[3:]
    bare_s, ours_s = statistics.median(bare), statistics.median(ours)
    print(f"bare open_clip step   (batch {args.batch}): {bare_s * 1000:7.1f} ms  median of {len(bare)}")
    print(f"clip method step (Lightning)       : {ours_s * 1000:7.1f} ms  median of {len(ours)}")
    print(f"ratio method / bare                : {ours_s / bare_s:7.3f}  (goal <= 1.15)")
    step_throughput = args.batch / ours_s
    loader = loader_throughput(args.preset, args.batch, batches=30, workers=args.workers)
    print(f"step throughput                    : {step_throughput:7.0f} samples/s")
    print(f"loader throughput ({args.workers} workers, {args.preset}): {loader:7.0f} samples/s")
    print(f"ratio loader / step                : {loader / step_throughput:7.2f}  (goal >= 3)")


if __name__ == "__main__":
    main()
