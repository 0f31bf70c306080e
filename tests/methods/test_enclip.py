"""ENCLIP: fusion and routing as inner products, per-member rows, one-process = separate runs, gathering, clusters."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from fashion_bench.data.datamodule import FashionDataModule
from fashion_bench.encoders import PretrainedUnavailableError, export_open_clip_checkpoint
from fashion_bench.losses import contrastive_loss
from fashion_bench.methods.base import EncoderConfig, OptimConfig
from fashion_bench.methods import enclip as enclip_module
from fashion_bench.methods.enclip import ClusterConfig, Enclip, RoutingConfig, weighted_contrastive_loss
from fashion_bench.methods.ensemble import (
    augment_batch,
    bootstrap_weights,
    cluster_weights,
    fuse,
    kmeans,
    member_generator,
    routing_block,
)
from fashion_bench.retrieval import evaluate
from fashion_bench.stages import restoring_weights

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tiny_encoder) -> str:
    return str(export_open_clip_checkpoint(tiny_encoder, tmp_path_factory.mktemp("clip") / "clip.pt"))


def tiny_data(tiny_world: Path, dataset: str = "synth-t2i") -> FashionDataModule:
    return FashionDataModule(
        dataset=dataset, root=str(tiny_world.parent), synthetic_preset="tiny", num_workers=0, batch_size=8,
        eval_batch_size=64, pk_identities=4, pk_instances=2,
    )


def trainer(steps: int = 1, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, **kwargs,
    )


def method(pretrained: str, **kwargs) -> Enclip:
    kwargs.setdefault("optim", OptimConfig(lr=1e-3, weight_decay=0.0, schedule="constant"))
    return Enclip(EncoderConfig(pretrained=pretrained), **kwargs)


# --- fusion and routing are inner products ----------------------------------------------------------------------
def unit(*shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1)


def test_concat_fusion_scores_are_the_mean_of_member_cosines():
    torch.manual_seed(0)
    queries, gallery = [unit(5, 8) for _ in range(3)], [unit(7, 8) * 3 for _ in range(3)]
    expected = sum(q @ F.normalize(g, dim=-1).t() for q, g in zip(queries, gallery)) / 3
    torch.testing.assert_close(fuse(queries, "concat") @ fuse(gallery, "concat").t(), expected)


@pytest.mark.parametrize("how", ["mean", "max"])
def test_mean_and_max_fusion_pool_the_normalised_embeddings(how):
    torch.manual_seed(0)
    members = [unit(4, 6) * (k + 1) for k in range(3)]  # scale must not matter: members are normalised first
    normed = torch.stack([F.normalize(m, dim=-1) for m in members])
    pooled = normed.mean(0) if how == "mean" else normed.amax(0)
    torch.testing.assert_close(fuse(members, how), F.normalize(pooled, dim=-1))
    torch.testing.assert_close(fuse(members[:1], how), normed[0])  # one member: its own embedding
    with pytest.raises(ValueError, match="unknown fusion 'rrf'"):
        fuse(members, "rrf")


def test_routing_block_adds_exactly_the_boost_and_removes_nothing():
    torch.manual_seed(0)
    centroids = unit(4, 8)
    query_router, gallery_router = unit(6, 8), unit(20, 8)
    query, gallery = unit(6, 16), unit(20, 16)
    boost, nearest = 0.5, 2
    routed_q = torch.cat([query, routing_block(query_router, centroids, nearest, boost)], 1)
    routed_g = torch.cat([gallery, routing_block(gallery_router, centroids, 1, boost)], 1)
    query_clusters = (query_router @ centroids.t()).topk(nearest, dim=1).indices
    gallery_cluster = (gallery_router @ centroids.t()).argmax(dim=1)
    same = (query_clusters[:, :, None] == gallery_cluster[None, None, :]).any(dim=1)
    torch.testing.assert_close(routed_q @ routed_g.t() - query @ gallery.t(), boost * same.double())
    # every item keeps its place in the ranking: a positive outside the routed clusters is still found
    positives = [[int((~row).nonzero()[0])] if (~row).any() else [0] for row in same]
    result = evaluate(routed_q.float(), routed_g.float(), positives, ks=(20,))
    assert result["R@20"] == 1.0 and result["num_valid_queries"] == 6


# --- clusters and per-member rows --------------------------------------------------------------------------------
def test_kmeans_is_seeded_and_spherical():
    torch.manual_seed(0)
    features = torch.cat([unit(1, 8) + 0.05 * torch.randn(30, 8, dtype=torch.float64) for _ in range(3)]).float()
    centroids, assignment = kmeans(features, 3, seed=1)
    again, assignment_again = kmeans(features, 3, seed=1)
    assert torch.equal(centroids, again) and torch.equal(assignment, assignment_again)
    torch.testing.assert_close(centroids.norm(dim=1), torch.ones(3))
    assert sorted(torch.bincount(assignment).tolist()) == [30, 30, 30]  # the three blobs
    with pytest.raises(ValueError, match="at least 5 training images"):
        kmeans(features[:4], 5)


def test_bootstrap_weights_depend_only_on_seed_and_member():
    a, b = bootstrap_weights(1000, 0, seed=3), bootstrap_weights(1000, 1, seed=3)
    assert torch.equal(a, bootstrap_weights(1000, 0, seed=3)) and not torch.equal(a, b)
    assert a.sum() == 1000 and 0.58 < (a > 0).float().mean() < 0.68  # about 1 - 1/e of the rows in bag


def test_cluster_weights_take_the_members_cluster_and_a_share_of_the_rest():
    assignment = torch.arange(300) % 3
    own = cluster_weights(assignment, 1, 3, 0.0, seed=0)
    assert torch.equal(own, (assignment == 1).float())
    shared = cluster_weights(assignment, 1, 3, 0.25, seed=0)
    assert bool((shared[assignment == 1] == 1).all())
    assert 0.15 < shared[assignment != 1].mean() < 0.35
    assert bool((cluster_weights(assignment, 4, 3, 1.0, seed=0) == 1).all())


def test_weighted_loss_is_the_clip_loss_with_unit_weights_and_drops_zero_weight_rows():
    torch.manual_seed(0)
    image, text = unit(8, 16).float(), unit(8, 16).float()
    labels = torch.tensor([0, 1, 2, 2, 3, 4, 5, 6])
    plain = contrastive_loss(image, text, 10.0, query_labels=labels, target_labels=labels)
    torch.testing.assert_close(weighted_contrastive_loss(image, text, 10.0, labels, torch.ones(8)), plain)
    weights = torch.tensor([2.0, 1, 1, 1, 1, 1, 1, 1])  # a row drawn twice counts twice
    by_rows = weighted_contrastive_loss(image, text, 10.0, labels, torch.ones(8))
    assert not torch.allclose(weighted_contrastive_loss(image, text, 10.0, labels, weights), by_rows)


def test_member_augmentation_is_seeded_and_off_at_full_area():
    images = torch.randn(4, 3, 16, 16)
    assert augment_batch(images, member_generator(0, 1, 2), 1.0) is images
    a = augment_batch(images, member_generator(0, 1, 2), 0.5)
    assert torch.equal(a, augment_batch(images, member_generator(0, 1, 2), 0.5))
    assert not torch.allclose(a, augment_batch(images, member_generator(0, 2, 2), 0.5))


# --- the method ---------------------------------------------------------------------------------------------------
def test_switches_are_checked(pretrained):
    with pytest.raises(ValueError, match="unknown diversity"):
        method(pretrained, members=2, diversity="dropout")
    with pytest.raises(ValueError, match="clusters.k .3. must equal members .2."):
        method(pretrained, members=2, diversity="cluster", clusters=ClusterConfig(k=3))
    with pytest.raises(ValueError, match="member_ids must be distinct"):
        method(pretrained, members=2, member_ids=[0, 2])
    with pytest.raises(ValueError, match="one file per member"):
        method(pretrained, members=3, members_from=[pretrained, pretrained])
    with pytest.raises(ValueError, match="does not support task 'cir'"):
        method(pretrained, members=1).check_supports("cir", {"image+text"}, "synth-cir")


def state_of(member) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in member.state_dict().items()}


@pytest.mark.parametrize("diversity", ["bootstrap", "seed"])
def test_one_process_members_equal_members_trained_alone(tiny_world, pretrained, diversity):
    """The one-process ensemble trains each member exactly as a run of that member alone would."""
    torch.manual_seed(0)
    together = method(pretrained, members=2, diversity=diversity)
    trainer(steps=3).fit(together, datamodule=tiny_data(tiny_world))
    alone = []
    for j in (0, 1):
        torch.manual_seed(0)
        single = method(pretrained, members=2, member_ids=[j], diversity=diversity)
        trainer(steps=3).fit(single, datamodule=tiny_data(tiny_world))
        alone.append(state_of(single.members[0]))
    for j in (0, 1):
        for key, value in state_of(together.members[j]).items():
            torch.testing.assert_close(value, alone[j][key], rtol=1e-4, atol=1e-5, msg=key)
    start = EncoderConfig(pretrained=pretrained).build().state_dict()
    assert not torch.equal(alone[0]["clip.visual.conv1.weight"], start["clip.visual.conv1.weight"])  # trained
    assert not torch.allclose(alone[0]["clip.visual.conv1.weight"], alone[1]["clip.visual.conv1.weight"])  # diverse


def test_accumulated_batches_of_one_step_get_their_own_member_crops(tiny_world, pretrained, monkeypatch):
    """The crop generators are keyed by the optimiser step: with gradient accumulation the batches of one step must
    not repeat the same crops (the first batch of a step keeps the generator of a run without accumulation)."""
    seeds: list[int] = []
    original = enclip_module.augment_batch
    monkeypatch.setattr(enclip_module, "augment_batch", lambda images, generator, area: seeds.append(generator.initial_seed()) or original(images, generator, area))
    torch.manual_seed(0)
    trainer(steps=1, accumulate_grad_batches=2).fit(method(pretrained, members=1, diversity="seed"), datamodule=tiny_data(tiny_world))
    assert len(seeds) == 2 and seeds[0] != seeds[1]
    plain: list[int] = []
    monkeypatch.setattr(enclip_module, "augment_batch", lambda images, generator, area: plain.append(generator.initial_seed()) or original(images, generator, area))
    torch.manual_seed(0)
    trainer(steps=1).fit(method(pretrained, members=1, diversity="seed"), datamodule=tiny_data(tiny_world))
    assert plain == seeds[:1]


def frozen_text_method(pretrained: str, **kwargs) -> Enclip:
    kwargs.setdefault("optim", OptimConfig(lr=1e-3, weight_decay=0.0, schedule="constant"))
    return Enclip(EncoderConfig(pretrained=pretrained, freeze_text=True), **kwargs)


def test_frozen_text_towers_are_encoded_once_per_batch_with_the_same_training(tiny_world, pretrained, monkeypatch):
    """Members that fine-tune only their image towers share the pretrained text tower: one text pass per batch
    (training and queries), and every member trains exactly as with its own text pass."""
    calls = []
    torch.manual_seed(0)
    shared = frozen_text_method(pretrained, members=3, diversity="bootstrap")
    for member in shared.members:
        original = member.encode_text
        monkeypatch.setattr(member, "encode_text", lambda tokens, normalize=True, f=original: calls.append(1) or f(tokens, normalize))
    trainer(steps=2).fit(shared, datamodule=tiny_data(tiny_world))
    assert shared.shared_text and len(calls) == 2  # one text pass per step, not one per member
    monkeypatch.setattr(Enclip, "_refresh_text_sharing", lambda self: setattr(self, "shared_text", False))
    torch.manual_seed(0)
    own = frozen_text_method(pretrained, members=3, diversity="bootstrap")
    trainer(steps=2).fit(own, datamodule=tiny_data(tiny_world))
    start = EncoderConfig(pretrained=pretrained).build().state_dict()
    # the shared pass encodes the whole batch, an own pass the member's rows: the features differ by float rounding
    # (other matrix shapes and text lengths), and Adam's normalised step can turn that into up to a few % of lr on a weight whose
    # gradient is near zero; a real difference in training moves weights by whole steps of lr
    atol = 0.1 * shared.optim.lr
    for j in range(3):
        for key, value in state_of(own.members[j]).items():
            torch.testing.assert_close(state_of(shared.members[j])[key], value, rtol=1e-4, atol=atol, msg=key)
            if key.startswith(("clip.transformer.", "clip.token_embedding", "clip.text_projection")):
                torch.testing.assert_close(value, start[key], rtol=0, atol=0, msg=key)  # the text tower stayed frozen
    tokens = shared.members[0].tokenize(["a red striped shirt", "blue jeans"])
    shared.shared_text = True
    torch.testing.assert_close(shared.encode_query({"text": tokens}), own.encode_query({"text": tokens}))


def test_members_with_trained_or_unfrozen_text_towers_keep_their_own_text_passes(tmp_path, pretrained):
    torch.manual_seed(0)
    unfrozen = method(pretrained, members=2)
    unfrozen._refresh_text_sharing()
    assert not unfrozen.shared_text
    other = EncoderConfig(pretrained=pretrained).build()
    with torch.no_grad():
        other.clip.text_projection.add_(0.01)
    files = [pretrained, str(export_open_clip_checkpoint(other, tmp_path / "other.pt"))]
    gathered = Enclip(EncoderConfig(pretrained=pretrained, freeze_text=True), members_from=files)
    gathered._refresh_text_sharing()
    assert not gathered.shared_text  # frozen, but the gathered text towers differ
    same = Enclip(EncoderConfig(pretrained=pretrained, freeze_text=True), members_from=[pretrained, pretrained])
    same._refresh_text_sharing()
    assert same.shared_text


def test_bootstrap_members_never_see_their_out_of_bag_rows(tiny_world, pretrained):
    seen: list[torch.Tensor] = []
    torch.manual_seed(0)
    enclip = method(pretrained, members=2, diversity="bootstrap", member_augment=1.0)
    original = Enclip._member_loss

    def spy(self, position, member, batch, weights, *rest):
        seen.append(torch.stack([batch["index"], weights.long(), torch.full_like(batch["index"], position)]))
        return original(self, position, member, batch, weights, *rest)

    Enclip._member_loss = spy
    try:
        trainer(steps=2).fit(enclip, datamodule=tiny_data(tiny_world))
    finally:
        Enclip._member_loss = original
    ids = tiny_data(tiny_world)
    ids.attach_preprocessing(enclip.preprocessing())
    n = len(ids.image_dataset("train")[0])
    for index, weights, position in seen:
        torch.testing.assert_close(weights.float(), bootstrap_weights(n, int(position[0]), seed=0)[index])


def test_cluster_diversity_trains_member_k_on_cluster_k(tiny_world, pretrained):
    torch.manual_seed(0)
    enclip = method(pretrained, members=2, diversity="cluster", clusters=ClusterConfig(share=0.0, iterations=5))
    captured = {}

    class Capture(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            captured["weights"] = pl_module.row_weights.clone()

    trainer(steps=1, callbacks=[Capture()]).fit(enclip, datamodule=tiny_data(tiny_world))
    clusters = enclip.train_clusters.cpu()
    assert enclip.centroids.shape == (2, enclip.members[0].embed_dim)
    assert torch.equal(captured["weights"].cpu(), torch.stack([(clusters == 0).float(), (clusters == 1).float()]))
    assert enclip.row_weights is None  # released after fit


def validate(enclip: Enclip, tiny_world: Path, dataset: str = "synth-t2i") -> dict[str, float]:
    from fashion_bench.retrieval.callback import RetrievalEvaluator

    evaluator = RetrievalEvaluator(progress=False)
    pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, callbacks=[evaluator], default_root_dir=str(tiny_world.parent / "val"),
               ).validate(enclip, datamodule=tiny_data(tiny_world, dataset), verbose=False)
    return evaluator.last_result


def test_routing_appends_the_cluster_block_and_a_large_boost_only_reorders(tiny_world, pretrained):
    torch.manual_seed(0)
    plain = validate(method(pretrained, members=2, fusion="concat"), tiny_world)
    routed_method = method(pretrained, members=2, fusion="concat", routing=RoutingConfig(nearest=1, boost=0.0))
    zero_boost = validate(routed_method, tiny_world)
    assert routed_method.centroids.shape[0] == 2  # k defaults to the ensemble size
    for name, value in plain.metrics.items():  # a zero boost changes no score
        assert zero_boost.metrics[name] == pytest.approx(value, abs=1e-6), name
    huge = validate(method(pretrained, members=2, fusion="concat", routing=RoutingConfig(nearest=2, boost=10.0)), tiny_world)
    for name, value in plain.metrics.items():  # c = k routes every item: the same ranking, shifted by the boost
        assert huge.metrics[name] == pytest.approx(value, abs=1e-6), name
    assert huge.gallery_size == plain.gallery_size


def test_gathered_members_fuse_their_files_and_record_provenance(tmp_path, pretrained):
    torch.manual_seed(0)
    files = []
    for j in range(2):
        encoder = EncoderConfig(pretrained=pretrained).build()
        with torch.no_grad():
            for p in encoder.parameters():
                p.add_(0.01 * torch.randn_like(p))
        files.append(str(export_open_clip_checkpoint(encoder, tmp_path / f"member{j}.pt")))
    gathered = method(pretrained, members_from=files, fusion="concat").eval()
    assert gathered.size == 2 and set(gathered.stage_inputs) == {"encoder.pretrained", "members_from[0]", "members_from[1]"}
    singles = [EncoderConfig(pretrained=f).build().eval() for f in files]
    tokens = singles[0].tokenize(["a red striped shirt", "blue jeans"])
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        query = gathered.encode_query({"text": tokens})
        gallery = gathered.encode_gallery({"image_features": gathered.encode_images(images)})
        expected = sum(s.encode_text(tokens) @ s.encode_image(images).t() for s in singles) / 2
    torch.testing.assert_close(query @ gallery.t(), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(FileNotFoundError, match=r"members_from\[1\]"):
        method(pretrained, members_from=[files[0], str(tmp_path / "missing.pt")])


def test_routing_needs_the_pretrained_clip_and_never_routes_with_a_random_stand_in(pretrained, tmp_path):
    """The router and the clusters are rebuilt from encoder.pretrained, not stored in checkpoints: a missing file
    must stop a `test --ckpt_path` run instead of routing by a randomly initialised CLIP."""
    with pytest.raises(ValueError, match=r"routing.nearest > 0 .* encoder.pretrained is not set"):
        Enclip(EncoderConfig(pretrained=None), members=1, routing=RoutingConfig(nearest=1))
    moved = tmp_path / "stage1" / "encoder.pt"
    moved.parent.mkdir()
    moved.write_bytes(Path(pretrained).read_bytes())
    routed = method(str(moved), members=1, routing=RoutingConfig(nearest=1))
    checkpoint = {"state_dict": routed.state_dict()}
    routed.on_save_checkpoint(checkpoint)
    moved.unlink()  # the earlier stage's run deleted before the test run
    with restoring_weights(True), pytest.raises(PretrainedUnavailableError, match=r"not stored in checkpoints.*not found: .*stage1/encoder.pt"):
        method(str(moved), members=1, routing=RoutingConfig(nearest=1))
    with restoring_weights(True):
        clustered = method(str(moved), members=2, diversity="cluster")  # members restored: building is fine
    with pytest.raises(PretrainedUnavailableError, match=r"clusters images .*not found"):
        clustered.ensure_clusters()


def test_checkpoints_leave_the_router_out_and_load_into_a_routed_method(pretrained):
    torch.manual_seed(0)
    routed = method(pretrained, members=1, routing=RoutingConfig(nearest=1))
    checkpoint = {"state_dict": routed.state_dict()}
    routed.on_save_checkpoint(checkpoint)
    assert not any(k.startswith("router.") for k in checkpoint["state_dict"])
    again = method(pretrained, members=1, routing=RoutingConfig(nearest=1))
    again.on_load_checkpoint(checkpoint)
    again.load_state_dict(checkpoint["state_dict"])  # strict: the router is filled in from the pretrained CLIP
    plain = method(pretrained, members=1)
    routed_checkpoint = {"state_dict": routed.state_dict()}
    plain.on_load_checkpoint(routed_checkpoint)
    plain.load_state_dict(routed_checkpoint["state_dict"])


# --- the CLI: one process vs separate runs gathered by run: references ---------------------------------------------
def test_separate_runs_gathered_by_run_references_equal_the_one_process_ensemble(tiny_world, pretrained, tmp_path, monkeypatch):
    from fashion_bench.lightning_cli import run

    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    config = str(REPO / "configs/experiment/enclip__synth-t2i.yaml")
    common = [
        "--data.root", str(tiny_world.parent), "--data.synthetic_preset", "tiny", "--data.num_workers", "0",
        "--data.batch_size", "16", "--trainer.default_root_dir", str(runs), "--trainer.enable_progress_bar", "false",
        "--model.init_args.encoder.pretrained", pretrained, "--model.init_args.members", "2",
        "--trainer.max_epochs", "1",
    ]
    assert run(["fit", "--config", config, *common, "--experiment", "together"]) == 0
    assert run(["test", "--config", config, *common, "--experiment", "together", "--ckpt_path", "last"]) == 0
    for j in (0, 1):
        assert run(["fit", "--config", config, *common, "--experiment", f"member{j}", "--model.init_args.member_ids", f"[{j}]"]) == 0
    gathered = ["--model.init_args.members_from", "[run:member0/member0.pt, run:member1/member1.pt]"]
    assert run(["test", "--config", config, *common, "--experiment", "gathered", *gathered]) == 0

    def test_result(experiment: str) -> dict:
        (path,) = [p for p in (runs / experiment).glob("*/results.json") if json.loads(p.read_text())["split"] == "test"]
        return json.loads(path.read_text())

    together, separate = test_result("together"), test_result("gathered")
    assert separate["metrics"] == pytest.approx(together["metrics"], abs=1e-6)
    assert set(separate["stage_inputs"]) >= {"members_from[0]", "members_from[1]"}
    assert separate["stage_inputs"]["members_from[1]"]["path"].endswith("published/member1.pt")
    assert math.isfinite(separate["metrics"]["mean_recall"])
