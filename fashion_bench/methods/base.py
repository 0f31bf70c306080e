"""The method contract: :class:`RetrievalMethod` (no encoder assumed) and :class:`ClipRetrievalMethod` (one CLIP).

A method owns its encoder(s) and heads and says how to embed the two sides of a retrieval task; it never computes
metrics. The evaluator (``fashion_bench.retrieval.callback.RetrievalEvaluator``) drives evaluation:

1. ``validation_step`` / ``test_step`` run :meth:`encode_images` on gallery batches (each image once);
2. gallery embeddings = :meth:`encode_gallery` of those features;
3. query embeddings = :meth:`encode_query` of a batch built from what the queries have: ``text`` (tokens),
   ``image_features`` (the per-image features of the reference image, looked up, never re-encoded), both, and
   ``category`` (list of str). Queries of different kinds are batched apart. A method may also return named
   per-query values (:meth:`encode_query_with_diagnostics`), which the evaluator exports on ``test``.

A method declares what it supports in :attr:`RetrievalMethod.supports` (task -> query kinds); the data layer
checks it when it is set up, before any training step. Everything a method needs of the training images'
features comes from :meth:`RetrievalMethod.encode_split` (one DDP-aware pass, each image once).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from fashion_bench.contracts import Preprocessing
from fashion_bench.encoders import ClipEncoder, export_open_clip_checkpoint
from fashion_bench.methods.encode import encode_split
from fashion_bench.stages import sha256


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
    """AdamW with warm-up and a cosine or constant schedule.

    ``lr_groups`` maps a parameter-name prefix to its own learning rate (the longest matching prefix wins), e.g.
    ``{"combiner.": 1e-3, "encoder.": 1e-5}``: new heads and prompts usually want a larger rate than a
    pretrained backbone. A method may declare defaults in :meth:`RetrievalMethod.default_lr_groups`.
    """

    lr: float = 1e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 0
    schedule: str = "cosine"  # cosine | constant
    lr_groups: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"unknown schedule '{self.schedule}'; expected 'cosine' or 'constant'")
        bad = {k: v for k, v in self.lr_groups.items() if not isinstance(v, (int, float)) or v < 0}
        if bad:
            raise ValueError(f"optim.lr_groups: learning rates must be non-negative numbers, got {bad}")


# Parameters a method adds on top of the pretrained encoder (recognition / ID heads, visual prompts) learn at this
# multiple of optim.lr by default, the usual practice for new layers on a pretrained backbone. Measured on
# multiprompt and its reid-baseline: docs/methods/multiprompt.md.
NEW_PARAMETER_LR_FACTOR = 10.0


def _no_decay(name: str, param: torch.nn.Parameter) -> bool:
    return param.ndim < 2 or any(key in name for key in ("logit_scale", "bias", "embedding", "token"))


class RetrievalMethod(pl.LightningModule):
    """The contract every method implements; assumes no particular encoder.

    Subclasses set :attr:`method_name` and :attr:`supports`, implement :meth:`preprocessing`,
    :meth:`encode_images`, :meth:`encode_query` and ``training_step``, and call :meth:`save_config` with exactly
    their constructor arguments (checkpoints then load with ``weights_only=True`` and ``--ckpt_path FILE``
    re-instantiates the method from them).
    """

    method_name: ClassVar[str] = "method"
    # task -> the query kinds (contracts.QUERY_KINDS) this method embeds for it
    supports: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, optim: OptimConfig | None = None) -> None:
        super().__init__()
        self.optim = optim or OptimConfig()
        self.stage_inputs: dict[str, dict[str, Any]] = {}  # provenance of the artefacts this method started from

    def save_config(self, **init_args: Any) -> None:
        """Record the constructor arguments as plain data, with the class path for ``--ckpt_path FILE``."""
        plain = {k: asdict(v) if hasattr(v, "__dataclass_fields__") else v for k, v in init_args.items()}
        cls = type(self)
        self.hparams.clear()  # a subclass's call replaces its base class's (Lightning would merge them)
        self.save_hyperparameters({"_class_path": f"{cls.__module__}.{cls.__qualname__}", **plain})

    # --- contract checks ------------------------------------------------------------------------------------
    def check_supports(self, task: str, query_kinds: set[str], dataset: str) -> None:
        """Raise when this method cannot train or embed ``task`` / ``query_kinds`` (called by the data layer)."""
        name = f"method '{self.method_name}' ({type(self).__name__})"
        if task not in self.supports:
            raise ValueError(
                f"{name} does not support task '{task}' of dataset '{dataset}'; it supports tasks {sorted(self.supports)}"
            )
        unsupported = sorted(query_kinds - set(self.supports[task]))
        if unsupported:
            raise ValueError(
                f"{name} cannot embed {unsupported} queries of dataset '{dataset}' (task '{task}'); for this task it "
                f"embeds {list(self.supports[task])} queries"
            )

    # --- data contract ----------------------------------------------------------------------------------------
    def preprocessing(self) -> Preprocessing:
        raise NotImplementedError

    # --- embedding contract -----------------------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Per-image features shared by the gallery side and query references (not necessarily normalised)."""
        raise NotImplementedError

    def encode_gallery(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(batch["image_features"], dim=-1)

    def encode_query(self, batch: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def encode_query_with_diagnostics(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The query embeddings and named per-query values, each [B] with rows aligned with the batch (e.g. the
        image / text weights of a composed query). The evaluator writes them with the query ids to
        ``query_diagnostics.jsonl`` on ``test``; they never enter a metric. Default: no values."""
        return self.encode_query(batch), {}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"features": self.encode_images(batch["image"]), "index": batch["index"], "image_ok": batch["image_ok"]}

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self.validation_step(batch, batch_idx)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self.validation_step(batch, batch_idx)

    # --- services ---------------------------------------------------------------------------------------------
    def encode_split(
        self, role: str = "train", encode: Callable[[torch.Tensor], torch.Tensor] | None = None, desc: str | None = None
    ) -> tuple[list[str], torch.Tensor]:
        """(item ids, features [N, D]) of every image of a split's gallery / training images, with the evaluation
        transforms, encoded once each by ``encode`` (default :meth:`encode_images`), sharded over DDP ranks and
        gathered so that every rank gets all of them. See :func:`fashion_bench.methods.encode.encode_split`."""
        return encode_split(self, role, encode or self.encode_images, desc=desc)

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

    # --- stage artefacts ----------------------------------------------------------------------------------------
    def record_stage_input(self, name: str, path: str | Path) -> None:
        """Remember which file an argument loaded (path, run directory, sha256) for results.json; the record
        travels in this method's checkpoints, so it survives the file being deleted later."""
        path = Path(path)
        run = next((p for p in path.resolve().parents if (p / "config.yaml").is_file()), None)
        self.stage_inputs[name] = {"path": str(path), "run": str(run) if run else None, "sha256": sha256(path)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["stage_inputs"] = self.stage_inputs

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.stage_inputs = dict(checkpoint.get("stage_inputs") or self.stage_inputs)

    # --- optimisation -------------------------------------------------------------------------------------------
    def default_lr_groups(self) -> dict[str, float]:
        """Per-prefix learning rates of this method (``optim.lr_groups`` overrides them)."""
        return {}

    def trainable_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: per learning rate (longest matching ``lr_groups`` prefix, else ``optim.lr``), decay and
        no-decay parameters apart."""
        params = self.trainable_parameters()
        if not params:
            raise ValueError(f"{type(self).__name__} has no trainable parameters (everything is frozen)")
        rates = {**self.default_lr_groups(), **self.optim.lr_groups}
        prefixes = sorted(rates, key=len, reverse=True)
        unused = [p for p in prefixes if not any(n.startswith(p) for n, _ in params)]
        if unused:
            raise ValueError(f"optim.lr_groups prefixes {unused} match no trainable parameter of {type(self).__name__}")
        groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
        for name, param in params:
            lr = next((rates[p] for p in prefixes if name.startswith(p)), self.optim.lr)
            groups.setdefault((lr, _no_decay(name, param)), []).append(param)
        return [
            {"params": ps, "lr": lr, "weight_decay": 0.0 if no_decay else self.optim.weight_decay}
            for (lr, no_decay), ps in groups.items()
        ]

    def configure_optimizers(self):
        # fused: one kernel over all parameters (same update; ~3x faster than the per-tensor loop on CPU, where the
        # step of the tiny CLIP's 6M-row token embedding was ~15 % of a training step)
        optimizer = torch.optim.AdamW(self.param_groups(), lr=self.optim.lr, betas=self.optim.betas, eps=self.optim.eps,
                                      fused=self._fused_adamw_supported())
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

    def _fused_adamw_supported(self) -> bool:
        """torch's fused AdamW runs on CPU and CUDA float tensors (not e.g. MPS on older releases)."""
        return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for _, p in self.trainable_parameters())

    # --- export -------------------------------------------------------------------------------------------------
    def published_files(self, directory: Path) -> dict[str, Path]:
        """Extra files a finished stage publishes beside its selected checkpoint (e.g. an open_clip export)."""
        return {}

    def describe_encoder(self) -> dict[str, Any]:
        """The ``encoder`` entry of results.json."""
        return {"name": None, "pretrained": None}


class ClipRetrievalMethod(RetrievalMethod):
    """A method built on one open_clip CLIP (``self.encoder``): its preprocessing and image features."""

    def __init__(self, encoder: EncoderConfig | None = None, optim: OptimConfig | None = None) -> None:
        super().__init__(optim)
        self.encoder_config = encoder or EncoderConfig()
        self.encoder = self.encoder_config.build()
        pretrained = self.encoder_config.pretrained
        if pretrained and Path(pretrained).is_file():
            self.record_stage_input("encoder.pretrained", pretrained)

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(image_spec=self.encoder.image_spec, tokenize=self.encoder.tokenize)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode_image(images, normalize=False)

    def export_encoder(self, path: str | Path) -> Path:
        return export_open_clip_checkpoint(self.encoder, path)

    def published_files(self, directory: Path) -> dict[str, Path]:
        """A CLIP stage also publishes its encoder as an open_clip checkpoint (``encoder.pretrained`` of the
        next stage)."""
        return {"encoder": self.export_encoder(directory / "encoder.pt")}

    def describe_encoder(self) -> dict[str, Any]:
        return {"name": self.encoder_config.model, "pretrained": self.encoder_config.pretrained}
