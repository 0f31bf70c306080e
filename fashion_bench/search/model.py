"""A trained method, loaded for embedding from a run directory or a checkpoint file, with its provenance.

A run directory gives its published ``model.ckpt`` (the checkpoint its ``fit`` selected), else its best, else its
last checkpoint. Checkpoints hold ``hyper_parameters`` = the class path and exactly the constructor arguments
(``RetrievalMethod.save_config``), so the method is rebuilt from them alone, with ``restoring_weights`` active: its
weights come from the checkpoint, so an earlier stage's files need not exist any more.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from fashion_bench.methods.base import RetrievalMethod
from fashion_bench.stages import MODEL_FILE, PUBLISHED_DIR, restoring_weights, run_seed, sha256


class ModelLoadError(ValueError):
    """A run directory or checkpoint that cannot give a method (named in the message)."""


@dataclass
class LoadedMethod:
    method: RetrievalMethod
    provenance: dict[str, Any]  # class_path, method_name, experiment, run, seed, checkpoint, checkpoint_sha256, encoder
    target_pad_ratio: float | None  # the run's evaluation TargetPad (data config), None without one


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint a run directory (or a checkpoint file) stands for: published, else best, else last."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ModelLoadError(f"{path}: no such run directory or checkpoint file")
    published = path / PUBLISHED_DIR / MODEL_FILE
    if published.is_file():
        return published
    best = sorted((path / "checkpoints").glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    if best:
        return best[-1]
    if (path / "checkpoints" / "last.ckpt").is_file():
        return path / "checkpoints" / "last.ckpt"
    raise ModelLoadError(
        f"{path}: not a run directory with a checkpoint ({PUBLISHED_DIR}/{MODEL_FILE}, checkpoints/best-*.ckpt or "
        "checkpoints/last.ckpt); pass a run directory of `fashion-bench fit` or a .ckpt file"
    )


def run_directory(checkpoint: Path) -> Path | None:
    """The run directory holding ``checkpoint`` (the nearest parent with a config.yaml)."""
    return next((p for p in checkpoint.resolve().parents if (p / "config.yaml").is_file()), None)


def build_method(class_path: str, init_args: dict[str, Any], where: str) -> RetrievalMethod:
    """Instantiate a method from its class path and constructor arguments as the CLI would (typed by jsonargparse)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(RetrievalMethod, "model")
    try:
        config = parser.parse_object({"model": {"class_path": class_path, "init_args": init_args}})
        with restoring_weights():
            return parser.instantiate_classes(config).model
    except Exception as err:  # jsonargparse wraps constructor errors; say which checkpoint and why
        raise ModelLoadError(f"{where}: cannot rebuild method {class_path}: {err}") from err


def load_method(path: str | Path, device: str = "cpu") -> LoadedMethod:
    """The method of a run directory or checkpoint, on ``device``, in eval mode, with its provenance."""
    checkpoint = find_checkpoint(path)
    try:
        payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelLoadError(f"{checkpoint}: not a readable checkpoint ({err})") from err
    hparams = dict(payload.get("hyper_parameters") or {})
    class_path = hparams.pop("_class_path", None)
    if class_path is None or "state_dict" not in payload:
        raise ModelLoadError(
            f"{checkpoint}: not a fashion-bench method checkpoint (needs 'state_dict' and 'hyper_parameters' with "
            "'_class_path')"
        )
    method = build_method(class_path, hparams, str(checkpoint))
    try:
        method.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ModelLoadError(f"{checkpoint}: weights do not fit {class_path}: {err}") from err
    method.on_load_checkpoint(payload)
    method.to(device).eval()
    run = run_directory(checkpoint)
    return LoadedMethod(method, {
        "class_path": class_path,
        "method_name": method.method_name,
        "experiment": run.parent.name if run else None,
        "run": str(run) if run else None,
        "seed": run_seed(run) if run else None,
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_sha256": sha256(checkpoint),
        "encoder": method.describe_encoder(),
        "stage_inputs": method.stage_inputs,
    }, _target_pad_ratio(run))


def _target_pad_ratio(run: Path | None) -> float | None:
    if run is None:
        return None
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    value = (config.get("data") or {}).get("target_pad_ratio")
    return float(value) if value is not None else None


def image_transform(loaded: LoadedMethod) -> Callable[[Any], torch.Tensor]:
    """PIL image -> the tensor the method's encoder takes: the evaluation transform of the data layer."""
    from fashion_bench.data.transforms import build_image_transform

    spec = loaded.method.preprocessing().image_spec
    return build_image_transform(spec, train=False, target_pad_ratio=loaded.target_pad_ratio)
