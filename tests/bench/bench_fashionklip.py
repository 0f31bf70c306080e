"""FashionKLIP's training iteration and its per-epoch concept-table refresh versus the CLIP fine-tune's iteration,
side by side (the configs fashionklip__synth-t2i and clip-finetune__synth-t2i: same encoder, optimiser, batch).

An iteration is everything between two training batches (decoding included, ``num_workers 0``). The refresh
(``rebuild_table``: the concept prompts encoded, prompt retrieval with MMR over the training images' features)
runs once per epoch. With ``table_features: encode`` every refresh first encodes every training image with the
current model; with ``steps`` only the first epoch's does, later ones reuse the features the training steps
computed (timed by one more ``rebuild_table`` after the fit). Refreshes are amortised over a fit of the trainer
config's 3 epochs and added to the step. Mining the graph (``kg: null``) runs once per fit and is reported apart. Goal: step with the refresh amortised <= 1.3 x the CLIP fine-tune's step. Rounds are interleaved;
warm-up iterations dropped; ratios, never timed tests.

    python tests/bench/bench_fashionklip.py [--steps 12] [--rounds 2] [--batch 64] [--preset small] [--root DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import fashion_bench  # noqa: F401  (torchvision guard before lightning)
import lightning.pytorch as pl
import torch
from bench_enclip import WARMUP, IterationTimer

from fashion_bench.data.datamodule import FashionDataModule
from fashion_bench.encoders import ClipEncoder, export_open_clip_checkpoint
from fashion_bench.methods.base import EncoderConfig, OptimConfig
from fashion_bench.methods.clip import ClipMethod
from fashion_bench.methods.fashionklip import FashionKlipMethod
from fashion_bench.kg.build import KgSettings

FIT_EPOCHS = 3  # configs/trainer/cpu.yaml


def timed(record: list[float], fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` that appends its duration to ``record`` on every call."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record.append(time.perf_counter() - start)
    return wrapper


def run(method: pl.LightningModule, data: FashionDataModule, steps: int) -> tuple[list[float], int]:
    """(iteration seconds after warm-up, batches in a full epoch) of one fit of ``steps + WARMUP`` batches."""
    timer = IterationTimer()
    trainer = pl.Trainer(
        max_steps=steps + WARMUP, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=[timer],
    )
    trainer.fit(method, datamodule=data)
    return timer.times, int(trainer.num_training_batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--preset", default="small", help="synthetic world preset (the demo's; tiny epochs are too short "
                        "to time a step between two refreshes)")
    parser.add_argument("--root", type=Path, help="a folder that already holds <preset>-seed0 (default: generate one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        from fashion_bench.data.synthetic import ensure_world

        world = args.root or Path(folder) / "synthetic"
        ensure_world(world / f"{args.preset}-seed0", preset=args.preset, seed=0)
        weights = str(export_open_clip_checkpoint(ClipEncoder("tiny-vit-64"), Path(folder) / "clip.pt"))
        optim = OptimConfig(lr=1e-4, weight_decay=1e-3, warmup_steps=20)

        def data() -> FashionDataModule:
            return FashionDataModule(dataset="synth-t2i", root=str(world), synthetic_preset=args.preset,
                                     num_workers=0, batch_size=args.batch)

        times: dict[str, list[float]] = {"clip": [], "klip": [], "refresh": [], "mining": [], "reuse": []}
        epoch = 0
        for _ in range(args.rounds):
            torch.manual_seed(0)
            times["clip"] += run(ClipMethod(EncoderConfig(pretrained=weights), optim), data(), args.steps)[0]
            torch.manual_seed(0)
            klip = FashionKlipMethod(EncoderConfig(pretrained=weights), optim, kg_settings=KgSettings(chunker="rule", min_count=2),
                                     table_features="steps")
            mining: list[float] = []
            klip.rebuild_table = timed(times["refresh"], klip.rebuild_table)
            klip.load_graph = timed(mining, klip.load_graph)
            step_times, epoch = run(klip, data(), args.steps)
            if epoch <= args.steps + WARMUP:
                raise SystemExit(f"an epoch of the {args.preset} world has {epoch} batches: time fewer --steps than that "
                                 "or use a larger --preset, so that no refresh falls between two timed steps")
            times["klip"] += step_times
            times["mining"].append(mining[0])  # the first call mines; later calls return the graph
            reuse = time.perf_counter()
            klip.rebuild_table()  # from the features the timed steps computed
            times["reuse"].append(time.perf_counter() - reuse)
        clip, klip_step = statistics.median(times["clip"]), statistics.median(times["klip"])
        refresh, reuse = statistics.median(times["refresh"]), statistics.median(times["reuse"])
        mining_s, steps = statistics.median(times["mining"]), FIT_EPOCHS * epoch
        print(f"{args.preset} world, batch {args.batch}, {epoch} batches per epoch, {FIT_EPOCHS} epochs per fit")
        print(f"clip fine-tune step {clip * 1000:7.1f} ms | fashionklip step {klip_step * 1000:7.1f} ms "
              f"(ratio {klip_step / clip:.3f})")
        print(f"refresh encoding the training images {refresh:6.2f} s | refresh from the steps' features {reuse:6.2f} s")
        for mode, per_fit in (("encode", FIT_EPOCHS * refresh), ("steps", refresh + (FIT_EPOCHS - 1) * reuse)):
            amortised = klip_step + per_fit / steps
            print(f"table_features {mode:6s}: step with refreshes amortised {amortised * 1000:7.1f} ms: ratio "
                  f"{amortised / clip:.3f} (goal <= 1.3); with graph mining ({mining_s:.2f} s per fit) "
                  f"{(amortised + mining_s / steps) / clip:.3f}")


if __name__ == "__main__":
    main()
