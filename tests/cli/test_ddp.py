"""Distributed evaluation: 2 and 3 CPU processes (gloo) give the same metrics as 1 (padding duplicates dropped)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def validate(tiny_world: Path, runs: Path, weights: Path, *extra: str) -> dict:
    command = [
        sys.executable, "-m", "fashion_bench.cli", "validate", "--config", str(REPO / "configs/experiment/clip__synth-id.yaml"),
        "--data.root", str(tiny_world.parent), "--data.synthetic_preset", "tiny", "--data.num_workers", "0",
        "--data.eval_batch_size", "7", "--model.init_args.encoder.pretrained", str(weights),
        "--trainer.default_root_dir", str(runs), "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu", *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = list(runs.glob("*/*/results.json"))
    return json.loads(path.read_text())


@pytest.mark.timeout(600)
@pytest.mark.parametrize("devices", ["2", "3"])  # 28 gallery images: even split over 2; over 3 the sampler pads
def test_multi_process_gloo_metrics_equal_one_process(devices, tiny_world, tiny_encoder, tmp_path):
    from fashion_bench.encoders import export_open_clip_checkpoint

    weights = export_open_clip_checkpoint(tiny_encoder, tmp_path / "w.pt")
    single = validate(tiny_world, tmp_path / "one", weights)
    double = validate(tiny_world, tmp_path / "two", weights, "--trainer.strategy", "ddp", "--trainer.devices", devices)
    assert double["gallery_size"] == single["gallery_size"] == 28
    assert double["num_queries"] == single["num_queries"]
    for name, value in single["metrics"].items():
        assert double["metrics"][name] == pytest.approx(value, abs=1e-6), name
    for subset in ("intra", "cross"):
        assert double["per_subset"][subset] == pytest.approx(single["per_subset"][subset], abs=1e-6)


def fit(tiny_world: Path, runs: Path, weights: Path, batch_size: int, *extra: str) -> dict:
    command = [
        sys.executable, "-m", "fashion_bench.cli", "fit", "--config", str(REPO / "configs/experiment/clip__synth-t2i.yaml"),
        "--data.root", str(tiny_world.parent), "--data.synthetic_preset", "tiny", "--data.num_workers", "0",
        "--data.batch_size", str(batch_size), "--model.init_args.encoder.pretrained", str(weights),
        "--model.init_args.publish_to", "null", "--model.init_args.optim.schedule", "constant",
        "--trainer.max_steps", "3", "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(runs),
        "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu", *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = list(runs.glob("*/*/results.json"))
    return json.loads(path.read_text())


@pytest.mark.timeout(600)
def test_two_process_fit_ends_with_the_metrics_of_one(tiny_world, tiny_encoder, tmp_path):
    """A 2-process gloo fit stopped mid-epoch by max_steps runs its final validation on every rank (rank 0 used
    to skip it while the other rank waited) and, with half the per-rank batch, trains on the same global batches."""
    from fashion_bench.encoders import export_open_clip_checkpoint

    weights = export_open_clip_checkpoint(tiny_encoder, tmp_path / "w.pt")
    single = fit(tiny_world, tmp_path / "one", weights, 16)
    double = fit(tiny_world, tmp_path / "two", weights, 8, "--trainer.strategy", "ddp", "--trainer.devices", "2")
    assert single["global_step"] == double["global_step"] == 3
    for name, value in single["metrics"].items():
        assert double["metrics"][name] == pytest.approx(value, abs=1e-4), name
