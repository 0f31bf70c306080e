"""Multi-prompt stage 2 and reid-baseline training steps (Lightning) versus a bare open_clip step, same batch.

The bare step is bench_training's: both CLIP towers forward, symmetric CLIP loss, backward, AdamW. Stage 2
trains the image tower, 5 visual prompts and the BNNeck head against frozen identity text features; the
baseline the image tower and head. Rounds are interleaved; warm-up steps dropped; ratios, never timed tests.

    python tests/bench/bench_multiprompt.py [--steps 15] [--rounds 3] [--batch 64] [--deep]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import fashion_bench  # noqa: F401  (torchvision guard before lightning)
import lightning.pytorch as pl
import torch
from bench_training import Repeat, StepTimer, bare_step_times, fixed_batch
from torch.utils.data import DataLoader

from fashion_bench.encoders.clip import ClipEncoder
from fashion_bench.methods.base import EncoderConfig, OptimConfig
from fashion_bench.methods.multiprompt import MultiPrompt, MultiPromptStage1, VisualPromptConfig
from fashion_bench.methods.reid_baseline import ReidBaseline

INSTANCES = 4  # P x K batches: K images per identity


def stage1_file(folder: Path, identities: int) -> str:
    stage1 = MultiPromptStage1(EncoderConfig(), num_identities=identities)
    path = folder / "stage1.ckpt"
    torch.save({"state_dict": stage1.state_dict(), "hyper_parameters": dict(stage1.hparams)}, path)
    return str(path)


def method_step_times(method: pl.LightningModule, batch: dict[str, torch.Tensor], steps: int) -> list[float]:
    timer = StepTimer()
    trainer = pl.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=[timer],
    )
    trainer.fit(method, train_dataloaders=DataLoader(Repeat(batch, steps), batch_size=None))
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--deep", action="store_true", help="deep visual prompts (default shallow)")
    args = parser.parse_args()
    batch = fixed_batch(ClipEncoder("tiny-vit-64"), args.batch)
    identities = args.batch // INSTANCES
    batch["label"] = torch.arange(args.batch) // INSTANCES
    times: dict[str, list[float]] = {"bare": [], "stage2": [], "baseline": []}
    with tempfile.TemporaryDirectory() as folder:
        ckpt = stage1_file(Path(folder), identities)
        for _ in range(args.rounds):
            torch.manual_seed(0)
            times["bare"] += bare_step_times(batch, args.steps)[3:]
            stage2 = MultiPrompt(EncoderConfig(), OptimConfig(lr=1e-4), stage1_ckpt=ckpt, visual_prompts=VisualPromptConfig(count=5, deep=args.deep))
            times["stage2"] += method_step_times(stage2, batch, args.steps)[3:]
            baseline = ReidBaseline(EncoderConfig(), OptimConfig(lr=1e-4), num_identities=identities)
            times["baseline"] += method_step_times(baseline, batch, args.steps)[3:]
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"bare open_clip step (both towers, batch {args.batch}): {median['bare'] * 1000:7.1f} ms")
    print(f"multiprompt stage-2 step ({'deep' if args.deep else 'shallow'}, 5 prompts)  : {median['stage2'] * 1000:7.1f} ms  "
          f"ratio {median['stage2'] / median['bare']:.3f} (goal <= 1.15)")
    print(f"reid-baseline step                        : {median['baseline'] * 1000:7.1f} ms  "
          f"ratio {median['baseline'] / median['bare']:.3f}")
    print(f"stage 2 / reid-baseline                   : {median['stage2'] / median['baseline']:7.3f}")


if __name__ == "__main__":
    main()
