"""``make demo``: the whole synthetic benchmark on the `small` world, then the report.

Steps run as separate ``fashion-bench`` processes (as a user would run them) and are skipped when their
results already exist, so an interrupted demo resumes where it stopped. On Linux each step is a forked child of
one process that imported torch, Lightning and open_clip once (``--no-fork``: a fresh interpreter per step);
the children share nothing else, and importing the stack costs ~4-5 s per process on the 2-core machine.
Independent steps run two at a time (``--jobs``), each with its share of the cores (``fashion_bench.lanes``);
a step waits for the steps it reads from (:func:`prerequisites`). Each step's output goes to
``<runs>/demo_logs/``. Order: generate the world, pretrain
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
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from fashion_bench.atomic import write_text_atomic
from fashion_bench.lanes import run_in_lanes

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


class ForkedStep:
    """A step running as a forked child of this process (Linux): the parent imported the stack but never ran a
    torch op, so the child starts with no threads to inherit and sets its own thread count."""

    def __init__(self, args: list[str], threads: int, log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:
            _run_child(args, threads, log)

    def poll(self) -> int | None:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        return None if pid == 0 else os.waitstatus_to_exitcode(status)


def _run_child(args: list[str], threads: int, log: Path) -> None:
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # also when sys.stdout was not fd 1 (a test's capture)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        import torch

        torch.set_num_threads(threads)
        if "faiss" in sys.modules:
            sys.modules["faiss"].omp_set_num_threads(threads)
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


def start_step(step: Step, runs: Path, threads: int, fork: bool) -> ForkedStep | subprocess.Popen:
    """Launch a step with ``threads`` threads, its output going to :func:`log_path`."""
    log = log_path(runs, step)
    if fork:
        return ForkedStep(step.cli_args(runs), threads, log)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with log.open("w") as out:
        return subprocess.Popen(step.command(runs), stdout=out, stderr=subprocess.STDOUT, env=env)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def log_path(runs: Path, step: Step) -> Path:
    return runs / "demo_logs" / f"{step.experiment}.{step.verb}.seed{step.seed}.log"


RUN_REFERENCE = re.compile(r"run:([\w.\-]+)/")  # a config's reference to an earlier stage (fashion_bench.stages)


def prerequisites(steps: list[Step]) -> list[set[int]]:
    """Per step, the steps that must finish first: the pretraining (its weights stand in for downloaded ones),
    the fit of the same experiment and seed for a test, and the fit of every earlier stage its config names
    (``run:<experiment>/...``, same seed)."""
    fit_of = {(s.experiment, s.seed): i for i, s in enumerate(steps) if s.verb == "fit"}
    pretraining = fit_of.get((PUBLISHES_SHARED_WEIGHTS, 0))
    needs: list[set[int]] = []
    for i, step in enumerate(steps):
        config = (EXPERIMENTS / f"{step.config}.yaml").read_text()
        names = [step.experiment] if step.verb != "fit" else []
        wanted = {fit_of.get((name, step.seed)) for name in [*names, *RUN_REFERENCE.findall(config)]}
        needs.append({j for j in wanted | {pretraining} if j is not None and j != i})
    return needs


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
    parser.add_argument("--jobs", type=int, default=min(2, available_cores()),
                        help="steps run at once, each with its share of the cores (default: 2, or 1 on one core)")
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
    done = {i for i, step in enumerate(steps) if finished(runs, step)}
    for i in sorted(done):
        print(f"skip (done): {steps[i].verb} {steps[i].experiment} seed {steps[i].seed}")
    if args.dry_run:
        for i, step in enumerate(steps):
            if i not in done:
                print("$ " + " ".join(step.command(runs)))
        return 0
    timings: dict[int, tuple[Step, dict[str, float]]] = {}
    bar = tqdm(total=len(steps) - len(done), desc="demo", unit="run")

    def start(i: int, threads: int):
        tqdm.write(f"$ {' '.join(steps[i].command(runs))}  [{threads} thread(s); log: {log_path(runs, steps[i])}]")
        return start_step(steps[i], runs, threads, fork)

    def on_finish(i: int, code: int, seconds: float) -> None:
        step = steps[i]
        bar.update()
        if code != 0:
            tail = log_path(runs, step).read_text(errors="replace").splitlines()[-30:]
            tqdm.write("\n".join(tail) + f"\nFAILED ({code}): {step.verb} {step.experiment} seed {step.seed}; "
                       f"whole output: {log_path(runs, step)}")
            return
        tqdm.write(f"done in {seconds:.0f} s: {step.verb} {step.experiment} seed {step.seed}")
        timings[i] = (step, step_timing(runs, step, seconds))

    code = run_in_lanes(prerequisites(steps), start, lanes=args.jobs, cores=available_cores(), done=done,
                        on_finish=on_finish)
    bar.close()
    if code != 0:
        return code
    if timings:
        table = timing_table([timings[i] for i in sorted(timings)])
        write_text_atomic(runs / "demo_timing.md", table)
        print(f"where the time went (seconds; also in {runs / 'demo_timing.md'}):\n{table}")
    report = subprocess.run([sys.executable, "-m", "fashion_bench.cli", "report", "--runs", str(runs), "--out", args.report_out,
                             "--check", "configs/report/expected.yaml", "--claims", "configs/report/claims.yaml"])
    print(f"demo finished in {(time.perf_counter() - started) / 60:.1f} min; leaderboard: {args.report_out}/leaderboard.md")
    return report.returncode


if __name__ == "__main__":
    sys.exit(main())
