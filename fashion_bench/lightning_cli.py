"""The LightningCLI behind ``fashion-bench fit | validate | test | predict``.

On top of LightningCLI it adds: OmegaConf interpolation in YAML, the run-directory layout
``<root>/<experiment>/<YYYYmmdd-HHMMSS>_seed<S>/`` (config.yaml, metrics.csv, checkpoints/, results.json), a
concrete seed always set and recorded (and passed to the data layer), ``--ckpt_path last|best`` resolved to the
newest run of the same experiment (so a killed run resumes in its own directory), the retrieval evaluator and
checkpointing on the protocol's primary metric (``val/primary``) wired in by default.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from fashion_bench.data.datamodule import FashionDataModule
from fashion_bench.methods.base import RetrievalMethod
from fashion_bench.retrieval.callback import RetrievalEvaluator
from fashion_bench.retrieval.results import now_iso

DEFAULT_RUNS_ROOT = "runs"
DEFAULT_SEED = 0


def experiment_name(argv: list[str]) -> str:
    """``--experiment`` if given, else the stem of the last ``--config`` under an ``experiment/`` folder, else of
    the first ``--config``."""
    configs: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--experiment" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--experiment="):
            return arg.split("=", 1)[1]
        if arg in ("--config", "-c") and i + 1 < len(argv):
            configs.append(argv[i + 1])
        elif arg.startswith("--config="):
            configs.append(arg.split("=", 1)[1])
    in_experiment = [c for c in configs if Path(c).parent.name == "experiment"]
    chosen = (in_experiment or configs or ["default"])[-1 if in_experiment else 0]
    return Path(chosen).stem


def latest_checkpoint(root: Path, experiment: str, which: str) -> Path | None:
    """The ``last.ckpt`` (or best ``best-*.ckpt``) of the newest run of ``experiment`` that has one."""
    pattern = "last.ckpt" if which == "last" else "best-*.ckpt"
    candidates = sorted((root / experiment).glob(f"*/checkpoints/{pattern}"), key=lambda p: (p.parent.parent.name, p.stat().st_mtime))
    return candidates[-1] if candidates else None


class FashionCLI(LightningCLI):
    def __init__(self, *args: Any, experiment: str, **kwargs: Any) -> None:
        self.experiment = experiment
        self.start_time = time.time()
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--experiment", type=str, default=self.experiment, help="experiment name (default: the experiment config's stem)")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/primary",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch}-{step}",
                "checkpoint.auto_insert_metric_name": False,
                "checkpoint.save_on_train_epoch_end": False,  # save where val/primary exists; keeps last.ckpt resumable
            }
        )
        parser.add_lightning_class_args(RetrievalEvaluator, "evaluator")
        parser.link_arguments("seed_everything", "data.seed")

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        seed = cfg.get("seed_everything")
        if seed is None or seed is True:  # `in (None, True)` would also match the seed 1
            cfg["seed_everything"] = DEFAULT_SEED
            cfg["data"]["seed"] = DEFAULT_SEED
        seed = int(cfg["seed_everything"])
        self.experiment = cfg.get("experiment") or self.experiment
        root = Path(cfg["trainer"].get("default_root_dir") or DEFAULT_RUNS_ROOT)
        run_dir = None
        ckpt = cfg.get("ckpt_path")
        if ckpt in ("last", "best"):
            found = latest_checkpoint(root, self.experiment, ckpt)
            if found is None:
                raise FileNotFoundError(f"--ckpt_path {ckpt}: no {ckpt} checkpoint under {root / self.experiment}/*/checkpoints/")
            cfg["ckpt_path"] = str(found)
            if self.subcommand == "fit":
                run_dir = found.parent.parent
        if run_dir is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            run_dir = root / self.experiment / f"{stamp}_seed{seed}"
            suffix = 1
            while run_dir.exists():
                suffix += 1
                run_dir = root / self.experiment / f"{stamp}-{suffix}_seed{seed}"
        self.run_dir = run_dir
        cfg["trainer"]["default_root_dir"] = str(run_dir)
        if cfg["trainer"].get("logger") in (None, True):
            cfg["trainer"]["logger"] = {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(run_dir), "name": "", "version": ""},
            }

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        method_name = getattr(self.model, "method_name", type(self.model).__name__)
        for callback in self.trainer.callbacks:
            if isinstance(callback, RetrievalEvaluator):
                callback.run_info = {
                    "experiment": self.experiment,
                    "method": method_name,
                    "seed": int(cfg["seed_everything"]),
                    "start_time": self.start_time,
                    "started_at": now_iso(),
                    "ckpt_path": cfg.get("ckpt_path"),
                }


    def after_fit(self) -> None:
        """results.json must describe the final weights: validate once more when training stopped (e.g. by
        ``max_steps`` mid-epoch) after the last validation."""
        evaluator = next((c for c in self.trainer.callbacks if isinstance(c, RetrievalEvaluator)), None)
        if evaluator is None or self.trainer.interrupted:
            return
        last = evaluator.last_payload
        if last is None or last.get("global_step") != self.trainer.global_step:
            self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False)


def run(argv: list[str]) -> int:
    FashionCLI(
        RetrievalMethod,
        FashionDataModule,
        subclass_mode_model=True,
        subclass_mode_data=False,
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_kwargs={"overwrite": True},
        seed_everything_default=DEFAULT_SEED,
        args=argv,
        experiment=experiment_name(argv),
        auto_configure_optimizers=False,
    )
    return 0
