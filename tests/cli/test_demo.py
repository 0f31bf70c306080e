"""``make demo`` orchestration: every step names an existing config, stages run in order, finished runs are skipped."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from fashion_bench.demo import (
    EXPERIMENTS, ForkedStep, Step, demo_steps, finished, log_path, main, prerequisites, start_step, timing_table,
)

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


def wait(child: ForkedStep) -> int:
    while (code := child.poll()) is None:
        time.sleep(0.05)
    return code


def test_a_forked_step_returns_the_command_exit_code_and_logs_its_output(tmp_path):
    assert wait(ForkedStep(["--help"], 1, tmp_path / "help.log")) == 0
    assert "fashion-bench <command>" in (tmp_path / "help.log").read_text()
    assert wait(ForkedStep(["no-such-command"], 1, tmp_path / "logs" / "bad.log")) == 2
    assert "unknown command 'no-such-command'" in (tmp_path / "logs" / "bad.log").read_text()


def test_a_step_in_a_fresh_interpreter_gets_its_threads_and_its_log(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.chdir(REPO)
    launched = []
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        launched.append(kwargs["env"])
        return real_popen(*args, **kwargs)

    monkeypatch.setattr("fashion_bench.demo.subprocess.Popen", recording_popen)
    step = Step("clip__synth-id", "--help", "clip__synth-id")  # the CLI prints its help and exits 0
    child = start_step(step, tmp_path, threads=3, fork=False)
    assert launched[0]["OMP_NUM_THREADS"] == "3" and launched[0]["MKL_NUM_THREADS"] == "3"
    assert child.wait(timeout=120) == 0
    assert child.args[:3] == [sys.executable, "-m", "fashion_bench.cli"]
    assert "fashion-bench <command>" in log_path(tmp_path, step).read_text()


def test_each_step_waits_for_the_steps_it_reads_from():
    steps = demo_steps((0, 1))
    needs = prerequisites(steps)
    index = {(s.verb, s.experiment, s.seed): i for i, s in enumerate(steps)}

    def after(verb: str, experiment: str, seed: int = 0) -> set[tuple[str, str, int]]:
        return {(steps[j].verb, steps[j].experiment, steps[j].seed) for j in needs[index[verb, experiment, seed]]}

    pretraining = ("fit", "clip__synth-t2i", 0)
    assert needs[index[pretraining]] == set()
    assert after("test", "clip-zeroshot__synth-cir") == {pretraining}
    assert after("test", "clip__synth-cir", 1) == {pretraining, ("fit", "clip__synth-cir", 1)}
    assert after("fit", "clip4cir__synth-cir", 1) == {pretraining, ("fit", "clip4cir-stage1__synth-cir", 1)}
    assert after("fit", "multiprompt__synth-id") == {pretraining, ("fit", "multiprompt-stage1__synth-id", 0)}
    assert after("fit", "progressive__synth-cir") == {pretraining, ("fit", "progressive-stage2__synth-t2i", 0)}
    assert after("fit", "progressive-nostage2__synth-cir") == {pretraining}
    assert all(j < i for i, deps in enumerate(needs) for j in deps)  # the plan's order is one valid order


def test_timing_table_sums_the_phases():
    step = Step("clip__synth-id", "fit", "clip__synth-id", split="val")
    table = timing_table([(step, {"wall_s": 10.0, "startup_s": 4.0, "train_step_s": 5.0, "evaluation_s": 1.0}),
                          (step, {"wall_s": 2.0, "startup_s": 2.0})])
    assert "| fit clip__synth-id (seed 0) | 10.0 | 4.0 | 0.0 | 5.0 | 1.0 | 0.0 |" in table
    assert table.rstrip().endswith("| **total** | **12** | **6** | **0** | **5** | **1** | **0** |")
