"""``make demo`` orchestration: every step names an existing config, stages run in order, finished runs are skipped."""

from __future__ import annotations

import json
from pathlib import Path

from fashion_bench.demo import EXPERIMENTS, Step, demo_steps, finished, main, run_in_fork, timing_table

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


def test_further_seeds_repeat_every_step_but_the_pretraining():
    steps = demo_steps((0, 1))
    seed0 = [s for s in steps if s.seed == 0]
    seed1 = [s for s in steps if s.seed == 1]
    assert seed0 == demo_steps()
    assert [s.experiment for s in seed1] == [s.experiment for s in seed0 if s.config != "clip__synth-t2i"]
    assert "--seed_everything 1" in " ".join(seed1[0].command(Path("runs")))
    assert "--seed_everything" not in " ".join(seed0[0].command(Path("runs")))


def test_finished_only_counts_runs_of_the_step_seed(tmp_path):
    run = tmp_path / "clip__synth-id" / "20260101-000000_seed0"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"split": "test", "stage": "test"}))
    assert finished(tmp_path, Step("clip__synth-id", "test", "clip__synth-id"))
    assert not finished(tmp_path, Step("clip__synth-id", "test", "clip__synth-id", seed=1))


def test_a_forked_step_returns_the_command_exit_code(capfd):
    assert run_in_fork(["--help"]) == 0
    assert run_in_fork(["no-such-command"]) == 2
    assert "unknown command 'no-such-command'" in capfd.readouterr().err


def test_timing_table_sums_the_phases():
    step = Step("clip__synth-id", "fit", "clip__synth-id", split="val")
    table = timing_table([(step, {"wall_s": 10.0, "startup_s": 4.0, "train_step_s": 5.0, "evaluation_s": 1.0}),
                          (step, {"wall_s": 2.0, "startup_s": 2.0})])
    assert "| fit clip__synth-id (seed 0) | 10.0 | 4.0 | 0.0 | 5.0 | 1.0 | 0.0 |" in table
    assert table.rstrip().endswith("| **total** | **12** | **6** | **0** | **5** | **1** | **0** |")
