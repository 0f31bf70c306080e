"""The LightningCLI behind ``fashion-bench fit | validate | test | predict``.

On top of LightningCLI it adds: OmegaConf interpolation in YAML, the run-directory layout
``<root>/<experiment>/<YYYYmmdd-HHMMSS>_seed<S>/`` (config.yaml, metrics.csv, checkpoints/, results.json), a
concrete seed always set and recorded (and passed to the data layer), ``--ckpt_path last|best`` resolved to the
newest run of the same experiment and seed (so a killed run resumes in its own directory), ``run:`` artefact
references resolved (``fashion_bench.stages``), the retrieval evaluator, checkpointing on the protocol's primary
metric (``val/primary``), a ``last.ckpt`` every N training steps and the publication of a finished stage wired in
by default.
"""

from __future__ import annotations

import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from fashion_bench.data.datamodule import FashionDataModule
from fashion_bench.methods.base import RetrievalMethod
from fashion_bench.provenance import config_hash
from fashion_bench.retrieval.callback import RetrievalEvaluator
from fashion_bench.timing import PhaseTimer
from fashion_bench.retrieval.results import now_iso
from fashion_bench.stages import StagePublisher, as_reference, newest_run, resolve_artefact, restoring_weights, run_seed
from fashion_bench.user_errors import note_run_dir, release

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


def latest_checkpoint(root: Path, experiment: str, which: str, seed: int | None = None) -> Path | None:
    """The ``last.ckpt`` (or best ``best-*.ckpt``) of the newest run of ``experiment`` (with ``seed``) that has one."""
    pattern = "last.ckpt" if which == "last" else "best-*.ckpt"
    run = newest_run(root, experiment, seed, f"checkpoints/{pattern}")
    if run is None:
        return None
    return sorted((run / "checkpoints").glob(pattern), key=lambda p: p.stat().st_mtime)[-1]


class PeriodicLastCheckpoint(pl.Callback):
    """Writes ``checkpoints/last.ckpt`` every ``every_n_steps`` training steps (0: only where ModelCheckpoint
    does), so that a run killed mid-epoch resumes with ``--ckpt_path last`` close to where it stopped."""

    def __init__(self, every_n_steps: int = 200) -> None:
        if every_n_steps < 0:
            raise ValueError(f"last_checkpoint.every_n_steps must be >= 0, got {every_n_steps}")
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            trainer.save_checkpoint(Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt")


class ReleaseStderr(pl.Callback):
    """Once the data is set up (its files read) the run has started: stderr is given back
    (``fashion_bench.user_errors``), so progress bars and logs show as they come."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        release()


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
        parser.add_lightning_class_args(PeriodicLastCheckpoint, "last_checkpoint")
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
        self.checkpoint_seed = None
        if ckpt in ("last", "best"):
            found = latest_checkpoint(root, self.experiment, ckpt, seed)
            if found is None:
                raise FileNotFoundError(
                    f"--ckpt_path {ckpt}: no {ckpt} checkpoint under {root / self.experiment}/*_seed{seed}/checkpoints/ "
                    f"(runs of other seeds are not used; pass --seed_everything or a checkpoint file)"
                )
            cfg["ckpt_path"] = str(found)
            self._parse_ckpt_path()  # the checkpoint's constructor arguments, as for an explicit file
            cfg = self.config[self.subcommand]
            if self.subcommand == "fit":
                run_dir = found.parent.parent
        if cfg.get("ckpt_path"):
            self.checkpoint_seed = run_seed(Path(cfg["ckpt_path"]).parent.parent)
        self.restoring = self.subcommand in ("validate", "test", "predict") and bool(cfg.get("ckpt_path"))
        for key, value in list(cfg["model"].items()):
            if isinstance(value, str):
                default = "encoder.pt" if key.endswith("pretrained") else "model.ckpt"
                try:
                    cfg["model"][key] = resolve_artefact(value, root, seed, default)
                except FileNotFoundError:
                    if not self.restoring:  # restored weights do not need the earlier stage's files
                        raise
        if run_dir is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            run_dir = root / self.experiment / f"{stamp}_seed{seed}"
            suffix = 1
            while run_dir.exists():
                suffix += 1
                run_dir = root / self.experiment / f"{stamp}-{suffix}_seed{seed}"
        self.run_dir = run_dir
        note_run_dir(run_dir)
        cfg["trainer"]["default_root_dir"] = str(run_dir)
        if cfg["trainer"].get("logger") in (None, True):
            cfg["trainer"]["logger"] = {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(run_dir), "name": "", "version": ""},
            }

    def instantiate_classes(self) -> None:
        """Methods built for validate / test / predict with a checkpoint may miss an earlier stage's files."""
        with restoring_weights(getattr(self, "restoring", False)):
            super().instantiate_classes()

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        method_name = getattr(self.model, "method_name", type(self.model).__name__)
        if self.subcommand == "fit":
            self.trainer.callbacks.append(StagePublisher())
        self.trainer.callbacks.append(ReleaseStderr())
        self.trainer.callbacks.append(PhaseTimer())  # results.json `timing`: where the run's time went
        seed = int(cfg["seed_everything"]) if self.checkpoint_seed is None else self.checkpoint_seed
        for callback in self.trainer.callbacks:
            if isinstance(callback, RetrievalEvaluator):
                callback.run_info = {
                    "experiment": self.experiment,
                    "method": method_name,
                    "seed": seed,
                    "config_hash": config_hash(self._as_written(cfg)),
                    "start_time": self.start_time,
                    "started_at": now_iso(),
                    "ckpt_path": cfg.get("ckpt_path"),
                }

    @staticmethod
    def _as_written(cfg: Any) -> dict[str, Any]:
        """The resolved config with each earlier stage's file as its ``run:`` reference (also when it came from a
        checkpoint's arguments, as for ``--ckpt_path best``): a later stage's seeds read different files (each
        seed's own earlier stage) yet run one configuration."""
        plain = _plain(cfg)
        for key, value in cfg["model"].items():
            if isinstance(value, str) and as_reference(value) != value:
                _with_value(plain["model"], key, as_reference(value))
        return plain

    def after_fit(self) -> None:
        """results.json must describe the final weights: validate once more when training stopped (e.g. by
        ``max_steps`` mid-epoch) after the last validation. Every rank decides alike (DDP would hang otherwise)."""
        evaluator = next((c for c in self.trainer.callbacks if isinstance(c, RetrievalEvaluator)), None)
        if evaluator is None or self.trainer.interrupted:
            return
        if evaluator.last_evaluated_step != self.trainer.global_step:
            self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False)


def _with_value(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for name in parents:
        tree = tree[name]
    tree[leaf] = value


def _plain(node: Any) -> Any:
    """A jsonargparse Namespace tree as plain dicts and lists."""
    if hasattr(node, "as_dict"):
        return node.as_dict()
    return node


def run(argv: list[str]) -> int:
    build(argv)
    return 0


def build(argv: list[str]) -> FashionCLI:
    """Parse ``argv``, build the model and data and run the subcommand; the CLI object holds ``run_dir``."""
    # `fashion-bench` passes its own arguments as `args`; Lightning warns when sys.argv holds them too
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    return FashionCLI(
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
