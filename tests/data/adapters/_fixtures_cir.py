"""Small file writers for the composed-retrieval adapter tests (FashionIQ, CIRR, Shoes, Fashion200k), evaluation
on hand-made embeddings through the real protocol engine, and a ``validate`` runner on the tiny encoder."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from PIL import Image

from fashion_bench.data.schema import Split

REPO = Path(__file__).resolve().parents[3]


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def write_image(path: Path, seed: int = 0, size: int = 8) -> Path:
    """A tiny solid image (format from the suffix), its colour derived from ``seed``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = ((37 * seed) % 256, (91 * seed + 40) % 256, (53 * seed + 90) % 256)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def truncate(path: Path) -> None:
    """Cut a file in half, as an interrupted download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def evaluate_split(protocol: str, split: Split, scores: dict[str, dict[str, float]], *, top_n: int = 0):
    """Run ``protocol`` on ``split`` where query q scores gallery item i ``scores[q][i]`` (default 0; items not in
    the gallery are ignored): the gallery embeddings are one-hot, a query's embedding is its score vector. Goes
    through the evaluator's own ``build_eval_inputs``, so the adapter's categories, exclusions and subsets are
    what is tested."""
    from fashion_bench.retrieval.callback import build_eval_inputs
    from fashion_bench.retrieval.engine import run_protocol

    position = {item_id: i for i, item_id in enumerate(split.gallery)}
    query_emb = torch.zeros(len(split.queries), len(split.gallery))
    for row, query in enumerate(split.queries):
        for item_id, value in scores.get(query.query_id, {}).items():
            if item_id in position:
                query_emb[row, position[item_id]] = value
    gallery_emb = torch.eye(len(split.gallery))
    data = SimpleNamespace(split=split, gallery_ids=split.gallery)
    return run_protocol(protocol, build_eval_inputs(data, query_emb, gallery_emb), top_n=top_n)


def run_experiment(verb: str, experiment: str, root: Path, runs: Path, *extra: str) -> list[dict]:
    """``verb`` (validate / test) of configs/experiment/<experiment>.yaml on ``root`` with the tiny random
    encoder; the results.json payloads of the run."""
    from fashion_bench.lightning_cli import run

    argv = [
        verb, "--config", str(REPO / "configs" / "experiment" / f"{experiment}.yaml"),
        "--data.root", str(root), "--data.num_workers", "0", "--data.eval_batch_size", "16",
        "--model.init_args.encoder", str(REPO / "configs" / "encoder" / "tiny.yaml"),
        "--trainer.default_root_dir", str(runs), "--trainer.enable_progress_bar", "false", *extra,
    ]
    assert run(argv) == 0
    return [json.loads(p.read_text()) for p in sorted((runs / experiment).glob("*/results.json"))]
