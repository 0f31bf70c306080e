"""``reid-baseline``: the "traditional model" of the multi-prompt paper. The CLIP image encoder fine-tuned with
a label-smoothed ID loss on a BNNeck classifier and a batch-hard triplet loss, no prompts, no text (the text
tower is frozen and unused). Multi-prompt stage 2 (:class:`fashion_bench.methods.multiprompt.MultiPrompt`)
extends it with visual prompts and the image-to-text loss.

Retrieval (task ``id``): gallery and image queries are embedded the same way, by :meth:`BNNeckHead.embed` of
the raw image features (see ``head.embedding``).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from fashion_bench.methods.base import NEW_PARAMETER_LR_FACTOR, ClipRetrievalMethod, EncoderConfig, OptimConfig
from fashion_bench.methods.heads import BNNeckHead, ReIDHeadConfig, resolve_identities


class ReidBaseline(ClipRetrievalMethod):
    method_name = "reid-baseline"
    supports = {"id": ("image",)}

    def __init__(
        self,
        encoder: EncoderConfig | None = None,
        optim: OptimConfig | None = None,
        head: ReIDHeadConfig | None = None,
        num_identities: int | None = None,
    ) -> None:
        """
        Args:
            encoder: the CLIP whose image tower is trained (``freeze_text`` is forced on).
            head: loss weights, triplet margin, label smoothing and the retrieval ``embedding`` (``bn`` / ``raw``).
            num_identities: classifier size; by default the training identities of the datamodule, counted when
                the Trainer sets the method up (a fit checks that they agree).
        """
        super().__init__(replace(encoder or EncoderConfig(), freeze_text=True), optim)
        self.encoder.logit_scale.requires_grad_(False)
        self.head_config = head or ReIDHeadConfig()
        self.head: BNNeckHead | None = None
        self.identity_source = "num_identities"
        if num_identities is not None:
            self.head = BNNeckHead(self.encoder.embed_dim, num_identities, self.head_config)
        self.save_config(encoder=self.encoder_config, optim=self.optim, head=self.head_config, num_identities=num_identities)

    def setup(self, stage: str) -> None:
        built = self.head.num_identities if self.head is not None else None
        count = resolve_identities(self, built, stage, self.identity_source)
        if self.head is None:
            self.head = BNNeckHead(self.encoder.embed_dim, count, self.head_config)
        self.hparams["num_identities"] = count

    def default_lr_groups(self) -> dict[str, float]:
        return {"head.": NEW_PARAMETER_LR_FACTOR * self.optim.lr} if self.head is not None else {}

    def train(self, mode: bool = True) -> ReidBaseline:
        """Only the image tower (and the head) train; the frozen text tower stays in eval mode."""
        super().train(mode)
        self.encoder.eval()
        self.encoder.clip.visual.train(mode)
        return self

    # --- embeddings -----------------------------------------------------------------------------------------
    def encode_gallery(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head.embed(batch["image_features"])

    def encode_query(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "image_features" not in batch:
            raise ValueError(f"{type(self).__name__} embeds image queries (task 'id'); got a query batch with keys {sorted(batch)}")
        return self.head.embed(batch["image_features"])

    # --- training -------------------------------------------------------------------------------------------
    def loss_terms(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted losses of a batch of raw image features [B, D]."""
        return self.head.losses(features, labels)

    def total_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head.weighted(terms)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if "label" not in batch:
            raise ValueError(f"{type(self).__name__} trains on identity-labelled images (task 'id'); got keys {sorted(batch)}")
        terms = self.loss_terms(self.encode_images(batch["image"]), batch["label"])
        loss = self.total_loss(terms)
        size = batch["label"].shape[0]
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return self.check_finite(loss)
