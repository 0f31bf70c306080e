"""``fashion-bench eval``: any model on your own catalogue in one command, through the LightningCLI ``test`` path
(so results.json and per_query.jsonl are exactly those of every run, and the preprocessing is the model's own).

``--model`` names either weights for the CLIP baseline (``fashion_bench.methods.clip.ClipMethod``, zero-shot):
an open_clip name with an optional ``:tag`` (``ViT-B-32:laion2b_s34b_b79k``), ``hf-hub:org/repo``, an encoder
config (``configs/encoder/marqo-fashionclip.yaml``) or a local weights file exported by fashion-bench; or a
trained method: a run directory (its ``config.yaml`` and ``published/model.ckpt``) or one of its checkpoints,
evaluated with that method's own encoders.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import yaml

from fashion_bench.data.adapters.manifest import parse_columns
from fashion_bench.encoders.clip import HF_HUB_PREFIX, WEIGHT_SUFFIXES

CLIP_METHOD = "fashion_bench.methods.clip.ClipMethod"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fashion-bench eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="open_clip name[:tag] | hf-hub:org/repo | encoder .yaml | weights file | run directory or checkpoint")
    parser.add_argument("--pretrained", help="a local weights file (or tag) for a named model, e.g. offline")
    parser.add_argument("--catalogue", required=True, help="a csv / jsonl catalogue, a folder holding one, or a saved Hugging Face dataset")
    parser.add_argument("--task", choices=("t2i", "id"), default="t2i")
    parser.add_argument("--split", default="test", help="split to evaluate (default test; 'all': every record)")
    parser.add_argument("--columns", default="", help="field=column pairs, e.g. image=img_path,text=title,identity=sku")
    parser.add_argument("--image-root", help="folder relative image paths start from (default: the catalogue's)")
    parser.add_argument("--out", default="runs", help="runs root: results go to OUT/<experiment>/<time>_seed<S>/")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    return parser.parse_args(argv)


def model_args(model: str, pretrained: str | None) -> list[str]:
    """LightningCLI arguments selecting the model ``--model`` names (see the module docstring)."""
    path = Path(model).expanduser()
    if path.is_dir() or (path.suffix == ".ckpt" and path.is_file()):
        return trained_run_args(path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"--model {model}: encoder config not found")
        encoder = yaml.safe_load(path.read_text()) or {}
        name, pretrained = encoder.get("model"), pretrained or encoder.get("pretrained")
        if not name:
            raise ValueError(f"--model {model}: an encoder config needs a 'model' key")
    elif path.suffix in WEIGHT_SUFFIXES:
        name, pretrained = exported_model_name(path), str(path)
    else:
        name, tag = (model, None) if model.startswith(HF_HUB_PREFIX) or ":" not in model else model.rsplit(":", 1)
        pretrained = pretrained or tag
    args = ["--model", CLIP_METHOD, "--model.init_args.encoder.model", str(name)]
    return args + ["--model.init_args.encoder.pretrained", str(pretrained) if pretrained else "null"]


def exported_model_name(path: Path) -> str:
    """The architecture a fashion-bench export records (``export_open_clip_checkpoint``)."""
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"--model {path}: weights file not found")
    state = torch.load(path, map_location="cpu", weights_only=True) if path.suffix != ".safetensors" else {}
    if not isinstance(state, dict) or not isinstance(state.get("model"), str):
        raise ValueError(
            f"--model {path}: the file does not record its architecture; pass it as --model <open_clip name or "
            f"hf-hub:org/repo> --pretrained {path}"
        )
    return state["model"]


def trained_run_args(path: Path) -> list[str]:
    """A run directory (its newest best checkpoint, else last.ckpt: the Lightning checkpoints ``test`` restores;
    ``published/model.ckpt`` holds weights only) or a checkpoint file."""
    if path.parent.name == "published":
        path = path.parent.parent
    if path.is_dir():
        best = sorted((path / "checkpoints").glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
        ckpt = next((c for c in [*best[::-1], path / "checkpoints" / "last.ckpt"] if c.is_file()), None)
        if ckpt is None:
            raise FileNotFoundError(f"--model {path}: a run directory needs checkpoints/best-*.ckpt or checkpoints/last.ckpt")
        run = path
    else:
        ckpt, run = path, path.parent.parent
    config = run / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"--model {path}: no config.yaml in the run directory {run} (needed to rebuild its method)")
    # the run's data section describes its own dataset: every dataset-specific field goes back to its default
    return ["--config", str(config), "--ckpt_path", str(ckpt), "--data.protocol", "null", "--data.degrade", "null",
            "--data.cache_dir", "null", "--trainer.logger", "true"]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-") or "model"


def build_argv(args: argparse.Namespace) -> list[str]:
    model = Path(args.model)
    model_name = model.name if model.exists() else args.model
    adapter_args = {"columns": parse_columns(args.columns), "image_root": args.image_root}
    accelerator = {"cpu": "cpu", "cuda": "gpu", None: "auto"}[args.device]
    return [
        "test",
        *model_args(args.model, args.pretrained),
        "--experiment", f"eval-{slug(model_name)}__{slug(Path(args.catalogue).stem)}",
        "--data.dataset", "catalogue", "--data.root", str(args.catalogue), "--data.task", args.task,
        "--data.test_split", args.split, "--data.eval_batch_size", str(args.batch_size),
        "--data.num_workers", str(args.num_workers), "--data.adapter_args", json.dumps(adapter_args),
        "--trainer.default_root_dir", args.out, "--trainer.accelerator", accelerator, "--trainer.devices", "1",
    ]


def format_table(results: dict) -> str:
    """The metrics of a results.json as a two-column table, in percent."""
    rows = [(k, f"{100 * v:.2f}") for k, v in results["metrics"].items() if isinstance(v, (int, float))]
    width = max(len(k) for k, _ in rows) if rows else 6
    head = (f"{results['experiment']}  task {results['task']}  split {results['split']}  "
            f"{results['num_valid_queries']} queries  gallery {results['gallery_size']}")
    return "\n".join([head, *(f"  {k:<{width}}  {v:>6}" for k, v in rows)])


def offline_hint(args: argparse.Namespace) -> str:
    return (
        f"--model {args.model}{f' --pretrained {args.pretrained}' if args.pretrained else ''}: the weights are not in the "
        "open_clip / Hugging Face cache and this machine is offline. Pass a local weights file: fashion-bench eval "
        "--model <open_clip architecture, e.g. ViT-B-32> --pretrained /path/to/open_clip_model.safetensors ... "
        "(docs/encoders.md lists each fashion model's architecture), or set FASHION_BENCH_ONLINE=1 to download"
    )


def main(argv: list[str]) -> int:
    from fashion_bench.encoders.clip import PretrainedUnavailableError
    from fashion_bench.lightning_cli import build
    from fashion_bench.user_errors import user_error

    args = parse_args(argv)
    try:
        cli = build(build_argv(args))
    except Exception as err:
        if isinstance(user_error(err), PretrainedUnavailableError) and "checkpoint file not found" not in str(user_error(err)):
            raise PretrainedUnavailableError(offline_hint(args)) from err
        raise
    results_path = Path(cli.run_dir) / "results.json"
    print(format_table(json.loads(results_path.read_text())))
    print(f"results: {results_path}\nper query: {results_path.with_name('per_query.jsonl')}")
    return 0
