"""The method contract v2: declared support checked at setup, query batches from what queries have, per-prefix
learning rates, predict output, stage provenance, checkpoint choice by seed, and a mid-epoch kill resumed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from fashion_bench.data.datamodule import FashionDataModule
from fashion_bench.data.schema import Item, Query, Split, item_record, write_jsonl, write_split
from fashion_bench.methods.base import EncoderConfig, OptimConfig
from fashion_bench.methods.clip import ClipMethod
from fashion_bench.methods.clip4cir import Clip4CirFinetune
from fashion_bench.methods.reid_baseline import ReidBaseline
from fashion_bench.retrieval.callback import RetrievalEvaluator, finite_metrics
from fashion_bench.stages import sha256

REPO = Path(__file__).resolve().parents[2]


def tiny_datamodule(tiny_world: Path, dataset: str = "synth-t2i", **kwargs) -> FashionDataModule:
    return FashionDataModule(dataset=dataset, root=str(tiny_world.parent), synthetic_preset="tiny", num_workers=0,
                             batch_size=8, eval_batch_size=16, **kwargs)


def trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", default_root_dir=str(tmp_path), logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[RetrievalEvaluator(progress=False)],
                      **kwargs)


def test_unsupported_task_fails_at_setup_naming_method_task_and_dataset(tiny_world, tmp_path):
    method = Clip4CirFinetune(EncoderConfig(), OptimConfig())
    with pytest.raises(ValueError, match=r"method 'clip4cir' \(Clip4CirFinetune\) does not support task 't2i' of dataset 'synth-t2i'"):
        trainer(tmp_path, max_steps=1).fit(method, datamodule=tiny_datamodule(tiny_world))


def mixed_queries(root: Path) -> Path:
    """An ``id`` split whose queries are an image, a text, and both (an ``id`` query with text)."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    items, records = {}, []
    for p in range(4):
        for v in range(2):
            item_id = f"p{p}-v{v}"
            Image.new("RGB", (16, 16), (60 * p, 30 * v, 90)).save(root / "images" / f"{item_id}.png")
            items[item_id] = Item(item_id, f"images/{item_id}.png", [f"product {p}"], identity=f"p{p}", category="tops")
            records.append(item_record(items[item_id], "val"))
    queries = [
        Query("image", positives=["p0-v1"], image="p0-v0", category="tops"),
        Query("text", positives=["p1-v0", "p1-v1"], text=["product 1"], category="tops"),
        Query("both", positives=["p2-v1"], image="p2-v0", text=["", "product 2"], category="tops"),
    ]
    write_jsonl(root / "items.jsonl", records)
    write_split(root, "mixed", Split("val", items, list(items), queries))
    return root


def test_queries_are_batched_by_what_they_have(tmp_path, monkeypatch):
    root = mixed_queries(tmp_path / "data")
    dm = FashionDataModule(dataset="canonical", root=str(root), task="id", num_workers=0, adapter_args={"subdir": "mixed"})
    method = ClipMethod(EncoderConfig())
    seen: list[tuple[str, ...]] = []
    original = ClipMethod.encode_query

    def spy(self, batch):
        seen.append(tuple(sorted(k for k in batch if k != "category")))
        assert batch["category"] == ["tops"] * len(batch["category"])
        return original(self, batch)

    monkeypatch.setattr(ClipMethod, "encode_query", spy)
    trainer(tmp_path).validate(method, datamodule=dm)
    assert sorted(seen) == [("image_features",), ("image_features", "text"), ("text",)]
    with pytest.raises(ValueError, match=r"\(ReidBaseline\) cannot embed \['image\+text', 'text'\] queries of dataset 'canonical' \(task 'id'\)"):
        trainer(tmp_path).validate(ReidBaseline(num_identities=4), datamodule=dm)


def test_lr_groups_by_parameter_prefix():
    method = ClipMethod(EncoderConfig(), OptimConfig(lr=1e-4, lr_groups={"encoder.clip.visual.": 1e-3}))
    groups = method.param_groups()
    visual = {id(p) for p in method.encoder.clip.visual.parameters()}
    for group in groups:
        in_visual = {id(p) in visual for p in group["params"]}
        assert len(in_visual) == 1 and group["lr"] == (1e-3 if in_visual.pop() else 1e-4)
    assert {g["weight_decay"] for g in groups} == {0.0, 0.1}
    with pytest.raises(ValueError, match=r"prefixes \['combiner\.'\] match no trainable parameter"):
        ClipMethod(EncoderConfig(), OptimConfig(lr_groups={"combiner.": 1e-3})).param_groups()


def test_results_never_hold_nan():
    assert finite_metrics({"R@1": math.nan, "mAP": 0.5, "num_valid_queries": 0}) == {"R@1": None, "mAP": 0.5, "num_valid_queries": 0}


# --- through the CLI -----------------------------------------------------------------------------------------
def cli(argv: list[str]) -> None:
    from fashion_bench.lightning_cli import run

    assert run(argv) == 0


def tiny(tiny_world: Path, runs: Path) -> list[str]:
    return ["--data.root", str(tiny_world.parent), "--data.synthetic_preset", "tiny", "--data.num_workers", "0",
            "--data.batch_size", "16", "--trainer.default_root_dir", str(runs), "--trainer.enable_progress_bar", "false"]


@pytest.fixture
def weights(tiny_encoder, tmp_path):
    from fashion_bench.encoders import export_open_clip_checkpoint

    return str(export_open_clip_checkpoint(tiny_encoder, tmp_path / "w.pt"))


def test_predict_writes_the_embeddings_of_a_split(tiny_world, weights, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = str(REPO / "configs/experiment/clip__synth-id.yaml")
    cli(["predict", "--config", config, *tiny(tiny_world, tmp_path / "runs"), "--model.init_args.encoder.pretrained", weights])
    (out,) = (tmp_path / "runs" / "clip__synth-id").glob("*/embeddings")
    gallery, queries = np.load(out / "gallery.npy"), np.load(out / "queries.npy")
    ids = (out / "gallery_ids.txt").read_text().split()
    meta = json.loads((out / "meta.json").read_text())
    assert gallery.shape == (len(ids), meta["dim"]) and queries.shape[0] == len((out / "query_ids.txt").read_text().split())
    np.testing.assert_allclose(np.linalg.norm(gallery, axis=1), 1.0, atol=1e-5)
    assert meta["split"] == "test" and [json.loads(line)["item_id"] for line in (out / "gallery.jsonl").open()] == ids


def test_stage_artefact_provenance_and_ckpt_best_of_the_same_seed(tiny_world, weights, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    stage1 = str(REPO / "configs/experiment/clip4cir-stage1__synth-cir.yaml")
    stage2 = str(REPO / "configs/experiment/clip4cir__synth-cir.yaml")
    steps = ["--trainer.limit_train_batches", "2", "--trainer.max_epochs", "1"]  # validated: a best checkpoint
    for seed in ("0", "1"):
        cli(["fit", "--config", stage1, *tiny(tiny_world, runs), *steps, "--seed_everything", seed,
             "--model.init_args.encoder.pretrained", weights])
    (published,) = (runs / "clip4cir-stage1__synth-cir").glob("*_seed1/published")
    stage = json.loads((published / "stage.json").read_text())
    assert stage["seed"] == 1 and stage["selected"] == "best" and stage["files"]["encoder"]["sha256"] == sha256(published / "encoder.pt")
    cli(["fit", "--config", stage2, *tiny(tiny_world, runs), *steps, "--seed_everything", "1"])
    (result,) = [json.loads(p.read_text()) for p in (runs / "clip4cir__synth-cir").glob("*/results.json")]
    loaded = result["stage_inputs"]["encoder.pretrained"]
    assert loaded["path"] == str(published / "encoder.pt") and loaded["sha256"] == stage["files"]["encoder"]["sha256"]
    assert loaded["run"] == str(published.parent.resolve())
    cli(["test", "--config", stage2, *tiny(tiny_world, tmp_path / "tested"), "--seed_everything", "1",
         "--trainer.default_root_dir", str(runs), "--ckpt_path", "best"])
    tested = [json.loads(p.read_text()) for p in (runs / "clip4cir__synth-cir").glob("*/results.json")]
    (test,) = [r for r in tested if r["split"] == "test"]
    assert test["seed"] == 1 and "_seed1" in test["ckpt_path"]


def test_run_killed_mid_epoch_resumes_to_the_same_metrics(tiny_world, weights, tmp_path, monkeypatch):
    """tiny synth-t2i: 8 steps per epoch at batch 16. The killed run dies at step 5 (last.ckpt written at step 4
    by the periodic checkpoint), then resumes to step 10 like an uninterrupted run."""
    from fashion_bench.lightning_cli import PeriodicLastCheckpoint

    monkeypatch.chdir(tmp_path)
    config = str(REPO / "configs/experiment/clip__synth-t2i.yaml")
    common = ["--config", config, "--model.init_args.encoder.pretrained", weights, "--model.init_args.publish_to", "null",
              "--model.init_args.optim.schedule", "constant", "--model.init_args.optim.warmup_steps", "0",
              "--last_checkpoint.every_n_steps", "2", "--trainer.max_epochs", "2"]
    cli(["fit", *common, *tiny(tiny_world, tmp_path / "whole"), "--trainer.max_steps", "10"])

    class Killed(RuntimeError):
        pass

    original = PeriodicLastCheckpoint.on_train_batch_end

    def die_at_step_5(self, trainer, *args):
        original(self, trainer, *args)
        if trainer.global_step == 5:
            raise Killed

    monkeypatch.setattr(PeriodicLastCheckpoint, "on_train_batch_end", die_at_step_5)
    with pytest.raises(Killed):
        cli(["fit", *common, *tiny(tiny_world, tmp_path / "parts"), "--trainer.max_steps", "10"])
    monkeypatch.setattr(PeriodicLastCheckpoint, "on_train_batch_end", original)
    (last,) = (tmp_path / "parts" / "clip__synth-t2i").glob("*/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=True)["global_step"] == 4
    cli(["fit", *common, *tiny(tiny_world, tmp_path / "parts"), "--trainer.max_steps", "10", "--ckpt_path", "last"])
    (a,) = [json.loads(p.read_text()) for p in (tmp_path / "whole" / "clip__synth-t2i").glob("*/results.json")]
    (b,) = [json.loads(p.read_text()) for p in (tmp_path / "parts" / "clip__synth-t2i").glob("*/results.json")]
    assert a["global_step"] == b["global_step"] == 10
    for name, value in a["metrics"].items():
        assert b["metrics"][name] == pytest.approx(value, abs=1e-6), name
