"""CLIP4Cir: the Combiner, both stages' training, frozen / cached stage 2, and the stage chain through the CLI."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from fashion_bench.methods.base import EncoderConfig, OptimConfig
from fashion_bench.methods.clip4cir import Clip4CirCombiner, Clip4CirFinetune, Combiner, FeatureCache

REPO = Path(__file__).resolve().parents[2]
CAPTIONS = ["is red instead of blue", "has stripes", "is longer", "is dotted and green", "has short sleeves", "is black"]


def triplet_batch(encoder, size: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(size + 1, 3, 64, 64, generator=g)
    return {
        "reference": images[:-1],
        "text": encoder.tokenize([CAPTIONS[i % len(CAPTIONS)] for i in range(size)]),
        "target": images[1:],  # each target is the next triplet's reference: shared images across roles
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


class Record(pl.Callback):
    """Losses of every step, and whether the encoder / head were in train mode during the steps."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.modes: set[tuple[bool, bool]] = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        head = getattr(pl_module, "combiner", pl_module)
        self.modes.add((pl_module.encoder.training, head.training))


def fit_on(method, batch: dict[str, torch.Tensor], steps: int) -> Record:
    record = Record()
    trainer = pl.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=[record],
    )
    trainer.fit(method, train_dataloaders=DataLoader(Repeat(batch, steps), batch_size=None))
    return record


def attached(method):
    """A method with a (non-fitting) Trainer, as its loss gathers across ranks."""
    method.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    return method


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tiny_encoder) -> str:
    from fashion_bench.encoders import export_open_clip_checkpoint

    return str(export_open_clip_checkpoint(tiny_encoder, tmp_path_factory.mktemp("clip") / "clip.pt"))


def stage2(pretrained: str, **kwargs) -> Clip4CirCombiner:
    torch.manual_seed(0)
    return Clip4CirCombiner(EncoderConfig(pretrained=pretrained), OptimConfig(lr=1e-3, weight_decay=0.0, schedule="constant"), **kwargs)


def test_combiner_shapes_normalised_output_and_gate():
    torch.manual_seed(0)
    combiner = Combiner(16).eval()
    assert combiner.image_projection[0].out_features == 64 and combiner.mlp[0].out_features == 128
    image, text = torch.randn(5, 16) * 3, torch.randn(5, 16) * 3
    out = combiner(image, text)
    assert out.shape == (5, 16)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5))
    raw, gate = combiner.combine(image, text)
    assert gate.shape == (5, 1) and bool(((gate >= 0) & (gate <= 1)).all())
    residual = combiner.mlp(torch.cat([combiner.text_projection(text), combiner.image_projection(image)], dim=-1))
    torch.testing.assert_close(raw, residual + gate * text + (1 - gate) * image)


def test_feature_cache_encodes_each_distinct_row_once():
    calls: list[int] = []

    def encode(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return x.float().sum(dim=-1, keepdim=True)

    cache = FeatureCache()
    a = torch.tensor([[1, 2], [3, 4], [1, 2]])
    torch.testing.assert_close(cache(a, encode), encode(a))
    calls.clear()
    b = torch.tensor([[3, 4], [5, 6]])
    torch.testing.assert_close(cache(b, encode), torch.tensor([[7.0], [11.0]]))
    assert calls == [1] and len(cache) == 3  # only [5, 6] was new


def test_feature_cache_is_bounded_and_drops_the_oldest_rows():
    """Augmented images are new inputs at every step: the cache must not grow without bound."""
    cache = FeatureCache(capacity=2)
    rows = torch.arange(10).reshape(5, 2)
    torch.testing.assert_close(cache(rows, lambda x: x.float().sum(-1, keepdim=True)), rows.float().sum(-1, keepdim=True))
    assert len(cache) == 2 and list(cache.store) == FeatureCache.keys(rows[3:])
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        FeatureCache(capacity=0)


def test_stage1_loss_decreases_on_one_batch(tiny_encoder):
    torch.manual_seed(0)
    method = Clip4CirFinetune(EncoderConfig(), OptimConfig(lr=1e-4, schedule="constant"))
    record = fit_on(method, triplet_batch(tiny_encoder), steps=5)
    assert record.losses[-1] < 0.5 * record.losses[0], record.losses
    assert not method.encoder.logit_scale.requires_grad


def test_stage1_query_is_normalised_sum_of_raw_features(tiny_encoder):
    method = Clip4CirFinetune().eval()
    batch = triplet_batch(tiny_encoder, size=3)
    image = method.encode_images(batch["reference"])
    text = method.encoder.encode_text(batch["text"], normalize=False)
    expected = torch.nn.functional.normalize(image + text, dim=-1)
    torch.testing.assert_close(method.encode_query({"text": batch["text"], "image_features": image}), expected)


def test_grad_checkpointing_gives_the_same_gradients(tiny_encoder):
    batch = triplet_batch(tiny_encoder, size=4)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        method = attached(Clip4CirFinetune(EncoderConfig(grad_checkpointing=checkpointing)))
        assert method.encoder.clip.visual.transformer.grad_checkpointing is checkpointing
        assert method.encoder.clip.transformer.grad_checkpointing is checkpointing
        method.composed_loss(batch).backward()
        grads.append(torch.cat([p.grad.flatten() for p in method.encoder.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_stage1_trains_only_the_unfrozen_encoder(tiny_encoder):
    torch.manual_seed(0)
    method = Clip4CirFinetune(EncoderConfig(freeze_image=True), OptimConfig(lr=1e-3))
    image_before = [p.detach().clone() for p in method.encoder.image_parameters()]
    text_before = [p.detach().clone() for p in method.encoder.text_parameters()]
    fit_on(method, triplet_batch(tiny_encoder), steps=2)
    assert all(torch.equal(a, b) for a, b in zip(image_before, method.encoder.image_parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(text_before, method.encoder.text_parameters()))


def test_logit_scale_switch_fixed_100_or_the_clips_own(tiny_encoder):
    """The paper's fixed 100 never trains; ``logit_scale=None`` uses (and in stage 1 trains) the CLIP's scale."""
    from fashion_bench.losses import contrastive_loss

    batch = triplet_batch(tiny_encoder)
    fixed = Clip4CirFinetune(EncoderConfig(), OptimConfig())
    own = Clip4CirFinetune(EncoderConfig(), OptimConfig(), logit_scale=None)
    own.encoder.load_state_dict(fixed.encoder.state_dict())
    assert fixed.loss_scale() == 100.0 and not fixed.encoder.logit_scale.requires_grad
    assert own.encoder.logit_scale.requires_grad and own.hparams["logit_scale"] is None
    clip_scale = own.encoder.logit_scale.exp().clamp(max=100)
    torch.testing.assert_close(own.loss_scale(), clip_scale)
    query, target = own.query_and_target(batch)
    expected = contrastive_loss(query, torch.nn.functional.normalize(target, dim=-1), clip_scale,
                                query_labels=batch["target_key"], target_labels=batch["target_key"], symmetric=False)
    torch.testing.assert_close(own.composed_loss(batch), expected)
    own.composed_loss(batch).backward()
    assert own.encoder.logit_scale.grad is not None


def test_stage2_trains_the_combiner_with_frozen_encoders_in_eval_mode(tiny_encoder, pretrained):
    method = stage2(pretrained)
    encoder_before = {k: v.clone() for k, v in method.encoder.state_dict().items()}
    combiner_before = {k: v.clone() for k, v in method.combiner.state_dict().items()}
    record = fit_on(method, triplet_batch(tiny_encoder), steps=25)
    assert record.losses[-1] < 0.5 * record.losses[0], record.losses
    assert record.modes == {(False, True)}  # encoder in eval, Combiner in train mode, in every step
    for name, value in method.encoder.state_dict().items():
        assert torch.equal(value, encoder_before[name]), name
    assert any(not torch.equal(v, combiner_before[k]) for k, v in method.combiner.state_dict().items())


def test_stage2_cached_loss_equals_uncached_loss(tiny_encoder, pretrained):
    cached, uncached = stage2(pretrained), stage2(pretrained, cache_features=False)
    uncached.load_state_dict(cached.state_dict())
    cached, uncached = attached(cached).eval(), attached(uncached).eval()  # dropout off: losses comparable
    batch = triplet_batch(tiny_encoder)
    with torch.no_grad():
        expected = uncached.composed_loss(batch)
        first = cached.composed_loss(batch)  # fills the caches
        assert len(cached.image_cache) == 7 and len(cached.text_cache) == 6  # 7 distinct images over 12 slots
        second = cached.composed_loss(batch)  # every feature from the caches
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected)


def test_stage_chain_through_the_cli(tiny_world, pretrained, tmp_path):
    """Stage 1 fits and publishes its encoder; stage 2, built from its own config, loads exactly those weights."""
    from fashion_bench.lightning_cli import run

    published = tmp_path / "weights" / "stage1.pt"
    common = [
        "--data.root", str(tiny_world.parent), "--data.synthetic_preset", "tiny", "--data.num_workers", "0",
        "--data.batch_size", "16", "--trainer.max_steps", "2", "--trainer.max_epochs", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "runs"),
    ]
    stage1_config = str(REPO / "configs/experiment/clip4cir-stage1__synth-cir.yaml")
    stage2_config = str(REPO / "configs/experiment/clip4cir__synth-cir.yaml")
    assert run(["fit", "--config", stage1_config, *common, "--model.init_args.encoder.pretrained", pretrained,
                "--model.init_args.publish_to", str(published)]) == 0
    assert run(["fit", "--config", stage2_config, *common, "--model.init_args.encoder.pretrained", str(published)]) == 0

    exported = torch.load(published, weights_only=True)["state_dict"]
    initial = torch.load(pretrained, weights_only=True)["state_dict"]
    assert any(not torch.equal(exported[k], initial[k]) for k in exported)  # stage 1 did train
    (ckpt,) = (tmp_path / "runs" / "clip4cir__synth-cir").glob("*/checkpoints/last.ckpt")
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert any(k.startswith("combiner.") for k in state)
    for name, value in exported.items():
        assert torch.equal(state[f"encoder.clip.{name}"], value), name
