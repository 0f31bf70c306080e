"""``kg build``: mine the concept graph from a dataset's training texts and pick each concept's images.

Resumable: the settings are written first (``build.json``); a rerun with the same settings keeps the graph, the
cached training-image features (``cache/train_features.pt``) and every concept already in images.jsonl, and does
the rest. A folder built with other settings is refused.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fashion_bench.atomic import atomic_open, write_json_atomic
from fashion_bench.kg import io
from fashion_bench.kg.chunker import Chunker, make_chunker
from fashion_bench.kg.evaluate import evaluate_graph, format_scores
from fashion_bench.kg.graph import ConceptGraph
from fashion_bench.kg.images import concept_images, encode_prompts
from fashion_bench.kg.miner import mine_graph

BUILD = "build.json"
FEATURES = "cache/train_features.pt"


@dataclass
class KgSettings:
    chunker: str = "auto"
    max_words: int = 6
    min_count: int = 2
    candidates: int = 20
    keep: int = 10
    diversity: float = 0.8


def training_texts(datamodule: Any) -> list[str]:
    split = datamodule.split("train")
    return [t for i in split.gallery for t in split.items[i].text if t and t.strip()]


def mine_from_datamodule(datamodule: Any, chunker: Chunker, min_count: int, progress: bool = False) -> ConceptGraph:
    graph = mine_graph(training_texts(datamodule), chunker, min_count=min_count, progress=progress)
    if not len(graph):
        raise ValueError(f"dataset '{datamodule.dataset}': no concept (noun phrase ending in a product noun) in the training texts")
    return graph


def world_folder(datamodule: Any) -> Path | None:
    """The synthetic world's folder (holding world.json), if the dataset is synthetic."""
    for root in (Path(datamodule.resolved_root), Path(datamodule.resolved_root_for_images)):
        if (root / "world.json").is_file():
            return root
    return None


def _check_settings(out: Path, record: dict[str, Any]) -> None:
    path = out / BUILD
    if path.exists():
        old = json.loads(path.read_text())
        changed = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
        if changed:
            raise ValueError(
                f"{out} holds a knowledge graph built with other settings ({', '.join(changed)} differ); pass another "
                "--out, or delete the folder to rebuild"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record)


@torch.no_grad()
def _train_features(datamodule: Any, encoder: Any, out: Path, progress: bool) -> tuple[list[str], torch.Tensor]:
    path = out / FEATURES
    ids, dataset = datamodule.image_dataset("train")
    if path.exists():
        return ids, torch.load(path, weights_only=True)
    loader = DataLoader(dataset, batch_size=datamodule.eval_batch_size, num_workers=datamodule.num_workers)
    chunks = [
        encoder.encode_image(batch["image"], normalize=True).float()
        for batch in tqdm(loader, desc=f"encoding {len(ids)} training images", disable=not progress, leave=False)
    ]
    features = torch.cat(chunks)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh:
        torch.save(features, fh)
    return ids, features


def _pick_images(
    graph: ConceptGraph, ids: list[str], features: torch.Tensor, text_features: Callable, settings: KgSettings,
    out: Path, progress: bool, chunk: int = 256,
) -> None:
    done = io.done_images(out)
    todo = [i for i, p in enumerate(graph.phrases) if p not in done]
    bar = tqdm(total=len(graph), initial=len(graph) - len(todo), desc="concept images", disable=not progress)
    for start in range(0, len(todo), chunk):
        block = todo[start : start + chunk]
        index, score = concept_images(
            text_features([graph.phrases[i] for i in block]), features,
            candidates=settings.candidates, keep=settings.keep, diversity=settings.diversity,
        )
        io.append_images(out, (
            {"phrase": graph.phrases[c], "item_ids": [ids[j] for j in row.tolist()], "scores": [round(s, 6) for s in sc.tolist()]}
            for c, row, sc in zip(block, index, score)
        ))
        bar.update(len(block))
    bar.close()


def build_kg(
    data_config: dict[str, Any], out: Path, encoder_config: dict[str, Any], settings: KgSettings, *, progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build (or resume) the knowledge graph of ``data_config``'s training split into ``out``; returns the summary."""
    from fashion_bench.contracts import Preprocessing
    from fashion_bench.data import FashionDataModule
    from fashion_bench.methods.base import EncoderConfig

    started = time.perf_counter()
    out = Path(out)
    _check_settings(out, {"data": data_config, "encoder": encoder_config, "settings": asdict(settings)})
    encoder = EncoderConfig(**encoder_config).build().eval()
    datamodule = FashionDataModule(**data_config)
    datamodule.attach_preprocessing(Preprocessing(image_spec=encoder.image_spec, tokenize=encoder.tokenize))
    chunker = make_chunker(settings.chunker, settings.max_words)
    if (out / io.PARENTS).exists():
        graph = io.read_graph(out)
    else:
        graph = mine_from_datamodule(datamodule, chunker, settings.min_count, progress)
        io.write_graph(out, graph)
    log(f"{len(graph)} concepts ({sum(c > 0 for c in graph.counts)} written in the texts), {len(graph.edges())} is-a edges")
    world = world_folder(datamodule)
    scores = evaluate_graph(graph, world) if world is not None else None
    if scores is not None:
        log(f"against {world / 'world.json'}: {format_scores(scores)}")
    ids, features = _train_features(datamodule, encoder, out, progress)

    def text_features(phrases: list[str]) -> torch.Tensor:
        return encode_prompts(phrases, encoder.tokenize, encoder.encode_text, features.device)

    _pick_images(graph, ids, features, text_features, settings, out, progress)
    summary = {
        "concepts": len(graph), "written_concepts": sum(c > 0 for c in graph.counts), "edges": len(graph.edges()),
        "roots": sum(p < 0 for p in graph.parents), "training_images": len(ids), "dataset": datamodule.dataset,
        "encoder": encoder_config, "settings": asdict(settings),
        "chunker_used": chunker.kind, "evaluation": scores,
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    io.write_summary(out, summary)
    log(f"knowledge graph written to {out}")
    return summary
