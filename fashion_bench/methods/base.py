"""``RetrievalMethod``: the LightningModule every method extends.

A method owns its encoder(s) and says how to embed the two sides of a retrieval task; it never computes
metrics. The evaluator (``fashion_bench.retrieval.callback.RetrievalEvaluator``) drives evaluation:

1. ``validation_step`` / ``test_step`` run :meth:`encode_images` on gallery batches (each image once);
2. gallery embeddings = :meth:`encode_gallery` of those features;
3. query embeddings = :meth:`encode_query` of a batch holding ``text`` (tokens) and / or ``image_features``
   (the same per-image features of the query's reference image, looked up, never re-encoded).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from fashion_bench.contracts import Preprocessing
from fashion_bench.encoders import ClipEncoder, export_open_clip_checkpoint


@dataclass
class EncoderConfig:
    """Which CLIP to build (see :class:`fashion_bench.encoders.ClipEncoder`)."""

    model: str = "tiny-vit-64"
    pretrained: str | None = None
    freeze_image: bool = False
    freeze_text: bool = False
    grad_checkpointing: bool = False
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        # `--model.init_args.encoder.pretrained null` reaches a `str | None` field as the string "None" through
        # jsonargparse's omegaconf mode; no open_clip tag or file is called that, so read it as "no weights".
        for name in ("pretrained", "cache_dir"):
            if getattr(self, name) in ("None", "null", ""):
                setattr(self, name, None)

    def build(self) -> ClipEncoder:
        return ClipEncoder(**asdict(self))


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 0
    schedule: str = "cosine"  # cosine | constant


class RetrievalMethod(pl.LightningModule):
    def __init__(self, encoder: EncoderConfig | None = None, optim: OptimConfig | None = None) -> None:
        super().__init__()
        self.encoder_config = encoder or EncoderConfig()
        self.optim = optim or OptimConfig()
        if self.optim.schedule not in ("cosine", "constant"):
            raise ValueError(f"unknown schedule '{self.optim.schedule}'; expected 'cosine' or 'constant'")
        self.encoder = self.encoder_config.build()

    def save_config(self, **extra: Any) -> None:
        """Record hyper-parameters as plain data (checkpoints then load with ``weights_only=True``)."""
        self.save_hyperparameters({"encoder": asdict(self.encoder_config), "optim": asdict(self.optim), **extra})

    # --- data contract ----------------------------------------------------------------------------------------
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(image_spec=self.encoder.image_spec, tokenize=self.encoder.tokenize)

    # --- embedding contract -----------------------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Per-image features shared by the gallery side and query references (not necessarily normalised)."""
        return self.encoder.encode_image(images, normalize=False)

    def encode_gallery(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(batch["image_features"], dim=-1)

    def encode_query(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"features": self.encode_images(batch["image"]), "index": batch["index"], "image_ok": batch["image_ok"]}

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self.validation_step(batch, batch_idx)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"embedding": self.encode_gallery({"image_features": self.encode_images(batch["image"])}), "index": batch["index"]}

    # --- training helpers -------------------------------------------------------------------------------------
    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate a per-rank batch tensor across ranks, keeping gradients (identity in one process)."""
        if self._trainer is None or self.trainer.world_size == 1:
            return x
        return self.all_gather(x, sync_grads=True).flatten(0, 1)

    def check_finite(self, loss: torch.Tensor) -> torch.Tensor:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss.item()} at global step {self.global_step} (epoch {self.current_epoch}); lower the "
                "learning rate, use --trainer.precision 32, or check the inputs of this batch"
            )
        return loss

    def trainable_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def configure_optimizers(self):
        params = self.trainable_parameters()
        if not params:
            raise ValueError(f"{type(self).__name__} has no trainable parameters (everything is frozen)")
        no_decay = [p for n, p in params if p.ndim < 2 or "logit_scale" in n or "bias" in n or "embedding" in n or "token" in n]
        ids = {id(p) for p in no_decay}
        decay = [p for _, p in params if id(p) not in ids]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.optim.lr, betas=self.optim.betas, eps=self.optim.eps,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1
        warmup, cosine = self.optim.warmup_steps, self.optim.schedule == "cosine"

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if not cosine:
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- export -------------------------------------------------------------------------------------------------
    def export_encoder(self, path: str | Path) -> Path:
        return export_open_clip_checkpoint(self.encoder, path)
