"""An open_clip CLIP behind one small interface: L2-normalised image / text features, a tokenizer, the
matching image transforms and freezing switches.

``model`` accepts any open_clip model name (``ViT-B-32``), an ``hf-hub:org/repo`` name, or one of the tiny
architectures shipped in ``model_configs/`` as JSON (``tiny-vit-64``). ``pretrained`` accepts an open_clip
tag (``laion2b_s34b_b79k``), a local weights file (``.pt`` / ``.pth`` / ``.bin`` / ``.safetensors`` / ``.ckpt``,
e.g. one written by :func:`export_open_clip_checkpoint` or a fashion-bench Lightning checkpoint), or nothing.

Which weights end up in the model:

* name + tag: open_clip downloads (or finds cached) the tag's weights;
* name or ``hf-hub:`` + local file: the architecture (for ``hf-hub:``, the repository's cached
  ``open_clip_config.json``) is built without weights and the file is loaded into it; a file that does not
  fit raises :class:`WeightsFileError` naming model, file and keys;
* ``hf-hub:`` alone: the repository's own weights (from the cache when offline), never a silent random init;
* name alone: random initialisation.

The image preprocessing (size, mean, std, interpolation, resize mode) is the model's own ``preprocess_cfg``:
the tag's, or the hub config's for ``hf-hub:`` models.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fashion_bench._env import import_open_clip
from fashion_bench.atomic import atomic_open
from fashion_bench.contracts import ImageSpec
from fashion_bench.data.transforms import build_image_transform
from fashion_bench.encoders.text_trim import encode_text_trimmed, trimmable

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
HF_HUB_PREFIX = "hf-hub:"
HUB_CONFIG_NAME = "open_clip_config.json"
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")

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


class WeightsFileError(ValueError):
    """A local weights file that cannot be read, or does not fit the model's architecture."""


def _offline_hint(model: str, pretrained: str | None) -> str:
    return (
        f"cannot load weights for model '{model}' pretrained '{pretrained}'. This machine is offline "
        f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}) or the weights are not cached. Offline "
        "alternatives: set `pretrained` to a local checkpoint file (an open_clip state dict, e.g. one exported by "
        "`fashion-bench fit --config configs/experiment/clip__synth-t2i.yaml`), use a model already in the "
        "open_clip / Hugging Face cache (set FASHION_BENCH_ONLINE=1 to allow downloads when online), or "
        "`pretrained: null` for random initialisation."
    )


def _hub_offline_hint(model: str, cache_dir: str | None) -> str:
    from huggingface_hub import constants

    return (
        f"cannot load model '{model}' with its hub weights: its {HUB_CONFIG_NAME} or weights are not in the "
        f"Hugging Face cache ({cache_dir or constants.HF_HUB_CACHE}) and this machine is offline "
        f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}) or the repository has none. Offline "
        "alternatives: `pretrained: <local weights file>` (loaded into the hub architecture when its config is "
        "cached), or an open_clip model name (FASHION_BENCH_ONLINE=1 allows downloads when online)."
    )


def _restored_elsewhere(pretrained: str | None) -> bool:
    """A weights file that is gone while a method is rebuilt from its own checkpoint (``--ckpt_path FILE``,
    ``fashion-bench index --run``): e.g. an earlier stage's export, named relative to another folder."""
    from fashion_bench.stages import weights_will_be_restored

    return bool(pretrained) and weights_will_be_restored() and _looks_like_path(pretrained) and not Path(pretrained).is_file()


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith(WEIGHT_SUFFIXES)


def _local_file(model: str, pretrained: str | None) -> Path | None:
    """``pretrained`` as a local file, None for a tag or no weights; a named file that is missing raises."""
    if not pretrained or not (_looks_like_path(pretrained) or Path(pretrained).is_file()):
        return None
    if not Path(pretrained).is_file():
        raise PretrainedUnavailableError(f"pretrained checkpoint file not found: {pretrained} (model '{model}')")
    return Path(pretrained)


def hub_config_file(model: str, cache_dir: str | None = None) -> Path:
    """The ``open_clip_config.json`` of an ``hf-hub:`` model: from the Hugging Face cache when offline."""
    from huggingface_hub import constants, hf_hub_download

    repo = model[len(HF_HUB_PREFIX):]
    try:
        return Path(hf_hub_download(repo_id=repo, filename=HUB_CONFIG_NAME, cache_dir=cache_dir))
    except Exception as err:  # the hub raises a family of unrelated types (offline, missing repo, network)
        raise PretrainedUnavailableError(
            f"cannot build the architecture of model '{model}': its {HUB_CONFIG_NAME} is not in the Hugging Face "
            f"cache ({cache_dir or constants.HF_HUB_CACHE}) and could not be fetched "
            f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}). Run once online (FASHION_BENCH_ONLINE=1) "
            f"to cache it, or use an open_clip model name. ({type(err).__name__}: {err})"
        ) from None


class _RandomInitWarningFilter(logging.Filter):
    """Drops open_clip's "initialized randomly" warning for an architecture whose weights are loaded right after."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _weights_loaded_next() -> Any:
    root, quiet = logging.getLogger(), _RandomInitWarningFilter()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def create_clip(model: str, pretrained: str | None, cache_dir: str | None = None) -> nn.Module:
    """The open_clip model with the weights ``pretrained`` names (see the module docstring)."""
    open_clip = open_clip_module()
    restored = _restored_elsewhere(pretrained)
    if restored:
        pretrained = None  # the architecture only: a checkpoint holding every weight is loaded next
    local = _local_file(model, pretrained)
    hub = model.startswith(HF_HUB_PREFIX)
    if hub and pretrained and local is None:
        raise ValueError(
            f"model '{model}' takes its hub weights (pretrained: null) or a local weights file, not the "
            f"pretrained tag '{pretrained}'"
        )
    name = f"local-dir:{hub_config_file(model, cache_dir).parent}" if hub and local else model
    try:
        with _weights_loaded_next() if restored or local is not None else contextlib.nullcontext():
            if local is not None:  # the architecture only: the file's weights are loaded below
                clip = open_clip.create_model(name, load_weights=False, pretrained_text=False, cache_dir=cache_dir)
            else:
                clip = open_clip.create_model(name, pretrained=pretrained, cache_dir=cache_dir, require_pretrained=hub)
    except RuntimeError as err:
        if "not found in built-ins" in str(err):
            hint = (f"; '{model}' looks like a weights file: give its architecture as the model (e.g. ViT-B-32, "
                    f"tiny-vit-64) and the file as pretrained: {model} (MODEL:FILE on a command line)"
                    if _looks_like_path(model) else "")
            raise ValueError(
                f"unknown encoder model '{model}': not an open_clip model name, not hf-hub:..., and not one of "
                f"the shipped configs {sorted(p.stem for p in MODEL_CONFIG_DIR.glob('*.json'))}{hint}"
            ) from None
        if hub:
            raise PretrainedUnavailableError(f"{_hub_offline_hint(model, cache_dir)} ({err})") from err
        if pretrained:
            raise PretrainedUnavailableError(f"{_offline_hint(model, pretrained)} ({err})") from err
        raise
    except OSError as err:
        raise PretrainedUnavailableError(f"{_offline_hint(model, pretrained)} ({err})") from err
    if local is not None:
        load_weights_file(clip, local, model)
    return clip


def load_weights_file(clip: nn.Module, path: Path, model: str) -> None:
    """Load a local weights file into ``clip``; raise :class:`WeightsFileError` when it does not fit.

    A bare open_clip state dict goes through ``open_clip.load_checkpoint`` (its format conversions); a file
    wrapping the CLIP under a prefix (a fashion-bench Lightning checkpoint: ``encoder.clip.``) is unwrapped.
    """
    state, recorded = _read_state_dict(path, model)
    prefix = _wrapper_prefix(state, clip, path, model)
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        if prefix:
            result = clip.load_state_dict(state, strict=False)
        else:  # a bare open_clip state dict: open_clip's loader, with its format conversions
            result = open_clip_module().load_checkpoint(clip, str(path), strict=False)
    except (RuntimeError, AssertionError) as err:  # open_clip asserts on some shape changes, torch raises
        mismatched = _shape_mismatches(state, clip) or [f"{type(err).__name__}: {err}"]
        raise WeightsFileError(_misfit(model, path, recorded, mismatched=mismatched)) from None
    if result.missing_keys or result.unexpected_keys:
        raise WeightsFileError(
            _misfit(model, path, recorded, missing=result.missing_keys, unexpected=result.unexpected_keys)
        )


def _shape_mismatches(state: dict[str, Any], clip: nn.Module) -> list[str]:
    expected = clip.state_dict()
    return [
        f"{k}: file {list(v.shape)}, model {list(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and hasattr(v, "shape") and v.shape != expected[k].shape
    ]


def _read_state_dict(path: Path, model: str) -> tuple[dict[str, Any], str | None]:
    """The file's tensors (unwrapped from ``state_dict``) and the model name it records, if any."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        if path.suffix == ".safetensors":
            return load_file(str(path)), None
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, SafetensorError, RuntimeError, OSError, ValueError, EOFError) as err:
        raise WeightsFileError(
            f"cannot read pretrained file {path} for model '{model}' as a state dict: {err}"
        ) from None
    recorded = obj.get("model") if isinstance(obj, dict) and isinstance(obj.get("model"), str) else None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state:
        raise WeightsFileError(f"pretrained file {path} for model '{model}' holds no state dict")
    return state, recorded


def _wrapper_prefix(state: dict[str, Any], clip: nn.Module, path: Path, model: str) -> str:
    """The key prefix under which ``state`` holds the CLIP ("" for a bare state dict or an unknown layout)."""
    anchor = next(k for k in clip.state_dict() if k.startswith("visual."))
    prefixes = {k[: -len(anchor)] for k in state if k.endswith(anchor)}
    prefixes = {p for p in prefixes if p == "" or p.endswith(".")}
    if len(prefixes) > 1:
        raise WeightsFileError(
            f"pretrained file {path} holds several models under the prefixes {sorted(prefixes)}; model "
            f"'{model}' needs one: export the one you mean with export_open_clip_checkpoint"
        )
    return prefixes.pop() if prefixes else ""


def _few(keys: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... (+{len(keys) - n} more)" if len(keys) > n else "")


def _misfit(
    model: str, path: Path, recorded: str | None, *, missing: Sequence[str] = (), unexpected: Sequence[str] = (),
    mismatched: Sequence[str] = (),
) -> str:
    parts = [
        f"{len(keys)} {what} ({_few(list(keys))})"
        for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("size mismatches", mismatched))
        if keys
    ]
    origin = f" (the file records model '{recorded}')" if recorded and recorded != model else ""
    return (
        f"pretrained file {path}{origin} does not fit the architecture of model '{model}': {'; '.join(parts)}. "
        "Point `pretrained` at weights of this architecture, or set `model` to the file's."
    )


def image_spec_of(clip: nn.Module) -> ImageSpec:
    """The model's own preprocessing (open_clip's ``visual.preprocess_cfg``, with open_clip's defaults)."""
    open_clip = open_clip_module()
    cfg = getattr(clip.visual, "preprocess_cfg", {}) or {}
    size = clip.visual.image_size
    return ImageSpec(
        size=int(size[0] if isinstance(size, (tuple, list)) else size),
        mean=tuple(float(v) for v in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(float(v) for v in cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        interpolation=cfg.get("interpolation", "bicubic"),
        resize_mode=cfg.get("resize_mode", "shortest"),
    )


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
        self.model_name = model
        self.pretrained = pretrained or None
        self.clip = create_clip(model, self.pretrained, cache_dir)
        # the weights actually in the model: the file, the tag, the hub repository's, or none (random)
        self.weights = self.pretrained or (model if model.startswith(HF_HUB_PREFIX) else None)
        self.tokenizer = open_clip_module().get_tokenizer(model, cache_dir=cache_dir)
        self.image_spec = image_spec_of(self.clip)
        self.trim_text = trimmable(self.clip)  # encode texts without their padding (exact: text_trim.py)
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
        if not self.trim_text:
            return self.clip.encode_text(tokens, normalize=normalize)
        features = encode_text_trimmed(self.clip, tokens)
        return F.normalize(features, dim=-1) if normalize else features

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
