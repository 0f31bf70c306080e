"""``RetrievalEvaluator``: the one Lightning callback that judges every method.

At validation / test end it has the gallery features that ``validation_step`` produced (the gallery loader is
the validation loader, so Lightning's progress bar covers gallery encoding), gathers them across ranks with
their indices (dropping the duplicates a ``DistributedSampler`` pads in), embeds the queries through the
method's ``encode_query`` (reference images are looked up among the gallery features, and only references
outside the gallery are encoded, once each), runs the protocol, logs ``val/<metric>`` / ``test/<metric>`` with
the same value on every rank (``val/primary`` is the protocol's primary metric, for checkpointing) and writes
results.json. It never knows which method it evaluates: each query batch holds what its queries have (``text``
tokens, reference ``image_features``, both; and ``category``), queries of different kinds batched apart, and
query encoding is sharded over DDP ranks.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from tqdm.auto import tqdm

from fashion_bench.contracts import PER_QUERY_NAME, QUERY_DIAGNOSTICS_NAME, query_kind
from fashion_bench.data.datamodule import EvalSplit, FashionDataModule
from fashion_bench.data.datasets import join_captions
from fashion_bench.data.schema import DataError
from fashion_bench.methods.encode import all_gather_rows, gather_objects, rank_share
from fashion_bench.retrieval.diagnostics import write_query_diagnostics
from fashion_bench.retrieval.per_query import write_per_query
from fashion_bench.retrieval.engine import EvalInputs, EvalResult, run_protocol
from fashion_bench.retrieval.protocols import get_protocol
from fashion_bench.atomic import atomic_open, write_json_atomic
from fashion_bench.contracts import SCHEMA_VERSION
from fashion_bench.retrieval.results import git_sha, hardware, now_iso, versions
from fashion_bench.timing import PhaseTimer

log = logging.getLogger(__name__)


class RetrievalEvaluator(pl.Callback):
    def __init__(
        self,
        save_rankings: int = 0,
        cirr_export: bool = False,
        results_file: str = "results.json",
        progress: bool = True,
    ) -> None:
        """
        Args:
            save_rankings: on ``test``, save each query's top-K gallery ids with scores to ``rankings.jsonl``
                (0 = do not save); the report turns them into retrieval galleries.
            cirr_export: on ``test``, also write the two CIRR test-server JSON files into ``cirr_submission/``.
            results_file: name of the results file in the run directory.
        """
        self.save_rankings = save_rankings
        self.cirr_export = cirr_export
        self.results_file = results_file
        self.progress = progress
        self.run_info: dict[str, Any] = {}
        self.last_result: EvalResult | None = None
        self.last_payload: dict[str, Any] | None = None
        self.last_evaluated_step: int | None = None  # on every rank (rank 0 alone writes the payload)
        self._buffers: list[dict[str, torch.Tensor]] = []

    # --- collection ---------------------------------------------------------------------------------------------
    def _reset(self, *_: Any) -> None:
        self._buffers = []

    on_validation_epoch_start = _reset
    on_test_epoch_start = _reset

    def _collect(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._buffers.append({k: outputs[k].detach().float().cpu() if k == "features" else outputs[k].detach().cpu() for k in ("features", "index", "image_ok")})

    on_validation_batch_end = _collect
    on_test_batch_end = _collect
    on_predict_batch_end = _collect
    on_predict_epoch_start = _reset

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Training images that failed to load (replaced by blank ones) are counted like evaluation ones."""
        if isinstance(batch, dict) and "image_ok" in batch:
            failed = int((~batch["image_ok"].bool()).sum())
            if failed:
                trainer.datamodule.count_failed_images("train", failed)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._evaluate(trainer, pl_module, stage="val", role="val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._evaluate(trainer, pl_module, stage="test", role="test")

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """``predict``: the embeddings of the split's gallery and queries, with their ids (see write_embeddings)."""
        dm = trainer.datamodule
        data = dm.eval_split("test")
        image_features, _ = self._gallery_features(pl_module, len(data.gallery_ids))
        reference_features, _ = self._encode_references(trainer, pl_module, data)
        query_emb, _ = self._encode_queries(trainer, pl_module, data, image_features, reference_features)
        gallery_emb = self._embed_gallery(pl_module, image_features)
        if trainer.global_rank == 0:
            out = write_embeddings(Path(trainer.default_root_dir) / EMBEDDINGS_DIR, data, gallery_emb, query_emb, {
                "experiment": self.run_info.get("experiment"), "method": self.run_info.get("method"),
                "dataset": dm.dataset, "task": dm.task, "split": data.name, "ckpt_path": self.run_info.get("ckpt_path"),
                "encoder": pl_module.describe_encoder() if hasattr(pl_module, "describe_encoder") else None,
                "stage_inputs": getattr(pl_module, "stage_inputs", {}),
            })
            log.info("embeddings of split '%s' written to %s", data.name, out)

    @staticmethod
    @torch.no_grad()
    def _embed_gallery(pl_module: pl.LightningModule, image_features: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            pl_module.encode_gallery({"image_features": chunk.to(pl_module.device)}).float().cpu()
            for chunk in image_features.split(4096)
        ])

    # --- evaluation ---------------------------------------------------------------------------------------------
    def _gallery_features(self, pl_module: pl.LightningModule, gallery_size: int) -> tuple[torch.Tensor, int]:
        features = torch.cat([b["features"] for b in self._buffers])
        index = torch.cat([b["index"] for b in self._buffers])
        image_ok = torch.cat([b["image_ok"] for b in self._buffers])
        if pl_module.trainer.world_size > 1:
            index, packed = all_gather_rows(pl_module.trainer, index, torch.cat([features, image_ok.float()[:, None]], 1))
            features, image_ok = packed[:, :-1], packed[:, -1].bool()
        order = torch.argsort(index, stable=True)
        index, features, image_ok = index[order], features[order], image_ok[order]
        keep = torch.ones_like(index, dtype=torch.bool)
        keep[1:] = index[1:] != index[:-1]
        index, features, image_ok = index[keep], features[keep], image_ok[keep]
        if index.numel() != gallery_size or not torch.equal(index, torch.arange(gallery_size)):
            raise RuntimeError(
                f"gallery encoding covered {index.numel()} of {gallery_size} images; do not limit evaluation batches "
                "(--trainer.limit_val_batches / limit_test_batches) when computing retrieval metrics"
            )
        return features, int((~image_ok.bool()).sum())

    @torch.no_grad()
    def _encode_references(self, trainer: pl.Trainer, pl_module, data: EvalSplit) -> tuple[torch.Tensor | None, int]:
        """Features of query images outside the gallery (each once, sharded over ranks) and how many failed."""
        if data.reference_loader is None:
            return None, 0
        index, chunks, failed = [], [], 0
        dataset = data.reference_loader.dataset
        positions = rank_share(len(dataset), trainer)
        with trainer.precision_plugin.forward_context():
            for start in range(0, len(positions), data.reference_loader.batch_size or 1):
                batch = torch.utils.data.default_collate([dataset[i] for i in positions[start:start + (data.reference_loader.batch_size or 1)]])
                chunks.append(pl_module.encode_images(batch["image"].to(pl_module.device)).float().cpu())
                index.append(batch["index"])
                failed += int((~batch["image_ok"].bool()).sum())
        index_t = torch.cat(index) if index else torch.zeros(0, dtype=torch.long)
        features = torch.cat(chunks) if chunks else torch.zeros(0, 1)
        index_t, features = all_gather_rows(trainer, index_t, features)
        out = torch.empty(len(dataset), features.shape[-1])
        out[index_t] = features
        return out, sum(gather_objects(trainer, failed))

    @torch.no_grad()
    def _encode_queries(self, trainer, pl_module, data: EvalSplit, image_features: torch.Tensor, reference_features) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Query embeddings in query order and the method's per-query diagnostics ({name: [Q]}, NaN where a query
        has none). Each batch holds queries of one kind; batches are shared over ranks."""
        gallery_pos = {item_id: i for i, item_id in enumerate(data.gallery_ids)}
        reference_pos = {item_id: i for i, item_id in enumerate(data.reference_ids)}
        queries = data.queries
        texts = data.query_loader.dataset
        size = data.query_loader.batch_size or 1
        batches = [rows[i:i + size] for rows in _rows_by_kind(queries).values() for i in range(0, len(rows), size)]
        mine = [batches[b] for b in rank_share(len(batches), trainer)]
        index, out, diagnostics = [], [], []
        bar = tqdm(mine, desc=f"encoding {len(queries)} queries", disable=not self.progress or trainer.global_rank != 0, leave=False)
        with trainer.precision_plugin.forward_context():
            for rows in bar:
                first = queries[rows[0]]
                qbatch: dict[str, Any] = {"category": [queries[i].category for i in rows]}
                if join_captions(first.text):
                    qbatch["text"] = torch.stack([texts[i]["text"] for i in rows]).to(pl_module.device)
                if first.image is not None:
                    qbatch["image_features"] = torch.stack([
                        image_features[gallery_pos[queries[i].image]] if queries[i].image in gallery_pos
                        else reference_features[reference_pos[queries[i].image]]
                        for i in rows
                    ]).to(pl_module.device)
                embeddings, values = pl_module.encode_query_with_diagnostics(qbatch)
                out.append(embeddings.float().cpu())
                index.append(torch.tensor(rows))
                if values:
                    diagnostics.append((rows, _diagnostic_columns(pl_module, values, len(rows))))
        index_t = torch.cat(index) if index else torch.zeros(0, dtype=torch.long)
        embeddings = torch.cat(out) if out else torch.zeros(0, 1)
        index_t, embeddings = all_gather_rows(trainer, index_t, embeddings)
        result = torch.empty(len(queries), embeddings.shape[-1])
        result[index_t] = embeddings
        return result, _assemble_diagnostics(trainer, diagnostics, len(queries))

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *, stage: str, role: str) -> None:
        started = time.perf_counter()
        dm = trainer.datamodule
        if not isinstance(dm, FashionDataModule):
            raise TypeError("RetrievalEvaluator needs a FashionDataModule")
        data = dm.eval_split(role)
        protocol = get_protocol(dm.protocol)
        wants_rankings = stage == "test" and (self.save_rankings or self.cirr_export)
        scored = any(q.positives for q in data.queries)  # False for splits without targets (CIRR test1)
        if not scored and not wants_rankings:
            raise DataError(
                f"split '{data.name}' of dataset '{dm.dataset}' has no targets (none of its {len(data.queries)} queries "
                "has a positive), so it cannot be scored; run `test` with --evaluator.save_rankings 50 (or "
                "--evaluator.cirr_export true for CIRR) to export its rankings instead"
            )
        image_features, skipped = self._gallery_features(pl_module, len(data.gallery_ids))
        reference_features, skipped_references = self._encode_references(trainer, pl_module, data)
        query_emb, diagnostics = self._encode_queries(trainer, pl_module, data, image_features, reference_features)
        failed = {"gallery": skipped, "query_references": skipped_references}
        for counts in gather_objects(trainer, dict(dm.failed_images)):
            for role, count in counts.items():
                failed[role] = failed.get(role, 0) + count
        if any(failed.values()):
            log.warning("images that failed to load and were replaced by blank images: %s", failed)
        gallery_emb = self._embed_gallery(pl_module, image_features)
        top_n = max(50, self.save_rankings) if wants_rankings else 0  # top-K lists cost a second gallery pass
        result = run_protocol(protocol, build_eval_inputs(data, query_emb, gallery_emb), top_n=top_n)
        self.last_result = result
        if scored:
            for name, value in result.metrics.items():
                pl_module.log(f"{stage}/{name}", float(value), sync_dist=False)
            for subset, metrics in result.per_subset.items():
                for name, value in metrics.items():
                    if not name.startswith("num_"):
                        pl_module.log(f"{stage}/{subset}/{name}", float(value), sync_dist=False)
            pl_module.log(f"{stage}/primary", float(result.value(protocol.primary_metric)), sync_dist=False, prog_bar=True)
        else:
            log.warning("split '%s' has no targets: its rankings are exported, no metrics and no %s are written", data.name, self.results_file)
        self.last_evaluated_step = trainer.global_step
        if trainer.global_rank == 0:
            self._write_outputs(trainer, pl_module, dm, data, protocol, result, failed, stage, time.perf_counter() - started, scored)
            if stage == "test" and diagnostics:
                path = Path(trainer.default_root_dir) / QUERY_DIAGNOSTICS_NAME
                lines = write_query_diagnostics(path, data.queries, data.split.items, {k: v.tolist() for k, v in diagnostics.items()})
                log.info("per-query diagnostics %s of %d queries written to %s", sorted(diagnostics), lines, path)

    # --- outputs ------------------------------------------------------------------------------------------------
    def _write_outputs(self, trainer, pl_module, dm, data: EvalSplit, protocol, result: EvalResult, failed: dict[str, int], stage: str, eval_s: float, scored: bool = True) -> None:
        run_dir = Path(trainer.default_root_dir)
        info = self.run_info
        payload = {
            "schema_version": SCHEMA_VERSION,
            "experiment": info.get("experiment", type(pl_module).__name__),
            "method": info.get("method", getattr(pl_module, "method_name", type(pl_module).__name__)),
            "dataset": dm.dataset,
            "task": dm.task,
            "split": data.name,
            "protocol": protocol.to_dict(),
            "encoder": pl_module.describe_encoder() if hasattr(pl_module, "describe_encoder") else {"name": None, "pretrained": None},
            "stage_inputs": getattr(pl_module, "stage_inputs", {}),
            "config_hash": info.get("config_hash"),
            "seed": info.get("seed"),
            "metrics": finite_metrics(result.metrics),
            "per_subset": {s: finite_metrics(m) for s, m in result.per_subset.items()},
            "num_queries": int(result.num_queries),
            "num_valid_queries": int(result.num_valid_queries),
            "valid_queries": result.valid_queries,
            "gallery_size": int(result.gallery_size),
            "skipped_images": sum(failed.values()),
            "failed_images": failed,
            "ckpt_path": str(trainer.ckpt_path) if trainer.ckpt_path else info.get("ckpt_path"),
            "git_sha": git_sha(),
            "versions": versions(),
            "wall_time_s": round(time.time() - info["start_time"], 3) if "start_time" in info else round(eval_s, 3),
            "eval_time_s": round(eval_s, 3),
            "started_at": info.get("started_at", now_iso()),
            "hardware": hardware(),
            "stage": stage,
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
        }
        timer = next((c for c in trainer.callbacks if isinstance(c, PhaseTimer)), None)
        if timer is not None:
            payload["timing"] = timer.snapshot()
        if scored:
            self.last_payload = payload
            write_json_atomic(run_dir / self.results_file, payload)
            if result.per_query is not None:
                write_per_query(run_dir / PER_QUERY_NAME, result.per_query)
        if stage == "test" and self.save_rankings:
            write_rankings(run_dir / "rankings.jsonl", data, result, dm.resolved_root_for_images, self.save_rankings)
        if stage == "test" and self.cirr_export:
            from fashion_bench.retrieval.export import write_cirr_submission

            names = data.gallery_ids
            write_cirr_submission(
                run_dir / "cirr_submission",
                [q.query_id for q in data.queries],
                [[names[i] for i in row if i >= 0][:50] for row in result.topk.tolist()],
                [[names[i] for i in row if i >= 0][:3] for row in (result.subset_topk.tolist() if result.subset_topk is not None else [])],
            )


EMBEDDINGS_DIR = "embeddings"


def write_embeddings(out: Path, data: EvalSplit, gallery_emb: torch.Tensor, query_emb: torch.Tensor, meta: dict[str, Any]) -> Path:
    """``predict`` output, read by indexing tools: ``gallery.npy`` [G, D] and ``queries.npy`` [Q, D] float32
    (L2-normalised, scored by inner product), ``gallery_ids.txt`` / ``query_ids.txt`` (one id per line, same
    order), ``gallery.jsonl`` (item id, image path, identity, category per line) and ``meta.json``."""
    import numpy as np

    items = data.split.items
    for name, array in (("gallery.npy", gallery_emb), ("queries.npy", query_emb)):
        with atomic_open(out / name, "wb") as fh:
            np.save(fh, array.numpy().astype(np.float32))
    with atomic_open(out / "gallery_ids.txt") as fh:
        fh.writelines(f"{i}\n" for i in data.gallery_ids)
    with atomic_open(out / "query_ids.txt") as fh:
        fh.writelines(f"{q.query_id}\n" for q in data.queries)
    with atomic_open(out / "gallery.jsonl") as fh:
        for i in data.gallery_ids:
            item = items[i]
            fh.write(json.dumps({"item_id": i, "image": str(item.image), "identity": item.identity, "category": item.category}, ensure_ascii=False) + "\n")
    write_json_atomic(out / "meta.json", {**meta, "dim": int(gallery_emb.shape[1]), "gallery_size": int(gallery_emb.shape[0]),
                                          "num_queries": int(query_emb.shape[0]), "score": "inner product"})
    return out


def finite_metrics(metrics: dict[str, float]) -> dict[str, float | int | None]:
    """Metrics as JSON-safe numbers: counts stay ints, a metric with no valid query is null, never NaN."""
    out: dict[str, float | int | None] = {}
    for name, value in metrics.items():
        if name.startswith("num_"):
            out[name] = int(value)
        else:
            out[name] = float(value) if math.isfinite(float(value)) else None
    return out


def _diagnostic_columns(pl_module, values: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """A batch's diagnostics as float32 CPU columns, checked to hold one value per query."""
    bad = {name: tuple(v.shape) for name, v in values.items() if tuple(v.shape) != (size,)}
    if bad:
        raise ValueError(
            f"{type(pl_module).__name__}.encode_query_with_diagnostics returned diagnostics of shapes {bad} for a batch "
            f"of {size} queries; each must be [{size}] (one value per query)"
        )
    return {name: v.detach().float().cpu() for name, v in values.items()}


def _assemble_diagnostics(trainer, batches: list[tuple[list[int], dict[str, torch.Tensor]]], num_queries: int) -> dict[str, torch.Tensor]:
    """{name: [Q]} in query order from every rank's (query positions, columns), NaN where a query has no value."""
    out: dict[str, torch.Tensor] = {}
    for share in gather_objects(trainer, batches):
        for rows, columns in share:
            for name, column in columns.items():
                out.setdefault(name, torch.full((num_queries,), float("nan")))[rows] = column
    return out


def _rows_by_kind(queries) -> dict[str, list[int]]:
    """Query positions grouped by kind (text / image / image+text), in query order within a kind."""
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        try:
            kind = query_kind(bool(join_captions(q.text)), q.image is not None)
        except ValueError:
            raise DataError(f"query '{q.query_id}' has neither a text nor a reference image") from None
        groups.setdefault(kind, []).append(i)
    return groups


def build_eval_inputs(data: EvalSplit, query_emb: torch.Tensor, gallery_emb: torch.Tensor) -> EvalInputs:
    """Translate a split's id-based relations into the gallery indices the protocol engine works on."""
    split = data.split
    position = {item_id: i for i, item_id in enumerate(data.gallery_ids)}
    queries = split.queries

    def indices(ids: list[str]) -> list[int]:
        return [position[i] for i in ids]

    def query_item(q, field: str) -> str:
        return getattr(split.items[q.image], field) if q.image is not None else ""

    return EvalInputs(
        query_emb=query_emb,
        gallery_emb=gallery_emb,
        query_ids=[q.query_id for q in queries],
        gallery_ids=list(data.gallery_ids),
        positives=[indices(q.positives) for q in queries],
        exclude=[indices(q.exclude) for q in queries],
        subset=[indices(q.subset) for q in queries],
        query_category=[q.category for q in queries],
        query_group=[q.group for q in queries],
        query_image_index=[position.get(q.image, -1) if q.image is not None else -1 for q in queries],
        query_domain=[query_item(q, "domain") for q in queries],
        query_identity=[query_item(q, "identity") for q in queries],
        gallery_domain=[split.items[i].domain for i in data.gallery_ids],
        gallery_identity=[split.items[i].identity for i in data.gallery_ids],
        gallery_category=[split.items[i].category for i in data.gallery_ids],
    )


def write_rankings(path: Path, data: EvalSplit, result: EvalResult, image_root: Path, top_k: int) -> None:
    """One line per query: the query (text, image path) and its top-K results with scores and relevance."""
    items = data.split.items

    def image_path(item_id: str) -> str:
        image = Path(items[item_id].image)
        return str(image if image.is_absolute() else (image_root / image).resolve())

    with atomic_open(path) as fh:
        for q, row, scores in zip(data.queries, result.topk.tolist(), result.topk_scores.tolist()):
            positives = set(q.positives)
            results = [
                {"item_id": data.gallery_ids[i], "image": image_path(data.gallery_ids[i]), "score": round(float(s), 5), "positive": data.gallery_ids[i] in positives}
                for i, s in zip(row[:top_k], scores[:top_k])
                if i >= 0
            ]
            line = {"query_id": q.query_id, "query_text": list(q.text), "query_image": image_path(q.image) if q.image else None, "results": results}
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
