"""Stage artefacts: how a multi-stage method hands its result to the next stage, with provenance.

At the end of ``fit`` a run publishes the checkpoint it selected (the best by the protocol's primary metric, the
one ``test --ckpt_path best`` reports, else the final weights) into its own run directory::

    <run>/published/model.ckpt   weights-only Lightning checkpoint (state_dict, hyper_parameters, stage_inputs)
    <run>/published/<extra>      files the method adds (a CLIP method: encoder.pt, an open_clip checkpoint)
    <run>/published/stage.json   experiment, seed, which checkpoint was selected and why, sha256 of every file

A later stage names it by run directory, by file, or as ``run:<experiment>/<file>``: the newest run of that
experiment *with the same seed* under the same runs root, so seeds and concurrent runs never read or overwrite
each other's artefacts. The method records the path, run and sha256 of what it loaded (``stage_inputs``), in its
own checkpoints and in results.json.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from fashion_bench.atomic import atomic_open, copy_atomic, write_json_atomic

PUBLISHED_DIR = "published"
MODEL_FILE = "model.ckpt"
STAGE_FILE = "stage.json"
RUN_PREFIX = "run:"
_SEED = re.compile(r"_seed(\d+)$")

_restoring = False


@contextlib.contextmanager
def restoring_weights(active: bool = True) -> Iterator[None]:
    """While active, methods are being built for ``validate`` / ``test`` / ``predict --ckpt_path FILE``: their
    weights come from that checkpoint, so an earlier stage's artefact may be absent."""
    global _restoring
    previous, _restoring = _restoring, active
    try:
        yield
    finally:
        _restoring = previous


def weights_will_be_restored() -> bool:
    return _restoring


_PUBLISHED_FILE = re.compile(rf"(?:^|/)([^/]+)/[^/]+_seed\d+/{PUBLISHED_DIR}/([^/]+)$")


def as_reference(value: str) -> str:
    """A published artefact's path (``<runs>/<experiment>/<run>_seed<S>/published/<file>``) as the reference that
    names it for any seed (``run:<experiment>/<file>``); other values unchanged. Config hashes use it: each seed
    of a later stage reads its own seed's file, yet the seeds run one configuration."""
    match = _PUBLISHED_FILE.search(value.replace("\\", "/"))
    return f"{RUN_PREFIX}{match.group(1)}/{match.group(2)}" if match else value


def run_seed(run_dir: Path) -> int | None:
    """The seed in a run directory's name (``<stamp>_seed<S>``)."""
    match = _SEED.search(Path(run_dir).name)
    return int(match.group(1)) if match else None


def newest_run(root: Path, experiment: str, seed: int | None, having: str) -> Path | None:
    """The newest run directory of ``experiment`` (with ``seed`` when given) that holds the file ``having``."""
    runs = [p for p in (Path(root) / experiment).glob(f"*/{having}") if seed is None or run_seed(p.parents[having.count("/")]) == seed]
    runs.sort(key=lambda p: (p.parents[having.count("/")].name, p.stat().st_mtime))
    return runs[-1].parents[having.count("/")] if runs else None


def resolve_artefact(value: str, root: Path, seed: int | None, default_file: str = MODEL_FILE) -> str:
    """``run:<experiment>/<file>`` -> ``<root>/<experiment>/<newest run with this seed>/published/<file>``; a run
    directory -> its published ``default_file``; anything else unchanged."""
    if value.startswith(RUN_PREFIX):
        experiment, _, name = value[len(RUN_PREFIX):].partition("/")
        if not experiment or not name:
            raise ValueError(f"artefact reference {value!r}: expected run:<experiment>/<file>, e.g. run:clip4cir-stage1__synth-cir/encoder.pt")
        run = newest_run(root, experiment, seed, f"{PUBLISHED_DIR}/{name}")
        if run is None:
            raise FileNotFoundError(
                f"artefact reference {value!r}: no run of experiment '{experiment}' with seed {seed} under {root} has "
                f"published {PUBLISHED_DIR}/{name}; fit that stage first with the same seed (--seed_everything {seed}) "
                f"and the same --trainer.default_root_dir"
            )
        return str(run / PUBLISHED_DIR / name)
    path = Path(value)
    if path.is_dir() and (path / PUBLISHED_DIR / default_file).is_file():
        return str(path / PUBLISHED_DIR / default_file)
    return value


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class StagePublisher(pl.Callback):
    """Publishes the selected checkpoint of a ``fit`` into ``<run>/published/`` (see the module docstring)."""

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.interrupted or not trainer.is_global_zero:
            return
        out = Path(trainer.default_root_dir) / PUBLISHED_DIR
        checkpoint = trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_path", "") if checkpoint is not None else ""
        current = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        selected: dict[str, Any] = {"selected": "last", "global_step": trainer.global_step}
        if best and Path(best).is_file():
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            pl_module.load_state_dict(state)
            score = getattr(checkpoint, "best_model_score", None)
            selected = {"selected": "best", "checkpoint": best, "monitor": getattr(checkpoint, "monitor", None),
                        "score": float(score) if score is not None else None}
        try:
            files = {"model": self._save_model(pl_module, out / MODEL_FILE), **pl_module.published_files(out)}
        finally:
            pl_module.load_state_dict(current)
        info = {
            "run_dir": str(Path(trainer.default_root_dir)),
            "seed": run_seed(Path(trainer.default_root_dir)),
            "method": getattr(pl_module, "method_name", type(pl_module).__name__),
            **selected,
            "files": {name: {"path": str(path), "sha256": sha256(path)} for name, path in files.items()},
            "stage_inputs": getattr(pl_module, "stage_inputs", {}),
        }
        write_json_atomic(out / STAGE_FILE, info)
        publish_to = getattr(pl_module, "publish_to", None)
        if publish_to:
            copy_atomic(files[getattr(pl_module, "main_artefact", "encoder" if "encoder" in files else "model")], publish_to)

    @staticmethod
    def _save_model(pl_module: pl.LightningModule, path: Path) -> Path:
        payload = {
            "state_dict": {k: v.detach().cpu() for k, v in pl_module.state_dict().items()},
            "hyper_parameters": dict(pl_module.hparams),
            "stage_inputs": getattr(pl_module, "stage_inputs", {}),
        }
        with atomic_open(path, "wb") as fh:
            torch.save(payload, fh)
        return path
