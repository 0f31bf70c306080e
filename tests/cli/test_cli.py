"""CLI smoke tests: every experiment config is instantiated and run end to end on the tiny synthetic world."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fashion_bench.retrieval.results import missing_fields

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT_CONFIGS = sorted((REPO / "configs" / "experiment").glob("*.yaml"))
SYNTHETIC_CONFIGS = [p for p in EXPERIMENT_CONFIGS if "__synth-" in p.name]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory, tiny_encoder):
    """Stands in for the synthetic pretrained CLIP that the configs point at (a real fit writes it in the demo)."""
    from fashion_bench.encoders import export_open_clip_checkpoint

    return export_open_clip_checkpoint(tiny_encoder, tmp_path_factory.mktemp("weights") / "synth-clip-tiny.pt")


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """Relative paths in configs (e.g. publish_to: weights/...) must land in the test's folder, not the checkout."""
    monkeypatch.chdir(tmp_path)


def tiny_args(tiny_world: Path, runs: Path, weights: Path | None = None) -> list[str]:
    args = [
        "--data.root", str(tiny_world.parent), "--data.synthetic_preset", "tiny", "--data.num_workers", "0",
        "--data.batch_size", "16", "--data.pk_identities", "4", "--data.pk_instances", "2",
        "--trainer.default_root_dir", str(runs), "--trainer.enable_progress_bar", "false",
    ]
    if weights is not None:
        args += ["--model.init_args.encoder.pretrained", str(weights)]
    return args


def run_cli(argv: list[str]) -> None:
    from fashion_bench.lightning_cli import run

    assert run(argv) == 0


def results_of(runs: Path, experiment: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((runs / experiment).glob("*/results.json"))]


def test_help_is_light():
    code = "import sys; from fashion_bench.cli import main; main(['--help']); print('torch' in sys.modules, 'lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "fashion-bench <command>" in out and out.strip().endswith("False False")


def earlier_stage(config: Path) -> Path | None:
    """The config whose fit publishes what a later stage's config loads: ``<method>-stage1__<dataset>.yaml`` beside
    it, or the stage its ``run:<experiment>/...`` reference names (e.g. progressive's stage 2 on another dataset)."""
    method, dataset = config.stem.split("__", 1)
    stage1 = config.with_name(f"{method}-stage1__{dataset}.yaml")
    if stage1.exists():
        return stage1
    named = re.search(r":\s+run:([\w.-]+__[\w.-]+)/", config.read_text())  # a `key: run:...` value
    return config.with_name(f"{named.group(1)}.yaml") if named else None


@pytest.mark.parametrize("config", SYNTHETIC_CONFIGS, ids=lambda p: p.stem)
def test_every_synthetic_config_fits_and_tests(config, tiny_world, tiny_weights, tmp_path):
    """Fit, then test with ``--ckpt_path last`` and with an explicit checkpoint file after the earlier stage's run
    (whose published artefact this stage loaded) is deleted: a stage's own checkpoint suffices."""
    import shutil

    runs = tmp_path / "runs"
    steps = ["--trainer.max_steps", "2", "--trainer.max_epochs", "1"]
    stage1 = earlier_stage(config)
    if stage1 is not None:  # publishes into the same runs root, where the config's run: reference looks
        run_cli(["fit", "--config", str(stage1), *tiny_args(tiny_world, runs, tiny_weights), *steps])
    args = ["--config", str(config), *tiny_args(tiny_world, runs, tiny_weights), *steps]
    run_cli(["fit", *args])
    run_cli(["test", *args, "--ckpt_path", "last"])
    (last,) = (runs / config.stem).glob("*/checkpoints/last.ckpt")
    if stage1 is not None:
        shutil.rmtree(runs / stage1.stem)
    run_cli(["test", "--config", str(config), *tiny_args(tiny_world, tmp_path / "by-file"), "--ckpt_path", str(last)])
    (by_file,) = results_of(tmp_path / "by-file", config.stem)
    (tested,) = [p for p in results_of(runs, config.stem) if p["split"] == "test"]
    assert by_file["metrics"] == pytest.approx(tested["metrics"], abs=1e-6)
    payloads = results_of(runs, config.stem)
    assert {p["split"] for p in payloads} == {"val", "test"}
    for payload in payloads:
        assert missing_fields(payload) == []
        assert payload["experiment"] == config.stem and payload["seed"] == 0
        assert payload["num_valid_queries"] > 0
        assert all(0.0 <= v <= 1.0 for v in payload["metrics"].values())
        assert payload["metrics"]["R@1"] <= payload["metrics"]["R@5"] <= payload["metrics"]["R@10"]
        timing = payload["timing"]  # where the run's time went
        assert timing["startup_s"] > 0 and timing["evaluation_s"] > 0
        assert (timing["train_step_s"] > 0) == (payload["stage"] == "val")
    run_dir = next((runs / config.stem).glob("*/checkpoints/last.ckpt")).parent.parent
    assert (run_dir / "config.yaml").exists() and (run_dir / "metrics.csv").exists()


def test_resume_from_last_matches_uninterrupted_run(tiny_world, tiny_weights, tmp_path):
    """Stop after epoch 0 (tiny: 132 images / batch 16 = 8 steps; Lightning marks a run stopped by max_steps as
    finished, so the interruption is made by max_epochs), resume with --ckpt_path last up to max_steps 12, in
    the middle of epoch 1. The schedule is constant because a cosine horizon follows
    max_steps, which a real kill would not change. Seed 1 also checks that an explicit seed 1 is kept (not read
    as ``True``, the "pick a seed" flag)."""
    config = str(REPO / "configs/experiment/clip__synth-t2i.yaml")
    common = ["--config", config, "--trainer.max_epochs", "2", "--model.init_args.optim.warmup_steps", "0", "--model.init_args.optim.schedule", "constant",
              "--seed_everything", "1"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run_cli(["fit", *common, *tiny_args(tiny_world, whole, tiny_weights), "--trainer.max_steps", "12"])
    run_cli(["fit", *common, *tiny_args(tiny_world, parts, tiny_weights), "--trainer.max_epochs", "1"])
    run_cli(["fit", *common, *tiny_args(tiny_world, parts, tiny_weights), "--trainer.max_steps", "12", "--ckpt_path", "last"])
    (a,) = results_of(whole, "clip__synth-t2i")
    (b,) = results_of(parts, "clip__synth-t2i")  # the resumed run wrote into the same run directory
    assert a["global_step"] == b["global_step"] == 12
    assert a["seed"] == b["seed"] == 1 and next((whole / "clip__synth-t2i").iterdir()).name.endswith("_seed1")
    for name, value in a["metrics"].items():
        assert b["metrics"][name] == pytest.approx(value, abs=1e-6), name


def test_unknown_config_key_is_named(tiny_world, tmp_path):
    config = str(REPO / "configs/experiment/clip__synth-t2i.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "fashion_bench.cli", "fit", "--config", config, "--data.not_a_key", "3",
         *tiny_args(tiny_world, tmp_path)],
        capture_output=True, text=True,
    )
    assert proc.returncode != 0
    assert "not_a_key" in proc.stderr


def test_ckpt_path_last_without_runs_says_where_it_looked(tiny_world, tmp_path):
    config = str(REPO / "configs/experiment/clip__synth-t2i.yaml")
    with pytest.raises(FileNotFoundError, match="no last checkpoint under"):
        run_cli(["fit", "--config", config, *tiny_args(tiny_world, tmp_path), "--ckpt_path", "last"])


def test_experiment_name_rules():
    from fashion_bench.lightning_cli import experiment_name

    assert experiment_name(["fit", "--config", "configs/experiment/clip__synth-id.yaml", "--config", "x.yaml"]) == "clip__synth-id"
    assert experiment_name(["fit", "--config", "a/b.yaml", "--experiment", "mine"]) == "mine"


def test_seeds_of_a_later_stage_are_one_configuration(tiny_world, tiny_weights, tmp_path):
    """Each seed's stage 2 reads its own seed's stage-1 file, yet the seeds run one configuration: the config
    hash counts the `run:` reference as written, not the file it resolved to."""
    runs = tmp_path / "runs"
    steps = ["--trainer.limit_train_batches", "2", "--trainer.max_epochs", "1"]
    for seed in ("0", "1"):
        for config, weights in (("clip4cir-stage1__synth-cir", tiny_weights), ("clip4cir__synth-cir", None)):
            run_cli(["fit", "--config", str(REPO / "configs/experiment" / f"{config}.yaml"),
                     *tiny_args(tiny_world, runs, weights), *steps, "--seed_everything", seed])
        run_cli(["test", "--config", str(REPO / "configs/experiment/clip4cir__synth-cir.yaml"),
                 *tiny_args(tiny_world, runs), "--ckpt_path", "best", "--seed_everything", seed])  # args from the ckpt
    payloads = results_of(runs, "clip4cir__synth-cir")
    for split in ("val", "test"):
        of_split = [p for p in payloads if p["split"] == split]
        assert sorted(p["seed"] for p in of_split) == [0, 1]
        assert len({p["config_hash"] for p in of_split}) == 1, split
        inputs = [p["stage_inputs"] for p in of_split]
        assert inputs[0] != inputs[1]  # each seed did read its own stage-1 file
