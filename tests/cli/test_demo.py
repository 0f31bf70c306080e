"""``make demo`` orchestration: every step names an existing config, stages run in order, finished runs are skipped."""

from __future__ import annotations

import json
from pathlib import Path

from fashion_bench.demo import EXPERIMENTS, Step, demo_steps, finished, main

REPO = Path(__file__).resolve().parents[2]


def test_every_step_uses_an_existing_experiment_config():
    for step in demo_steps():
        assert (REPO / EXPERIMENTS / f"{step.config}.yaml").exists(), step


def test_pretraining_runs_first_and_stages_in_order():
    order = [f"{s.verb} {s.experiment}" for s in demo_steps()]
    assert order[0] == "fit clip__synth-t2i"
    assert order.index("fit clip4cir-stage1__synth-cir") < order.index("fit clip4cir__synth-cir")
    assert order.index("fit multiprompt-stage1__synth-id") < order.index("fit multiprompt__synth-id")
    fitted = {s.experiment for s in demo_steps() if s.verb == "fit"}
    assert fitted == {s.experiment for s in demo_steps() if s.verb == "test" and "zeroshot" not in s.experiment}


def test_finished_reads_the_stage_and_split_of_results(tmp_path):
    step = Step("clip__synth-id", "test", "clip__synth-id")
    run = tmp_path / "clip__synth-id" / "20260101-000000_seed0"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"split": "val", "stage": "val"}))
    assert not finished(tmp_path, step)
    (run / "results.json").write_text("{truncated")
    assert not finished(tmp_path, step)
    (run / "results.json").write_text(json.dumps({"split": "test", "stage": "test"}))
    assert finished(tmp_path, step)


def test_dry_run_prints_every_command(tmp_path, capsys):
    assert main(["--runs", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("$ ") == len(demo_steps())
    assert "fashion_bench.cli fit --config configs/experiment/clip__synth-t2i.yaml" in out
