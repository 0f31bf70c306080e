"""``make demo``: the whole synthetic benchmark on the `small` world, then the report.

Steps run as separate ``fashion-bench`` processes (as a user would run them) and are skipped when their
results already exist, so an interrupted demo resumes where it stopped. Order: generate the world, pretrain
the tiny CLIP on synth-t2i (its weights stand in for pretrained CLIP weights), then every experiment config on
its synthetic dataset (zero-shot baselines, fine-tunes, method stages), each tested on the test split, then
``fashion-bench report``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

EXPERIMENTS = Path("configs/experiment")


@dataclass(frozen=True)
class Step:
    """One ``fashion-bench`` invocation; ``experiment`` names the results it produces."""

    experiment: str
    verb: str
    config: str
    args: tuple[str, ...] = field(default_factory=tuple)
    split: str = "test"

    def command(self, runs: Path) -> list[str]:
        return [
            sys.executable, "-m", "fashion_bench.cli", self.verb, "--config", str(EXPERIMENTS / f"{self.config}.yaml"),
            "--experiment", self.experiment, "--trainer.default_root_dir", str(runs), *self.args,
        ]


SAVE_RANKINGS = ("--evaluator.save_rankings", "10")  # top-10 lists for the report's retrieval galleries


def fit_and_test(config: str, *args: str) -> list[Step]:
    return [
        Step(config, "fit", config, args, split="val"),
        Step(config, "test", config, ("--ckpt_path", "best", *SAVE_RANKINGS, *args)),
    ]


def zero_shot(config: str) -> Step:
    method, dataset = config.split("__")
    return Step(f"{method}-zeroshot__{dataset}", "test", config, SAVE_RANKINGS)


def demo_steps() -> list[Step]:
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
    for config in ("progressive__synth-cir", "progressive-nostage2__synth-cir", "progressive-fixedweights__synth-cir"):
        steps += fit_and_test(config, *one_epoch)
    return steps


def finished(runs: Path, step: Step) -> bool:
    for path in (runs / step.experiment).glob("*/results.json"):
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if payload.get("split") == step.split and payload.get("stage") == ("val" if step.verb == "fit" else step.verb):
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fashion_bench.demo", description=__doc__)
    parser.add_argument("--runs", default="runs", help="runs folder (default: runs)")
    parser.add_argument("--report-out", default="docs", help="where the report goes (default: docs)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    runs = Path(args.runs)
    steps = demo_steps()
    started = time.perf_counter()
    if not args.dry_run:
        from fashion_bench.data.adapters.canonical import default_synthetic_root
        from fashion_bench.data.synthetic import ensure_world

        ensure_world(Path(default_synthetic_root()) / "small-seed0", preset="small", seed=0)
    bar = tqdm(steps, desc="demo", unit="run")
    for step in bar:
        bar.set_postfix_str(f"{step.verb} {step.experiment}")
        if finished(runs, step):
            tqdm.write(f"skip (done): {step.verb} {step.experiment}")
            continue
        command = step.command(runs)
        tqdm.write("$ " + " ".join(command))
        if args.dry_run:
            continue
        result = subprocess.run(command)
        if result.returncode != 0:
            tqdm.write(f"FAILED ({result.returncode}): {step.verb} {step.experiment}")
            return result.returncode
    if args.dry_run:
        return 0
    report = subprocess.run([sys.executable, "-m", "fashion_bench.cli", "report", "--runs", str(runs), "--out", args.report_out,
                             "--check", "configs/report/expected.yaml", "--claims", "configs/report/claims.yaml"])
    print(f"demo finished in {(time.perf_counter() - started) / 60:.1f} min; leaderboard: {args.report_out}/leaderboard.md")
    return report.returncode


if __name__ == "__main__":
    sys.exit(main())
