"""ENCLIP (Naik & Agarwal, arXiv 2411.16096): an ensemble of CLIP fine-tunes plus image clustering, for fashion
search with limited data and low-quality images. Tasks ``t2i`` and ``id``.

The paper publishes only its abstract's outline (several CLIP instances fine-tuned and ensembled; similar images
clustered). Everything else is a documented reconstruction with one switch per unknown (docs/methods/enclip.md):

* Members: K CLIP encoders (``members``, default 5) built from one :class:`EncoderConfig`, i.e. from the same
  pretrained CLIP, held in one ``nn.ModuleList``. Each decoded training batch feeds every member; the loss is the
  sum of the members' own losses, so each member's gradients are exactly those of training it alone.
* ``diversity``: ``seed`` (every member sees every row; members differ by their own seed-specific augmentation of
  the shared batch, ``member_augment``, and by dropout where the architecture has it), ``bootstrap`` (member k's
  rows are weighted by how often a seeded bootstrap draw of the training rows picked them; out-of-bag rows are
  left out of its forward pass and its loss) or ``cluster`` (member k trains on image cluster k, plus a seeded
  ``clusters.share`` of the other rows). The weights are a per-member table over training-row indices, built once
  at the start of ``fit``.
* Clustering: spherical faiss k-means (``clusters.k``, default K) over the normalised image features of the
  training images under the *pretrained* CLIP (``encode_split``; rebuilt from ``encoder`` so that a resumed fit
  clusters alike). Optional query-time routing (``routing.nearest`` = c > 0) boosts the gallery items of the
  query's nearest c clusters by ``routing.boost`` through an appended embedding block (see
  :mod:`fashion_bench.methods.ensemble`); routing uses a frozen copy of the pretrained CLIP (text and image
  towers) for the cluster of queries and gallery items and never removes an item.
* ``fusion``: ``mean`` / ``concat`` / ``max`` of the normalised member embeddings, queries and gallery alike.
* ``encoder.freeze_text``: members fine-tune their image towers only. Their text towers then stay the pretrained
  one, identical in every member, so a batch's texts are encoded once for all members (in training and at
  query time): the step shares more than the decoding.
* Two ways to train, same members: one process (all members) or K runs with ``member_ids: [k]`` (each trains
  member k exactly as the one-process run does: same rows, weights and augmentation draws) gathered afterwards
  with ``members_from`` (open_clip files, e.g. the runs' ``published/member<k>.pt``, or ``run:`` references).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fashion_bench.contracts import Preprocessing
from fashion_bench.encoders import ClipEncoder, PretrainedUnavailableError, export_open_clip_checkpoint
from fashion_bench.encoders.clip import load_weights_file
from fashion_bench.losses import same_label_targets
from fashion_bench.methods.base import EncoderConfig, OptimConfig, RetrievalMethod
from fashion_bench.methods.ensemble import (
    FUSIONS,
    augment_batch,
    bootstrap_weights,
    cluster_weights,
    fuse,
    kmeans,
    member_generator,
    routing_block,
)
from fashion_bench.stages import RUN_PREFIX, resolve_artefact, restoring_weights, run_seed, weights_will_be_restored

log = logging.getLogger(__name__)

DIVERSITIES = ("seed", "bootstrap", "cluster")
DEFAULT_MEMBERS = 5
MAX_LOGIT_SCALE = 100.0
PRETRAINED_SALT = (2,)


@dataclass
class ClusterConfig:
    """Image clusters: spherical k-means over the pretrained CLIP's normalised training-image features.

    Attributes:
        k: number of clusters; default the ensemble size (``cluster`` diversity needs one cluster per member).
        share: ``cluster`` diversity: each member also trains on this fraction of the other clusters' rows.
        iterations: k-means iterations.
    """

    k: int | None = None
    share: float = 0.0
    iterations: int = 20

    def __post_init__(self) -> None:
        if self.k is not None and self.k < 1:
            raise ValueError(f"clusters.k must be >= 1, got {self.k}")
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"clusters.share must be in [0, 1], got {self.share}")


@dataclass
class RoutingConfig:
    """Query-time cluster routing: ``boost`` is added to the score of every gallery item whose cluster is among
    the query's ``nearest`` clusters (0 = off). Fused scores are cosines in [-1, 1], so a boost of 2 or more
    ranks every routed item first; nothing is ever removed."""

    nearest: int = 0
    boost: float = 0.1

    def __post_init__(self) -> None:
        if self.nearest < 0 or self.boost < 0:
            raise ValueError(f"routing.nearest and routing.boost must be >= 0, got {self.nearest} and {self.boost}")


def weighted_contrastive_loss(
    image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float, labels: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE of normalised ``image`` / ``text`` [N, D] (same-label rows are positives, as in
    :func:`fashion_bench.losses.contrastive_loss`), each row's loss (image -> text + text -> image) / 2 weighted by
    ``weights`` [N] and normalised by their sum. With unit weights it equals ``contrastive_loss``."""
    logits = scale * image @ text.t()
    targets = same_label_targets(labels, labels)
    i2t = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1)
    t2i = -(targets * F.log_softmax(logits.t(), dim=1)).sum(dim=1)
    return (weights * (i2t + t2i) / 2).sum() / weights.sum()


class Enclip(RetrievalMethod):
    method_name = "enclip"
    supports = {"t2i": ("text", "image"), "id": ("image", "text")}
    main_artefact = "model"

    def __init__(
        self,
        encoder: EncoderConfig | None = None,
        optim: OptimConfig | None = None,
        members: int | None = None,
        member_ids: list[int] | None = None,
        diversity: str = "seed",
        member_augment: float = 0.8,
        fusion: str = "mean",
        clusters: ClusterConfig | None = None,
        routing: RoutingConfig | None = None,
        members_from: list[str] | None = None,
        learn_temperature: bool = True,
    ) -> None:
        """
        Args:
            encoder: the pretrained CLIP every member starts from (and the space of the image clusters).
            members: ensemble size K (default 5, or the length of ``members_from``).
            member_ids: the members this run holds and trains (default all K); ``[k]`` trains member k alone,
                exactly as the one-process run trains it (same rows, weights and augmentation draws).
            diversity: ``seed`` | ``bootstrap`` | ``cluster`` (module docstring).
            member_augment: smallest area fraction of the per-member random resized crop of the shared batch
                (drawn from the member's own seeded generator); 1.0 turns it off (then ``seed`` members from one
                pretrained CLIP without dropout stay identical).
            fusion: ``mean`` | ``concat`` | ``max`` (see :mod:`fashion_bench.methods.ensemble`).
            clusters: k-means settings (``k``, ``share``, ``iterations``).
            routing: query-time cluster routing (``nearest`` clusters, ``boost``); off by default.
            members_from: weights of each member k (open_clip files such as ``published/member<k>.pt`` or a
                CLIP run's ``encoder.pt``, or ``run:<experiment>/<file>``), to gather separately trained members.
            learn_temperature: train each member's CLIP logit scale.
        """
        super().__init__(optim)
        if diversity not in DIVERSITIES:
            raise ValueError(f"unknown diversity '{diversity}'; expected one of {DIVERSITIES}")
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion '{fusion}'; expected one of {FUSIONS}")
        if not 0.0 < member_augment <= 1.0:
            raise ValueError(f"member_augment must be in (0, 1], got {member_augment}")
        if members_from is not None and members is not None and members != len(members_from):
            raise ValueError(f"members={members} but members_from names {len(members_from)} files: one file per member")
        self.encoder_config = encoder or EncoderConfig()
        self.size = members if members is not None else (len(members_from) if members_from else DEFAULT_MEMBERS)
        if self.size < 1:
            raise ValueError(f"members must be >= 1, got {self.size}")
        self.member_ids = list(range(self.size)) if member_ids is None else [int(j) for j in member_ids]
        if not self.member_ids or len(set(self.member_ids)) != len(self.member_ids) or not all(0 <= j < self.size for j in self.member_ids):
            raise ValueError(f"member_ids must be distinct members of 0..{self.size - 1}, got {member_ids}")
        self.diversity, self.member_augment, self.fusion = diversity, member_augment, fusion
        self.cluster_config = clusters or ClusterConfig()
        self.routing = routing or RoutingConfig()
        self.num_clusters = self.cluster_config.k or self.size
        if diversity == "cluster" and self.num_clusters != self.size:
            raise ValueError(f"cluster diversity trains member k on cluster k: clusters.k ({self.num_clusters}) must equal members ({self.size})")
        self.members_from = list(members_from) if members_from is not None else None
        self.learn_temperature = learn_temperature
        base_seed = torch.initial_seed()  # the CLI seeds before building: random-init members differ per member id
        self.members = nn.ModuleList(self._build((1, j), base_seed) for j in self.member_ids)
        for member in self.members:
            member.logit_scale.requires_grad_(learn_temperature)
        pretrained = self.encoder_config.pretrained
        if pretrained and Path(pretrained).is_file():
            self.record_stage_input("encoder.pretrained", pretrained)
        self._base_seed = base_seed
        self.router: ClipEncoder | None = None
        if self.routing.nearest > 0:
            if not pretrained:
                raise ValueError(
                    "routing.nearest > 0 routes queries by the clusters of the pretrained CLIP, but encoder.pretrained "
                    "is not set: name the CLIP the members were fine-tuned from, or set routing.nearest 0"
                )
            self.router = self._pretrained_copy().requires_grad_(False).eval()
        self.shared_text = False  # every member's text tower frozen and identical: texts encoded once
        self.centroids: torch.Tensor | None = None  # [k, D] in the pretrained space, computed once per process
        self.train_clusters: torch.Tensor | None = None  # [N_train] cluster of each training row
        self.row_weights: torch.Tensor | None = None  # [len(member_ids), N_train] during fit (None: every row)
        self._deferred: dict[int, str] = {}
        if self.members_from is not None:
            self._load_members(restoring=weights_will_be_restored())
        self.save_config(
            encoder=self.encoder_config, optim=self.optim, members=self.size, member_ids=self.member_ids,
            diversity=diversity, member_augment=member_augment, fusion=fusion, clusters=self.cluster_config,
            routing=self.routing, members_from=self.members_from, learn_temperature=learn_temperature,
        )

    # --- construction -----------------------------------------------------------------------------------------
    def _build(self, salt: tuple[int, ...], base_seed: int) -> ClipEncoder:
        """An encoder from ``encoder``: its pretrained weights, or a random init seeded by ``salt`` (a member id
        or the pretrained copy), identical in every run with the same seed."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(member_generator(base_seed, -1, *salt).initial_seed())
            return self.encoder_config.build()

    def _pretrained_copy(self) -> ClipEncoder:
        """The pretrained CLIP that clusters the training images and routes queries. It is left out of checkpoints
        (rebuilt from ``encoder``), so its weights must load even while a checkpoint restores the members: a random
        stand-in would cluster and route at random without any error."""
        with restoring_weights(False):
            try:
                return self._build(PRETRAINED_SALT, self._base_seed)
            except PretrainedUnavailableError as err:
                raise PretrainedUnavailableError(
                    f"ENCLIP clusters images and routes queries with its pretrained CLIP, rebuilt from "
                    f"encoder.pretrained (it is not stored in checkpoints): {err}"
                ) from None

    def _load_members(self, restoring: bool) -> None:
        """Member k's weights from ``members_from[k]``; ``run:`` references wait for :meth:`setup` (they resolve
        against the run's root and seed)."""
        for position, j in enumerate(self.member_ids):
            source = self.members_from[j]
            if source.startswith(RUN_PREFIX):
                self._deferred[position] = source
            elif Path(source).is_file():
                self._load_member(position, source)
            elif not restoring:
                raise FileNotFoundError(
                    f"members_from[{j}]: {source} is not a file; name an open_clip weights file (a CLIP run's "
                    f"published/encoder.pt, an ENCLIP run's published/member<k>.pt) or run:<experiment>/<file>"
                )

    def _load_member(self, position: int, path: str) -> None:
        j = self.member_ids[position]
        load_weights_file(self.members[position].clip, Path(path), self.encoder_config.model)
        self.record_stage_input(f"members_from[{j}]", path)

    def setup(self, stage: str) -> None:
        if not self._deferred or self._trainer is None or self.trainer.ckpt_path:
            return  # nothing deferred, or the weights come from a checkpoint
        run_dir = Path(self.trainer.default_root_dir)
        for position, reference in sorted(self._deferred.items()):
            self._load_member(position, resolve_artefact(reference, run_dir.parents[1], run_seed(run_dir), "encoder.pt"))
        self._deferred = {}

    def preprocessing(self) -> Preprocessing:
        first = self.members[0]
        return Preprocessing(image_spec=first.image_spec, tokenize=first.tokenize)

    def train(self, mode: bool = True) -> Enclip:
        super().train(mode)
        if self.router is not None:
            self.router.eval()
        return self

    # --- clusters and per-member rows -------------------------------------------------------------------------
    def _seed(self) -> int:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        return int(getattr(datamodule, "seed", 0) or 0)

    def ensure_clusters(self) -> None:
        """k-means over the pretrained CLIP's normalised training-image features, once per process."""
        if self.centroids is not None:
            return
        encoder = self.router if self.router is not None else self._pretrained_copy()
        encoder = encoder.to(self.device).eval()
        _, features = self.encode_split(
            "train", lambda images: encoder.encode_image(images), desc=f"encoding training images for {self.num_clusters} clusters"
        )
        self.centroids, self.train_clusters = kmeans(
            features, self.num_clusters, seed=self._seed(), iterations=self.cluster_config.iterations
        )
        sizes = torch.bincount(self.train_clusters.cpu(), minlength=self.num_clusters).tolist()
        log.info("ENCLIP: %d image clusters of the training images, sizes %s", self.num_clusters, sizes)

    def member_row_weights(self, num_rows: int) -> torch.Tensor | None:
        """[len(member_ids), num_rows] loss weight of each training row for each member (None: all ones)."""
        seed = self._seed()
        if self.diversity == "seed":
            return None
        if self.diversity == "bootstrap":
            return torch.stack([bootstrap_weights(num_rows, j, seed) for j in self.member_ids])
        share = self.cluster_config.share
        return torch.stack([cluster_weights(self.train_clusters, j, self.num_clusters, share, seed) for j in self.member_ids])

    def _refresh_text_sharing(self) -> None:
        """Whether one text pass serves every member: their text towers are frozen and equal (from one pretrained
        CLIP; members gathered from runs that trained their text towers differ and keep their own passes)."""
        first = self.members[0]
        self.shared_text = all(member.text_frozen for member in self.members) and all(
            all(torch.equal(a, b) for a, b in zip(first.text_parameters(), member.text_parameters()))
            for member in self.members[1:]
        )

    def on_fit_start(self) -> None:
        self._refresh_text_sharing()
        if self.shared_text:
            log.info("ENCLIP: the %d members share one frozen text tower: texts are encoded once per batch", len(self.members))
        if self.diversity == "cluster" or self.routing.nearest > 0:
            self.ensure_clusters()
        num_rows = 0
        if self.diversity == "bootstrap":
            num_rows = len(self.trainer.datamodule.image_dataset("train")[0])
        weights = self.member_row_weights(num_rows)
        self.row_weights = weights.to(self.device) if weights is not None else None
        if weights is not None:
            seen = (weights > 0).float().mean(dim=1).tolist()
            log.info("ENCLIP %s diversity: members %s train on %s of the rows", self.diversity, self.member_ids,
                     [round(s, 3) for s in seen])

    def on_fit_end(self) -> None:
        self.row_weights = None

    def _prepare_evaluation(self) -> None:
        self._refresh_text_sharing()
        if self.routing.nearest > 0:
            self.ensure_clusters()

    def on_validation_start(self) -> None:
        self._prepare_evaluation()

    def on_test_start(self) -> None:
        self._prepare_evaluation()

    def on_predict_start(self) -> None:
        self._prepare_evaluation()

    # --- training -----------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        size = batch["text"].shape[0]
        shared_text = self.members[0].encode_text(batch["text"]) if self.shared_text else None
        losses = []
        for position, member in enumerate(self.members):
            weights = (
                self.row_weights[position, batch["index"]] if self.row_weights is not None
                else torch.ones(size, device=self.device)
            )
            loss = self._member_loss(position, member, batch, weights, shared_text, self._micro_batch(batch_idx))
            self.log(f"train/loss_m{self.member_ids[position]}", loss, batch_size=size)
            losses.append(loss)
        loss = torch.stack(losses).sum()
        self.log("train/loss", loss / len(losses), prog_bar=True, batch_size=size)
        return self.check_finite(loss)

    def _micro_batch(self, batch_idx: int) -> tuple[int, ...]:
        """The batch's place in its optimiser step under gradient accumulation, as a generator salt: () for the first
        (one batch per step keeps the generators it always had), so that accumulated batches get their own crops."""
        accumulate = self.trainer.accumulate_grad_batches if self._trainer is not None else 1
        return (batch_idx % accumulate,) if batch_idx % accumulate else ()

    def _member_loss(
        self, position: int, member: ClipEncoder, batch: dict[str, torch.Tensor], weights: torch.Tensor,
        shared_text: torch.Tensor | None, micro_batch: tuple[int, ...] = (),
    ) -> torch.Tensor:
        """Member ``position``'s loss on its rows of the shared batch: rows of weight 0 are neither encoded nor
        negatives (``shared_text``: the batch's texts under the members' one frozen text tower). Under DDP each
        rank's rows are padded to the batch size (weight 0) and gathered."""
        size = batch["text"].shape[0]
        selected = (weights > 0).nonzero().flatten()
        if selected.numel() == 0:  # keep the member in the graph (DDP) with one row of weight 0
            selected = selected.new_zeros(1)
        generator = member_generator(self._seed(), self.member_ids[position], 2, self.global_step, self.global_rank, *micro_batch)
        images = augment_batch(batch["image"][selected], generator, self.member_augment)
        image = member.encode_image(images)
        text = shared_text[selected] if shared_text is not None else member.encode_text(batch["text"][selected])
        anchor = 0.0 * (image.sum() + text.sum())  # zero, but every used parameter takes part in the graph
        labels, weights = batch["label"], weights
        if self._trainer is not None and self.trainer.world_size > 1:
            image = image.new_zeros(size, image.shape[1]).index_put((selected,), image)
            text = text.new_zeros(size, text.shape[1]).index_put((selected,), text)
            weights = weights.new_zeros(size).index_put((selected,), weights[selected])
            image, text, labels, weights = self.gather(image), self.gather(text), self.gather(labels), self.gather(weights)
            keep = weights > 0
            image, text, labels, weights = image[keep], text[keep], labels[keep], weights[keep]
        else:
            labels, weights = labels[selected], weights[selected]
        if float(weights.sum()) <= 0:
            return anchor
        scale = member.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        return weighted_contrastive_loss(image, text, scale, labels, weights) + anchor

    # --- embeddings -------------------------------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """[B, K * D (+ D)]: every member's raw image feature, then the pretrained router's when routing."""
        parts = [member.encode_image(images, normalize=False) for member in self.members]
        if self.router is not None:
            parts.append(self.router.encode_image(images, normalize=False))
        return torch.cat(parts, dim=-1)

    def _split(self, features: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        dim = self.members[0].embed_dim
        parts = list(features.split(dim, dim=-1))
        expected = len(self.members) + (self.router is not None)
        if len(parts) != expected or parts[-1].shape[-1] != dim:
            raise ValueError(f"ENCLIP image features of width {features.shape[-1]}: expected {expected} x {dim}")
        return (parts[:-1], parts[-1]) if self.router is not None else (parts, None)

    def _embed(self, members: list[torch.Tensor], router: torch.Tensor | None, nearest: int) -> torch.Tensor:
        fused = fuse(members, self.fusion)
        if router is None:
            return fused
        if self.centroids is None:
            raise RuntimeError("ENCLIP routing needs the image clusters: they are computed at the start of fit / validate / test")
        block = routing_block(router.float(), self.centroids.to(router.device), nearest, self.routing.boost)
        return torch.cat([fused, block.to(fused.dtype)], dim=-1)

    def encode_gallery(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        members, router = self._split(batch["image_features"])
        return self._embed(members, router, 1)

    def encode_query(self, batch: dict[str, Any]) -> torch.Tensor:
        text, image = batch.get("text"), batch.get("image_features")
        if text is not None and image is not None:
            raise ValueError("ENCLIP embeds text or image queries (tasks t2i, id), not composed image+text queries")
        if text is not None:
            towers = self.members[:1] if self.shared_text else self.members
            members = [tower.encode_text(text) for tower in towers] * (len(self.members) // len(towers))
            router = self.router.encode_text(text) if self.router is not None else None
        elif image is not None:
            members, router = self._split(image)
        else:
            raise ValueError("a query batch needs 'text' or 'image_features'")
        return self._embed(members, router, self.routing.nearest)

    # --- checkpoints and artefacts ------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("router.")]:
            del state[key]  # always the pretrained CLIP: rebuilt from `encoder`

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("state_dict")
        if state is None:
            return
        for key in [k for k in state if k.startswith("router.")]:
            del state[key]
        if self.router is not None:
            state.update({f"router.{k}": v for k, v in self.router.state_dict().items()})

    def published_files(self, directory: Path) -> dict[str, Path]:
        """Each member as an open_clip checkpoint, ``member<k>.pt`` (``members_from`` of a gathered ensemble, or
        ``encoder.pretrained`` of any CLIP config); ``model.ckpt`` holds the whole set with its provenance."""
        return {
            f"member{j}": export_open_clip_checkpoint(member, directory / f"member{j}.pt")
            for j, member in zip(self.member_ids, self.members)
        }

    def describe_encoder(self) -> dict[str, Any]:
        return {
            "name": self.encoder_config.model, "pretrained": self.encoder_config.pretrained, "members": self.size,
            "member_ids": self.member_ids, "fusion": self.fusion,
        }
