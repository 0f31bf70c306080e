"""``make demo``: the whole synthetic benchmark on the `small` world, then the report.

Steps run as separate ``fashion-bench`` processes (as a user would run them) and are skipped when their
results already exist, so an interrupted demo resumes where it stopped. On Linux each step is a forked child of
one process that imported torch, Lightning and open_clip once (``--no-fork``: a fresh interpreter per step);
the children share nothing else, and importing the stack costs ~4-5 s per process on the 2-core machine. Order: generate the world, pretrain
the tiny CLIP on synth-t2i (its weights stand in for pretrained CLIP weights), then every experiment config on
its synthetic dataset (zero-shot baselines, fine-tunes, method stages), each tested on the test split, then
``fashion-bench report``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from fashion_bench.atomic import write_text_atomic

EXPERIMENTS = Path("configs/experiment")


@dataclass(frozen=True)
class Step:
    """One ``fashion-bench`` invocation; ``experiment`` names the results it produces."""

    experiment: str
    verb: str
    config: str
    args: tuple[str, ...] = field(default_factory=tuple)
    split: str = "test"
    seed: int = 0

    def cli_args(self, runs: Path) -> list[str]:
        seed = ("--seed_everything", str(self.seed)) if self.seed else ()
        return [
            self.verb, "--config", str(EXPERIMENTS / f"{self.config}.yaml"), "--experiment", self.experiment,
            "--trainer.default_root_dir", str(runs), *seed, *self.args,
        ]

    def command(self, runs: Path) -> list[str]:
        return [sys.executable, "-m", "fashion_bench.cli", *self.cli_args(runs)]


SAVE_RANKINGS = ("--evaluator.save_rankings", "10")  # top-10 lists for the report's retrieval galleries


def fit_and_test(config: str, *args: str) -> list[Step]:
    return [
        Step(config, "fit", config, args, split="val"),
        Step(config, "test", config, ("--ckpt_path", "best", *SAVE_RANKINGS, *args)),
    ]


def zero_shot(config: str) -> Step:
    method, dataset = config.split("__")
    return Step(f"{method}-zeroshot__{dataset}", "test", config, SAVE_RANKINGS)


PUBLISHES_SHARED_WEIGHTS = "clip__synth-t2i"  # its fit writes weights/synth-clip-tiny.pt, which every run reads


def demo_steps(seeds: tuple[int, ...] = (0,)) -> list[Step]:
    """Seed 0 runs everything; every further seed repeats every step but the synthetic pretraining, whose
    published weights stand in for downloaded ones (a second seed would overwrite them under the other runs)."""
    steps = _seed0_steps()
    for seed in seeds:
        if seed != 0:
            steps += [replace(step, seed=seed) for step in _seed0_steps() if step.config != PUBLISHES_SHARED_WEIGHTS]
    return steps


def _seed0_steps() -> list[Step]:
    steps = fit_and_test("clip__synth-t2i")
    for dataset in ("synth-id", "synth-cir"):
        steps.append(zero_shot(f"clip__{dataset}"))
        steps += fit_and_test(f"clip__{dataset}")
    two_epochs = ("--trainer.max_epochs", "2")  # the schedules measured in docs/methods/
    steps += fit_and_test("clip4cir-stage1__synth-cir") + fit_and_test("clip4cir__synth-cir", *two_epochs)
    steps += fit_and_test("reid-baseline__synth-id", *two_epochs)
    steps += fit_and_test("multiprompt-stage1__synth-id", "--trainer.max_epochs", "5")
    steps += fit_and_test("multiprompt__synth-id", *two_epochs)
    one_epoch = ("--trainer.max_epochs", "1")  # the three newer methods at a short schedule, same as their baselines
    steps += fit_and_test("enclip__synth-t2i", *one_epoch)
    steps += [zero_shot("clip__synth-t2i-lowq")] + fit_and_test("clip__synth-t2i-lowq", *one_epoch)
    steps += fit_and_test("enclip__synth-t2i-lowq", *one_epoch)
    steps += fit_and_test("clip-finetune__synth-t2i", *one_epoch) + fit_and_test("fashionklip__synth-t2i", *one_epoch)
    steps += fit_and_test("progressive-stage2__synth-t2i", *one_epoch)
    for config in ("progressive__synth-cir", "progressive-nostage2__synth-cir", "progressive-fixedweights__synth-cir",
                   "clip-finetune__synth-cir"):
        steps += fit_and_test(config, *one_epoch)
    return steps


def finished(runs: Path, step: Step) -> bool:
    for path in (runs / step.experiment).glob(f"*_seed{step.seed}/results.json"):
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if payload.get("split") == step.split and payload.get("stage") == ("val" if step.verb == "fit" else step.verb):
            return True
    return False


def run_in_fork(args: list[str]) -> int:
    """``fashion-bench <args>`` in a forked child: the parent imported the stack but never ran a torch op, so
    the child starts with no threads to inherit."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            from fashion_bench.cli import main as cli_main

            code = cli_main(args)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def import_stack() -> None:
    """What every step imports (torch, Lightning, open_clip, the methods), once, in the parent."""
    from fashion_bench import methods

    importlib.import_module("fashion_bench.lightning_cli")
    for module in pkgutil.iter_modules(methods.__path__):
        importlib.import_module(f"fashion_bench.methods.{module.name}")


def step_timing(runs: Path, step: Step, wall_s: float) -> dict[str, float]:
    """The phases of the run a step just wrote (its results.json ``timing``), its wall time seen from here."""
    newest = max((runs / step.experiment).glob(f"*_seed{step.seed}/results.json"), key=lambda p: p.stat().st_mtime, default=None)
    timing = json.loads(newest.read_text()).get("timing", {}) if newest is not None else {}
    return {"wall_s": round(wall_s, 3), **timing}


def timing_table(rows: list[tuple[Step, dict[str, float]]]) -> str:
    """Markdown: seconds per phase for every step that ran, and the totals."""
    phases = ("wall_s", "startup_s", "data_wait_s", "train_step_s", "evaluation_s", "other_s")
    lines = ["| step | " + " | ".join(p.removesuffix("_s").replace("_", " ") for p in phases) + " |",
             "|:---|" + "---:|" * len(phases)]
    totals = dict.fromkeys(phases, 0.0)
    for step, timing in rows:
        cells = [f"{timing.get(p, 0.0):.1f}" for p in phases]
        lines.append(f"| {step.verb} {step.experiment} (seed {step.seed}) | " + " | ".join(cells) + " |")
        for p in phases:
            totals[p] += timing.get(p, 0.0)
    lines.append("| **total** | " + " | ".join(f"**{totals[p]:.0f}**" for p in phases) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fashion_bench.demo", description=__doc__)
    parser.add_argument("--runs", default="runs", help="runs folder (default: runs)")
    parser.add_argument("--report-out", default="docs", help="where the report goes (default: docs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds to run (default: 0); e.g. --seeds 0 1 2 repeats every step but the pretraining")
    parser.add_argument("--no-fork", action="store_true", help="start a fresh interpreter for every step")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    runs = Path(args.runs)
    steps = demo_steps(tuple(args.seeds))
    started = time.perf_counter()
    fork = hasattr(os, "fork") and sys.platform.startswith("linux") and not args.no_fork
    if not args.dry_run:
        from fashion_bench.data.adapters.canonical import default_synthetic_root
        from fashion_bench.data.synthetic import ensure_world

        ensure_world(Path(default_synthetic_root()) / "small-seed0", preset="small", seed=0)
        if fork:
            import_stack()
    timings: list[tuple[Step, dict[str, float]]] = []
    bar = tqdm(steps, desc="demo", unit="run")
    for step in bar:
        bar.set_postfix_str(f"{step.verb} {step.experiment} seed {step.seed}")
        if finished(runs, step):
            tqdm.write(f"skip (done): {step.verb} {step.experiment} seed {step.seed}")
            continue
        tqdm.write("$ " + " ".join(step.command(runs)))
        if args.dry_run:
            continue
        step_started = time.perf_counter()
        code = run_in_fork(step.cli_args(runs)) if fork else subprocess.run(step.command(runs)).returncode
        if code != 0:
            tqdm.write(f"FAILED ({code}): {step.verb} {step.experiment} seed {step.seed}")
            return code
        timings.append((step, step_timing(runs, step, time.perf_counter() - step_started)))
    if args.dry_run:
        return 0
    if timings:
        table = timing_table(timings)
        write_text_atomic(runs / "demo_timing.md", table)
        print(f"where the time went (seconds; also in {runs / 'demo_timing.md'}):\n{table}")
    report = subprocess.run([sys.executable, "-m", "fashion_bench.cli", "report", "--runs", str(runs), "--out", args.report_out,
                             "--check", "configs/report/expected.yaml", "--claims", "configs/report/claims.yaml"])
    print(f"demo finished in {(time.perf_counter() - started) / 60:.1f} min; leaderboard: {args.report_out}/leaderboard.md")
    return report.returncode


if __name__ == "__main__":
    sys.exit(main())
