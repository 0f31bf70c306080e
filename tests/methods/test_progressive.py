"""Progressive learning: stage 2's weighted tasks and heads, stage 3's weighting, its frozen target, and bad input."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from fashion_bench.data.datamodule import FashionDataModule
from fashion_bench.methods.base import EncoderConfig, OptimConfig
from fashion_bench.methods.clip import ClipMethod
from fashion_bench.methods.progressive import (
    Progressive,
    ProgressiveStage2,
    QueryWeighting,
    RecognitionHeads,
    Stage2Tasks,
    WeightingTarget,
    compose,
)

CAPTIONS = ["is red instead of blue", "has stripes", "is longer", "is dotted and green", "has short sleeves", "is black"]
ATTRIBUTES = ["category", "colour", "pattern", "length"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tiny_encoder) -> str:
    from fashion_bench.encoders import export_open_clip_checkpoint

    return str(export_open_clip_checkpoint(tiny_encoder, tmp_path_factory.mktemp("clip") / "clip.pt"))


def triplet_batch(encoder, size: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(size + 1, 3, 64, 64, generator=g)
    return {
        "reference": images[:-1],
        "text": encoder.tokenize([CAPTIONS[i % len(CAPTIONS)] for i in range(size)]),
        "target": images[1:],
        "target_key": torch.arange(size),
        "index": torch.arange(size),
        "image_ok": torch.ones(size, dtype=torch.bool),
    }


class Repeat(Dataset):
    def __init__(self, batch: dict[str, torch.Tensor], steps: int) -> None:
        self.batch, self.steps = batch, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batch


class Losses(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def trainer(steps: int, callbacks=(), precision: str = "32") -> pl.Trainer:
    return pl.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=list(callbacks), precision=precision,
    )


def fit_triplets(method: Progressive, batch: dict[str, torch.Tensor], steps: int, precision: str = "32") -> Losses:
    record = Losses()
    trainer(steps, [record], precision).fit(method, train_dataloaders=DataLoader(Repeat(batch, steps), batch_size=None))
    return record


def t2i_data(tiny_world: Path) -> FashionDataModule:
    return FashionDataModule(dataset="synth-t2i", root=str(tiny_world.parent), synthetic_preset="tiny", num_workers=0, batch_size=8)


def fit_stage2(method: ProgressiveStage2, tiny_world: Path, steps: int = 2) -> pl.Trainer:
    run = trainer(steps)
    run.fit(method, datamodule=t2i_data(tiny_world))
    return run


def stage3(pretrained: str, **kwargs) -> Progressive:
    torch.manual_seed(0)
    return Progressive(EncoderConfig(pretrained=pretrained), OptimConfig(lr=1e-4, schedule="constant"), **kwargs)


# --- stage 3: weighting ------------------------------------------------------------------------------------------
def test_weightings_sum_to_one_and_start_at_half():
    torch.manual_seed(0)
    image, text = F.normalize(torch.randn(5, 16), dim=-1), F.normalize(torch.randn(5, 16), dim=-1)
    for mode in ("adaptive", "fixed", "global"):
        weights = QueryWeighting(16, mode)(image, text)
        assert weights.shape == (5, 2)
        torch.testing.assert_close(weights, torch.full((5, 2), 0.5))
    assert not list(QueryWeighting(16, "fixed").parameters())
    assert [p.shape for p in QueryWeighting(16, "global").parameters()] == [torch.Size([2])]


def test_adaptive_weights_differ_per_query_and_do_not_train_the_features():
    torch.manual_seed(0)
    weighting = QueryWeighting(8, "adaptive", hidden_dim=4)
    torch.nn.init.normal_(weighting.mlp[-1].weight)
    image = torch.randn(4, 8, requires_grad=True)
    weights = weighting(image, torch.randn(4, 8))
    torch.testing.assert_close(weights.sum(-1), torch.ones(4))
    assert weights[:, 0].unique().numel() == 4
    weights[:, 0].sum().backward()
    assert image.grad is None  # the MLP sees detached features


def test_fixed_weighting_composes_like_the_clip_baseline(pretrained, tiny_encoder):
    method, baseline = stage3(pretrained, weighting="fixed").eval(), ClipMethod(EncoderConfig(pretrained=pretrained)).eval()
    batch = triplet_batch(tiny_encoder, size=3)
    features = method.encode_images(batch["reference"])
    query = {"text": batch["text"], "image_features": features}
    torch.testing.assert_close(method.encode_query(query), baseline.encode_query(query))


def test_compose_is_normalised_weighted_sum():
    image, text = F.normalize(torch.randn(3, 4), dim=-1), F.normalize(torch.randn(3, 4), dim=-1)
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.25, 0.75]])
    out = compose(image, text, weights)
    torch.testing.assert_close(out[0], image[0])
    torch.testing.assert_close(out[1], text[1])
    torch.testing.assert_close(out[2], F.normalize(0.25 * image[2] + 0.75 * text[2], dim=0))


# --- stage 3: the self-supervised target ---------------------------------------------------------------------------
def test_weighting_target_is_a_softmax_of_the_frozen_similarities(tiny_encoder):
    encoder = tiny_encoder.eval()
    batch = triplet_batch(encoder, size=4)
    plain = WeightingTarget(encoder, temperature=0.1, center=False)
    sims = plain.similarities(batch["reference"], batch["text"], batch["target"])
    reference = encoder.encode_image(batch["reference"])
    target, text = encoder.encode_image(batch["target"]), encoder.encode_text(batch["text"])
    expected = torch.stack([(target * reference).sum(-1), (target * text).sum(-1)], dim=-1)
    torch.testing.assert_close(sims, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(plain(batch["reference"], batch["text"], batch["target"]), (expected / 0.1).softmax(-1), rtol=1e-4, atol=1e-5)
    centred = WeightingTarget(encoder, temperature=0.1, center=True)
    torch.testing.assert_close(
        centred(batch["reference"], batch["text"], batch["target"]), ((expected - expected.mean(0)) / 0.1).softmax(-1), rtol=1e-4, atol=1e-5,
    )
    assert len(plain.images) == 5 and len(plain.texts) == 4  # targets are the next references: 5 distinct images


def test_centred_target_of_one_rank_equals_one_process_with_the_whole_batch(tiny_encoder):
    """Under DDP each rank holds part of the batch: the centre is the mean over every rank's similarities."""
    encoder = tiny_encoder.eval()
    batch = triplet_batch(encoder, size=8)
    target = WeightingTarget(encoder, temperature=0.1, center=True)
    whole = target(batch["reference"], batch["text"], batch["target"])
    everyone = target.similarities(batch["reference"], batch["text"], batch["target"])
    for rank in (slice(0, 4), slice(4, 8)):
        part = target(batch["reference"][rank], batch["text"][rank], batch["target"][rank], gather=lambda _: everyone)
        torch.testing.assert_close(part, whole[rank])
    assert not torch.allclose(target(batch["reference"][:4], batch["text"][:4], batch["target"][:4]), whole[:4])


def test_stage3_trains_in_bf16_true_with_the_target_copy_converted_too(pretrained, tiny_encoder):
    method = stage3(pretrained)
    record = fit_triplets(method, triplet_batch(tiny_encoder), steps=1, precision="bf16-true")
    assert next(method.target.encoder.parameters()).dtype == torch.bfloat16
    assert all(math.isfinite(loss) for loss in record.losses)


def test_target_uses_a_frozen_copy_of_the_start_encoders_outside_the_checkpoint(pretrained, tiny_encoder):
    method = stage3(pretrained)
    start = {k: v.clone() for k, v in method.encoder.state_dict().items()}
    record = fit_triplets(method, triplet_batch(tiny_encoder), steps=4)
    assert record.losses[-1] < record.losses[0], record.losses
    frozen = method.target.encoder.state_dict()
    assert all(torch.equal(frozen[k], v) for k, v in start.items())
    assert any(not torch.equal(method.encoder.state_dict()[k], v) for k, v in start.items())  # the encoders train
    assert not any(p.requires_grad for p in method.target.encoder.parameters())
    assert not any(k.startswith("target") for k in method.state_dict())
    assert any(k.startswith("weighting.mlp") for k in method.state_dict())


def test_ablations_need_no_frozen_copy(pretrained, tiny_encoder):
    for kwargs in ({"weighting": "fixed"}, {"weighting": "global"}, {"weighting_loss": 0.0}):
        method = stage3(pretrained, **kwargs)
        fit_triplets(method, triplet_batch(tiny_encoder), steps=1)
        assert method.target is None, kwargs
    assert stage3(pretrained, weighting="fixed").default_lr_groups() == {}


def test_weighting_loss_pulls_weights_towards_the_target(pretrained, tiny_encoder):
    """With the retrieval loss off (lr 0 for the encoders), the MLP learns the per-query target."""
    method = stage3(pretrained, target_temperature=0.02)
    method.optim = OptimConfig(lr=0.0, schedule="constant", lr_groups={"weighting.": 1e-2})
    batch = triplet_batch(tiny_encoder)
    fit_triplets(method, batch, steps=80)
    method.eval()
    goal = method.target(batch["reference"], batch["text"], batch["target"])
    with torch.no_grad():
        weights = method.query_weights(method.encode_images(batch["reference"]), method.encoder.encode_text(batch["text"], normalize=False))
    assert (weights - goal).abs().max() < 0.15, (weights, goal)


# --- stage 3: bad input -------------------------------------------------------------------------------------------
def test_stage3_bad_arguments_are_named(pretrained):
    with pytest.raises(ValueError, match=r"unknown weighting 'learned'; expected one of \('adaptive', 'fixed', 'global'\)"):
        stage3(pretrained, weighting="learned")
    with pytest.raises(ValueError, match="weighting_loss must be >= 0, got -1"):
        stage3(pretrained, weighting_loss=-1.0)
    with pytest.raises(ValueError, match="target_temperature must be > 0, got 0"):
        stage3(pretrained, target_temperature=0.0)


def test_stage3_bad_batches_are_named(pretrained, tiny_encoder):
    method = stage3(pretrained)
    with pytest.raises(ValueError, match=r"Progressive trains on composed triplets \(task 'cir'\); got a batch with keys \['image', 'label', 'text'\]"):
        method.training_step({"image": torch.zeros(2, 3, 64, 64), "text": tiny_encoder.tokenize(["a", "b"]), "label": torch.arange(2)}, 0)
    with pytest.raises(ValueError, match=r"Progressive embeds composed queries: a batch needs 'text' and 'image_features', got \['text'\]"):
        method.encode_query({"text": tiny_encoder.tokenize(["a"])})


def test_stage3_refuses_text_to_image_data(pretrained, tiny_world):
    with pytest.raises(ValueError, match=r"method 'progressive' \(Progressive\) does not support task 't2i' of dataset 'synth-t2i'"):
        trainer(1).fit(stage3(pretrained), datamodule=t2i_data(tiny_world))


# --- stage 3: per-query weights exported on test -----------------------------------------------------------------
def evaluate_cir(method, tiny_world: Path, run_dir: Path) -> FashionDataModule:
    from fashion_bench.retrieval.callback import RetrievalEvaluator

    data = FashionDataModule(dataset="synth-cir", root=str(tiny_world.parent), synthetic_preset="tiny", num_workers=0, batch_size=8)
    pl.Trainer(accelerator="cpu", default_root_dir=str(run_dir), logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, callbacks=[RetrievalEvaluator(progress=False)]).test(method, datamodule=data)
    return data


def test_test_run_exports_each_querys_weights_with_its_change(pretrained, tiny_world, tmp_path):
    from fashion_bench.contracts import QUERY_DIAGNOSTICS_NAME
    from fashion_bench.retrieval.diagnostics import read_query_diagnostics

    method = stage3(pretrained)
    torch.nn.init.normal_(method.weighting.mlp[-1].weight, std=1.0)  # weights that differ per query
    split = evaluate_cir(method, tiny_world, tmp_path).split("test")
    rows = read_query_diagnostics(tmp_path / QUERY_DIAGNOSTICS_NAME)
    assert [r["query_id"] for r in rows] == [q.query_id for q in split.queries]
    weights = torch.tensor([[r["values"]["w_image"], r["values"]["w_text"]] for r in rows])
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(rows)))
    assert weights[:, 1].std() > 1e-3
    for row, query in zip(rows, split.queries):
        reference, target = split.items[query.image].attributes, split.items[query.positives[0]].attributes
        assert row["category"] == query.category
        assert row["changed"].split("+") == sorted(k for k in reference if reference[k] != target[k])
    assert {c for r in rows for c in r["changed"].split("+")} <= {"colour", "pattern", "length"}


def test_methods_without_diagnostics_write_none(pretrained, tiny_world, tmp_path):
    from fashion_bench.contracts import QUERY_DIAGNOSTICS_NAME

    evaluate_cir(ClipMethod(EncoderConfig(pretrained=pretrained)), tiny_world, tmp_path)
    assert (tmp_path / "results.json").is_file() and not (tmp_path / QUERY_DIAGNOSTICS_NAME).exists()


# --- stage 2 ---------------------------------------------------------------------------------------------------------
def test_recognition_heads_ignore_unknown_labels():
    torch.manual_seed(0)
    heads = RecognitionHeads(8, {"category": 3})
    features = torch.randn(4, 8)
    labels = torch.tensor([0, -1, 2, -1])
    logits = heads.classifiers["category"](F.normalize(features, dim=-1))
    torch.testing.assert_close(heads.loss("category", features, labels), F.cross_entropy(logits[[0, 2]], labels[[0, 2]]))
    none = heads.loss("category", features, torch.full((4,), -1))
    assert none.item() == 0.0 and none.requires_grad


def test_stage2_views_follow_the_image_image_weight(pretrained):
    assert ProgressiveStage2(EncoderConfig(pretrained=pretrained)).preprocessing().views == 2
    assert ProgressiveStage2(EncoderConfig(pretrained=pretrained), tasks=Stage2Tasks(image_image=0.0)).preprocessing().views == 1


def test_stage2_fits_all_tasks_with_heads_sized_from_the_data(pretrained, tiny_world):
    torch.manual_seed(0)
    method = ProgressiveStage2(EncoderConfig(pretrained=pretrained), OptimConfig(lr=1e-4), attributes=ATTRIBUTES)
    start = [p.detach().clone() for p in method.encoder.image_parameters()]
    run = fit_stage2(method, tiny_world)
    data = run.datamodule
    assert method.hparams["label_sizes"] == {
        "category": len(data.categories), **{f"attr_{n}": len(data.attribute_vocab[n]) for n in ATTRIBUTES},
    }
    assert set(run.callback_metrics) >= {"train/image_text", "train/image_image", "train/category", "train/attributes", "train/loss"}
    assert any(not torch.equal(a, b) for a, b in zip(start, method.encoder.image_parameters()))
    assert method.param_groups()[0]["lr"] in (1e-4, 1e-3) and {g["lr"] for g in method.param_groups()} == {1e-4, 1e-3}
    rebuilt = ProgressiveStage2(attributes=ATTRIBUTES, label_sizes=method.hparams["label_sizes"])
    rebuilt.load_state_dict(method.state_dict())  # the recorded label sizes rebuild the heads


def test_stage2_with_only_the_contrastive_task_has_no_heads(pretrained, tiny_world):
    method = ProgressiveStage2(EncoderConfig(pretrained=pretrained), tasks=Stage2Tasks(attributes=0, category=0, image_image=0))
    run = fit_stage2(method, tiny_world, steps=1)
    assert method.heads is None and "train/image_image" not in run.callback_metrics


def test_stage2_bad_task_weights_are_named():
    with pytest.raises(ValueError, match=r"task weights must be non-negative numbers, got \{'category': -1\.0\}"):
        Stage2Tasks(category=-1.0)
    with pytest.raises(ValueError, match="every task weight is 0"):
        Stage2Tasks(image_text=0, attributes=0, category=0, image_image=0)


def test_stage2_unknown_attribute_is_named(pretrained, tiny_world):
    method = ProgressiveStage2(EncoderConfig(pretrained=pretrained), attributes=["colour", "sparkle"])
    with pytest.raises(ValueError, match=r"attributes \['sparkle'\] are not attributes of the training split of dataset 'synth-t2i' \(it has \[.*'colour'"):
        fit_stage2(method, tiny_world)


def test_stage2_label_size_mismatch_is_named(pretrained, tiny_world):
    method = ProgressiveStage2(EncoderConfig(pretrained=pretrained), attributes=["colour"], label_sizes={"category": 99, "attr_colour": 2})
    with pytest.raises(ValueError, match=r"label_sizes \{'category': 99, 'attr_colour': 2\} do not match the training split of dataset 'synth-t2i'"):
        fit_stage2(method, tiny_world)


def test_stage2_bad_batches_are_named(pretrained, tiny_encoder):
    method = ProgressiveStage2(EncoderConfig(pretrained=pretrained), tasks=Stage2Tasks(image_image=0), label_sizes={"category": 2, "attr_colour": 3})
    method.attribute_columns = {"attr_colour": 0}
    batch = {"image": torch.zeros(2, 3, 64, 64), "text": tiny_encoder.tokenize(["a", "b"]), "label": torch.arange(2), "category": torch.zeros(2, dtype=torch.long)}
    with pytest.raises(ValueError, match="tasks.attributes > 0 but the training batch has no 'attributes'"):
        method.training_step(batch, 0)
    with pytest.raises(ValueError, match=r"progressive stage 2 trains on image-text products \(task 't2i'\); got a batch with keys \['reference', 'target', 'text'\]"):
        method.training_step({"reference": batch["image"], "target": batch["image"], "text": batch["text"]}, 0)
