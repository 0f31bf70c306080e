"""The CLIP baseline: zero-shot (``validate`` only) or contrastive fine-tuning, for every task.

* ``t2i`` / ``id``: symmetric InfoNCE between images and one of their texts, with a learnable temperature;
  images of the same identity in a batch count as positives of each other's texts.
* ``cir``: query = normalise(normalise(reference) + normalise(text)), InfoNCE query -> target.
* Query embeddings: text only, image only, or the normalised sum of both (composed queries).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fashion_bench.contracts import QUERY_KINDS, TASKS
from fashion_bench.losses import contrastive_loss
from fashion_bench.methods.base import ClipRetrievalMethod, EncoderConfig, OptimConfig


class ClipMethod(ClipRetrievalMethod):
    method_name = "clip"
    supports = {task: QUERY_KINDS for task in TASKS}  # text, image and composed queries alike

    def __init__(
        self,
        encoder: EncoderConfig | None = None,
        optim: OptimConfig | None = None,
        learn_temperature: bool = True,
        publish_to: str | None = None,
    ) -> None:
        """
        Args:
            learn_temperature: train CLIP's logit scale (else keep the pretrained / initial one fixed).
            publish_to: ``fit`` publishes the selected encoder in its run directory (``published/encoder.pt``, an
                open_clip checkpoint that a later stage names as ``run:<experiment>/encoder.pt``); this also copies
                it to a stable path (relative to the working directory), e.g. ``weights/synth-clip-tiny.pt`` for the
                synthetic pretraining that stands in for downloaded weights.
        """
        super().__init__(encoder, optim)
        self.encoder.logit_scale.requires_grad_(learn_temperature)
        self.publish_to = publish_to
        self.save_config(encoder=self.encoder_config, optim=self.optim, learn_temperature=learn_temperature, publish_to=publish_to)

    def compose(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        return F.normalize(F.normalize(image_features, dim=-1) + F.normalize(text_features, dim=-1), dim=-1)

    def encode_query(self, batch: dict[str, object]) -> torch.Tensor:
        text = batch.get("text")
        image = batch.get("image_features")
        if text is not None and image is not None:
            return self.compose(image, self.encoder.encode_text(text, normalize=False))
        if text is not None:
            return self.encoder.encode_text(text)
        if image is not None:
            return F.normalize(image, dim=-1)
        raise ValueError("a query batch needs 'text' and / or 'image_features'")

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        scale = self.encoder.logit_scale.exp().clamp(max=100)
        if "reference" in batch:
            query = self.compose(self.encode_images(batch["reference"]), self.encoder.encode_text(batch["text"], normalize=False))
            target = F.normalize(self.encode_images(batch["target"]), dim=-1)
            labels = self.gather(batch["target_key"])
            loss = contrastive_loss(self.gather(query), self.gather(target), scale, query_labels=labels, target_labels=labels, symmetric=False)
        else:
            image = self.encoder.encode_image(batch["image"])
            text = self.encoder.encode_text(batch["text"])
            labels = self.gather(batch["label"])
            loss = contrastive_loss(self.gather(image), self.gather(text), scale, query_labels=labels, target_labels=labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["text"].shape[0])
        self.log("train/logit_scale", scale, batch_size=batch["text"].shape[0])
        return self.check_finite(loss)
