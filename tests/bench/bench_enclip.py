"""ENCLIP: the one-process K-member training iteration versus one member trained alone, side by side.

An iteration here is everything between two training batches: decoding and transforming the batch (the loader
runs in the training process, ``num_workers 0``, so decoding is on the clock as it is for a run that owns its
cores), the members' forward and backward passes and the optimizer step. K separate runs cost K single-member
iterations (each decodes the batch again); the goal is one K-member iteration <= 0.8 x K of them.
``--text frozen`` fine-tunes the image towers only (``encoder.freeze_text``): the members then share one text pass
per batch, the single member still makes its own. ``--image-size`` renders the world's JPEGs at each size (the
encoder still sees 64 px): 64 is the synthetic world's own size, 400 that of catalogue photos (the 60 x 80 KAGL
thumbnails are smaller, full product photos larger), so decoding costs what it costs on real data. Rounds are
interleaved; warm-up iterations dropped; ratios, never timed tests.

    python tests/bench/bench_enclip.py [--members 5] [--steps 12] [--rounds 2] [--batch 64] [--preset tiny]
        [--diversity seed bootstrap cluster] [--text trained frozen] [--image-size 64 400]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import fashion_bench  # noqa: F401  (torchvision guard before lightning)
import lightning.pytorch as pl
import torch

from fashion_bench.data.datamodule import FashionDataModule
from fashion_bench.encoders import ClipEncoder, export_open_clip_checkpoint
from fashion_bench.methods.base import EncoderConfig, OptimConfig
from fashion_bench.methods.enclip import Enclip

WARMUP = 2


class IterationTimer(pl.Callback):
    """Seconds from one training batch's start to the next's (loading the next batch included)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, *args) -> None:
        self.starts.append(time.perf_counter())

    @property
    def times(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:])][WARMUP:]


def iteration_times(method: Enclip, data: FashionDataModule, steps: int) -> list[float]:
    timer = IterationTimer()
    trainer = pl.Trainer(
        max_steps=steps + WARMUP, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=[timer],
    )
    trainer.fit(method, datamodule=data)
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--preset", default="tiny", help="synthetic world preset (tiny: generated in seconds)")
    parser.add_argument("--diversity", nargs="+", default=["seed", "bootstrap", "cluster"])
    parser.add_argument("--text", nargs="+", choices=["trained", "frozen"], default=["trained", "frozen"],
                        help="members fine-tune both towers (trained) or their image towers only (frozen)")
    parser.add_argument("--image-size", nargs="+", type=int, default=[64],
                        help="side of the world's stored JPEGs in px (the encoder's input stays 64 px)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        world = Path(folder) / "synthetic"
        weights = str(export_open_clip_checkpoint(ClipEncoder("tiny-vit-64"), Path(folder) / "clip.pt"))

        def data(size: int) -> FashionDataModule:
            return FashionDataModule(dataset="synth-t2i", root=str(world), synthetic_preset=args.preset,
                                     adapter_args={"knobs": {"image_size": size}}, num_workers=0, batch_size=args.batch)

        def build(diversity: str, text: str, member_ids: list[int] | None) -> Enclip:
            torch.manual_seed(0)
            encoder = EncoderConfig(pretrained=weights, freeze_text=text == "frozen")
            return Enclip(encoder, OptimConfig(lr=1e-5), members=args.members, member_ids=member_ids, diversity=diversity)

        for size, diversity, text in itertools.product(args.image_size, args.diversity, args.text):
            times: dict[str, list[float]] = {"one": [], "all": []}
            for _ in range(args.rounds):
                times["one"] += iteration_times(build(diversity, text, [0]), data(size), args.steps)
                times["all"] += iteration_times(build(diversity, text, None), data(size), args.steps)
            one, together = statistics.median(times["one"]), statistics.median(times["all"])
            k = args.members
            member = (together - one) / (k - 1)  # one more member's cost; the rest of `one` is shared
            print(f"{size:3d} px JPEGs {diversity:9s} {text:7s} text: one member {one * 1000:7.1f} ms | {k} members in one process {together * 1000:7.1f} ms "
                  f"| ratio to {k} separate runs {together / (k * one):.3f} (goal <= 0.8) | shared part of an iteration "
                  f"{(one - member) * 1000:.1f} ms, each member {member * 1000:.1f} ms: 0.8 needs a shared part >= "
                  f"{k / (5 * k - 5):.0%} of one member's iteration")


if __name__ == "__main__":
    main()
