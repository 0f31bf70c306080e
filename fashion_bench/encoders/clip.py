"""An open_clip CLIP behind one small interface: L2-normalised image / text features, a tokenizer, the
matching image transforms and freezing switches.

``model`` accepts any open_clip model name (``ViT-B-32``), an ``hf-hub:org/repo`` name, or one of the tiny
architectures shipped in ``model_configs/`` as JSON (``tiny-vit-64``). ``pretrained`` accepts an open_clip
tag (``laion2b_s34b_b79k``), a local checkpoint file (``.pt`` / ``.bin`` / ``.safetensors``, e.g. one written by
:func:`export_open_clip_checkpoint`), or nothing (random initialisation).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fashion_bench._env import import_open_clip
from fashion_bench.atomic import atomic_open
from fashion_bench.contracts import ImageSpec
from fashion_bench.data.transforms import build_image_transform

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"

_registered = False


def open_clip_module():
    """open_clip with our shipped architectures registered (once per process)."""
    global _registered
    open_clip = import_open_clip()
    if not _registered:
        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _registered = True
    return open_clip


class PretrainedUnavailableError(RuntimeError):
    """Weights that would need the network (or a file that is not there)."""


def _offline_hint(model: str, pretrained: str | None) -> str:
    return (
        f"cannot load weights for model '{model}' pretrained '{pretrained}'. This machine is offline "
        f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}) or the weights are not cached. Offline "
        "alternatives: set `pretrained` to a local checkpoint file (an open_clip state dict, e.g. one exported by "
        "`fashion-bench fit --config configs/experiment/clip__synth-t2i.yaml`), use a model already in the "
        "open_clip / Hugging Face cache (set FASHION_BENCH_ONLINE=1 to allow downloads when online), or "
        "`pretrained: null` for random initialisation."
    )


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


class ClipEncoder(nn.Module):
    """A CLIP image and text encoder pair from open_clip."""

    def __init__(
        self,
        model: str = "tiny-vit-64",
        pretrained: str | None = None,
        freeze_image: bool = False,
        freeze_text: bool = False,
        grad_checkpointing: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        open_clip = open_clip_module()
        self.model_name = model
        self.pretrained = pretrained or None
        if self.pretrained and _looks_like_path(self.pretrained) and not Path(self.pretrained).is_file():
            raise PretrainedUnavailableError(f"pretrained checkpoint file not found: {self.pretrained}")
        try:
            self.clip = open_clip.create_model(
                model, pretrained=self.pretrained if not model.startswith("hf-hub:") else None, cache_dir=cache_dir
            )
        except RuntimeError as err:
            if "not found in built-ins" in str(err):
                raise ValueError(
                    f"unknown encoder model '{model}': not an open_clip model name, not hf-hub:..., and not one of "
                    f"the shipped configs {sorted(p.stem for p in MODEL_CONFIG_DIR.glob('*.json'))}"
                ) from None
            if self.pretrained or model.startswith("hf-hub:"):
                raise PretrainedUnavailableError(f"{_offline_hint(model, self.pretrained)} ({err})") from err
            raise
        except OSError as err:
            raise PretrainedUnavailableError(f"{_offline_hint(model, self.pretrained)} ({err})") from err
        self.tokenizer = open_clip.get_tokenizer(model, cache_dir=cache_dir)
        cfg = getattr(self.clip.visual, "preprocess_cfg", {}) or {}
        size = self.clip.visual.image_size
        self.image_spec = ImageSpec(
            size=int(size[0] if isinstance(size, (tuple, list)) else size),
            mean=tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
            std=tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
            interpolation=cfg.get("interpolation", "bicubic"),
            resize_mode=cfg.get("resize_mode", "shortest"),
        )
        if grad_checkpointing:
            self.clip.set_grad_checkpointing(True)
        self.set_frozen(image=freeze_image, text=freeze_text)

    # --- freezing -------------------------------------------------------------------------------------------
    def image_parameters(self) -> list[nn.Parameter]:
        return list(self.clip.visual.parameters())

    def text_parameters(self) -> list[nn.Parameter]:
        visual = {id(p) for p in self.clip.visual.parameters()}
        return [p for n, p in self.clip.named_parameters() if id(p) not in visual and n != "logit_scale" and "logit_bias" not in n]

    def set_frozen(self, *, image: bool, text: bool) -> None:
        self.image_frozen, self.text_frozen = image, text
        for p in self.image_parameters():
            p.requires_grad_(not image)
        for p in self.text_parameters():
            p.requires_grad_(not text)

    # --- features -------------------------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return int(self.clip.text_projection.shape[1]) if hasattr(self.clip, "text_projection") else int(
            self.clip.visual.output_dim
        )

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.clip.encode_image(images, normalize=normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.clip.encode_text(tokens, normalize=normalize)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))

    def image_transform(self, *, train: bool = False, target_pad_ratio: float | None = None, augment: bool = False):
        return build_image_transform(self.image_spec, train=train, target_pad_ratio=target_pad_ratio, augment=augment)

    @property
    def context_length(self) -> int:
        return int(getattr(self.tokenizer, "context_length", 77))


def export_open_clip_checkpoint(encoder: ClipEncoder, path: str | Path) -> Path:
    """Save the CLIP weights as an open_clip-loadable state dict (``pretrained=<path>``), atomically."""
    state = {k: v.detach().cpu().float().contiguous() for k, v in encoder.clip.state_dict().items()}
    with atomic_open(path, "wb") as fh:
        torch.save({"state_dict": state, "model": encoder.model_name}, fh)
    return Path(path)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)
