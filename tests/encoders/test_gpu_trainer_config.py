"""configs/trainer/gpu.yaml parses into the Trainer section after an experiment config (no GPU needed: the
Trainer is never instantiated with --print_config)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_gpu_trainer_config_replaces_the_cpu_one(capsys):
    from fashion_bench.lightning_cli import run

    experiment = CONFIGS / "experiment" / "clip__fashioniq.yaml"
    argv = ["fit", "--config", str(experiment), "--trainer", str(CONFIGS / "trainer" / "gpu.yaml"), "--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        run(argv)
    assert exit_info.value.code in (0, None)
    trainer = yaml.safe_load(capsys.readouterr().out)["trainer"]
    assert (trainer["accelerator"], trainer["devices"], trainer["precision"]) == ("gpu", 1, "bf16-mixed")
    assert trainer["max_epochs"] == yaml.safe_load((CONFIGS / "trainer" / "gpu.yaml").read_text())["max_epochs"]
