"""FashionKLIP: the concept loss (padding never enters it), lambda, bad settings, and 2-process DDP = 1 process."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fashion_bench.kg.chunker import RuleChunker
from fashion_bench.methods.fashionklip import FashionKlipMethod, concept_loss, synonym_pairs

REPO = Path(__file__).resolve().parents[2]


def _inputs(seed: int = 0, batch: int = 6, slots: int = 5, concepts: int = 7, keep: int = 10, dim: int = 16):
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(batch, dim, generator=g), dim=-1)
    ids = torch.randint(concepts, (batch, slots), generator=g)
    ids[:, 3:] = -1
    ids[0, 1:] = -1
    text = F.normalize(torch.randn(batch, slots, dim, generator=g), dim=-1)
    table = F.normalize(torch.randn(concepts, keep, dim, generator=g), dim=-1)
    return image, ids, text, table


def test_padding_never_enters_the_concept_loss():
    image, ids, text, table = _inputs()
    loss = concept_loss(image, ids, text, table, torch.tensor(10.0), top=5)
    assert loss is not None and torch.isfinite(loss)
    noisy = text.clone()
    noisy[ids < 0] = torch.randn_like(noisy[ids < 0])
    assert concept_loss(image, ids, noisy, table, torch.tensor(10.0), top=5) == pytest.approx(loss.item(), abs=1e-6)
    assert concept_loss(image, torch.full_like(ids, -1), text, table, torch.tensor(10.0), top=5) is None


def test_concept_loss_trains_the_concept_texts_and_drops_with_alignment():
    image, ids, text, table = _inputs()
    text.requires_grad_(True)
    loss = concept_loss(image, ids, text, table, torch.tensor(10.0), top=5)
    loss.backward()
    assert text.grad[ids >= 0].abs().sum() > 0 and text.grad[ids < 0].abs().sum() == 0
    aligned = F.normalize(table.mean(1), dim=-1)[ids.clamp_min(0)]  # concept text = its prototypes' mean
    assert concept_loss(image, ids, aligned, table, torch.tensor(10.0), top=5) < loss


def test_synonyms_are_concepts_sharing_enough_kept_images():
    index = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 9], [5, 6, 7, 8]])
    ids = torch.tensor([0, 1, 2, 0])
    assert synonym_pairs(ids, index, 0.0).tolist() == (ids[:, None] == ids[None, :]).tolist()
    pairs = synonym_pairs(ids, index, 0.75)  # concepts 0 and 1 share 3 of 4 images
    assert pairs[0, 1] and pairs[1, 3] and not pairs[0, 2] and not pairs[1, 2] and bool(pairs.diagonal().all())
    assert not synonym_pairs(ids, index, 1.0)[0, 1]


def test_synonyms_count_as_one_concept_in_the_loss():
    """Two concepts with the same images and synonym_overlap > 0 give the loss of one concept under both ids."""
    image, ids, text, table = _inputs()
    table[2] = table[1]
    index = torch.arange(table.shape[0] * table.shape[1]).view(table.shape[:2])
    index[2] = index[1]
    merged = ids.clone()
    merged[merged == 2] = 1
    assert bool((ids == 2).any()) and bool((ids == 1).any())
    plain = concept_loss(image, ids, text, table, torch.tensor(10.0), top=5)
    synonyms = concept_loss(image, ids, text, table, torch.tensor(10.0), top=5, table_index=index, synonym_overlap=0.5)
    one = concept_loss(image, merged, text, table, torch.tensor(10.0), top=5)
    assert synonyms == pytest.approx(one.item(), abs=1e-6) and synonyms != pytest.approx(plain.item(), abs=1e-4)
    with pytest.raises(ValueError, match="synonym_overlap needs the table's image indices"):
        concept_loss(image, ids, text, table, torch.tensor(10.0), top=5, synonym_overlap=0.5)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"slots": 0}, "slots and prototypes must be >= 1"), ({"lambda_ratio": 0.0}, "lambda_ratio > 0"),
     ({"prototypes": 11}, r"prototypes \(11\) exceeds the images kept per concept \(10\)"),
     ({"table_features": "cache"}, r"table_features must be one of \('encode', 'steps'\), got 'cache'"),
     ({"synonym_overlap": 1.5}, r"synonym_overlap must be in \[0, 1\], got 1.5")],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FashionKlipMethod(**kwargs)


def test_batches_without_concepts_are_refused():
    method = FashionKlipMethod()
    with pytest.raises(ValueError, match="training batches carry no 'concepts'"):
        method.training_step({"image": torch.zeros(2, 3, 64, 64), "text": torch.zeros(2, 77, dtype=torch.long)}, 0)


def test_bad_kg_folder_is_named(tmp_path):
    method = FashionKlipMethod(kg=str(tmp_path))
    with pytest.raises(ValueError, match="concepts.jsonl: cannot read the knowledge-graph file"):
        method.load_graph()


def test_a_graph_mined_with_another_chunker_is_refused(tmp_path):
    """`chunker: auto` is spaCy where it is installed and the rules elsewhere: a graph mined on one machine and
    trained on the other would match texts to other concepts."""
    (tmp_path / "summary.json").write_text(json.dumps({"chunker_used": "spacy", "settings": {"max_words": 6}}))
    method = FashionKlipMethod(kg=str(tmp_path))
    with pytest.raises(ValueError, match=r"summary.json: the graph was mined with the 'spacy' chunker \(max_words 6\), but this run .* 'rule' chunker .*kg_settings.chunker spacy"):
        method.check_chunker(RuleChunker(6))
    (tmp_path / "summary.json").write_text(json.dumps({"chunker_used": "rule", "settings": {"max_words": 4}}))
    with pytest.raises(ValueError, match=r"mined with the 'rule' chunker \(max_words 4\).*\(max_words 6\)"):
        method.check_chunker(RuleChunker(6))
    method.check_chunker(RuleChunker(4))


@pytest.mark.parametrize("table_features, encodes", [("encode", 2), ("steps", 1)])
def test_tables_reuse_the_training_steps_features_when_asked(tiny_world, tiny_encoder, tmp_path, table_features, encodes):
    import lightning.pytorch as pl

    from fashion_bench.data.datamodule import FashionDataModule
    from fashion_bench.encoders import export_open_clip_checkpoint
    from fashion_bench.methods.base import EncoderConfig, OptimConfig

    weights = str(export_open_clip_checkpoint(tiny_encoder, tmp_path / "w.pt"))
    method = FashionKlipMethod(EncoderConfig(pretrained=weights), OptimConfig(), table_features=table_features)
    calls = []
    encode_split = method.encode_split
    method.encode_split = lambda *a, **k: calls.append(1) or encode_split(*a, **k)
    data = FashionDataModule(dataset="synth-t2i", root=str(tiny_world.parent), synthetic_preset="tiny", num_workers=0, batch_size=64)
    pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, limit_val_batches=0).fit(method, datamodule=data)
    assert len(calls) == encodes and method.table_epoch == 1
    if table_features == "steps":  # every training image was seen in epoch 1: the bank holds the steps' features
        _, fresh = encode_split("train")
        assert method.image_bank.shape == fresh.shape and not torch.allclose(method.image_bank, F.normalize(fresh, dim=-1))


def _fit(tiny_world: Path, runs: Path, weights: Path, *extra: str) -> dict[str, float]:
    command = [
        sys.executable, "-m", "fashion_bench.cli", "fit", "--config", str(REPO / "configs/experiment/fashionklip__synth-t2i.yaml"),
        "--data.root", str(tiny_world.parent), "--data.synthetic_preset", "tiny", "--data.num_workers", "0",
        "--model.init_args.encoder.pretrained", str(weights), "--trainer.max_steps", "1", "--trainer.log_every_n_steps", "1",
        "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(runs), "--trainer.enable_progress_bar", "false",
        "--trainer.accelerator", "cpu", *extra,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=runs.parent, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = runs.glob("*/*/metrics.csv")
    rows = [r for r in csv.DictReader(path.open()) if r.get("train/loss")]
    return {k: float(v) for k, v in rows[0].items() if k.startswith("train/") and v}


@pytest.mark.timeout(600)
def test_two_process_ddp_loss_equals_one_process(tiny_world, tiny_encoder, tmp_path):
    from fashion_bench.encoders import export_open_clip_checkpoint

    weights = export_open_clip_checkpoint(tiny_encoder, tmp_path / "w.pt")
    one = _fit(tiny_world, tmp_path / "one", weights, "--data.batch_size", "16")
    two = _fit(tiny_world, tmp_path / "two", weights, "--data.batch_size", "8", "--trainer.strategy", "ddp", "--trainer.devices", "2")
    assert one["train/concept_loss"] > 0 and 0 < one["train/lambda"] <= 1
    for name in ("train/loss", "train/clip_loss", "train/concept_loss", "train/lambda"):
        assert two[name] == pytest.approx(one[name], rel=1e-4), name
