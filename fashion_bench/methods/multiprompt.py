"""Multi-prompt FashionCLIP (Computer Engineering, 2025; CLIP-ReID-style two-stage prompt learning). Task ``id``.

* Stage 1, :class:`MultiPromptStage1` (experiment ``multiprompt-stage1__<dataset>``): both CLIP towers frozen;
  learnable text prompts per identity (:class:`~fashion_bench.encoders.prompts.TextPrompts`) are optimised with
  supervised contrastive losses image -> text and text -> image (same identity = positive). The image features of
  the training split are extracted once, with the evaluation transforms, at the start of ``fit`` and looked up
  by dataset index. Its ``fit`` publishes the selected weights-only checkpoint in its run directory
  (``published/model.ckpt``, named by stage 2 as ``run:multiprompt-stage1__<dataset>/model.ckpt``).
* Stage 2, :class:`MultiPrompt` (experiment ``multiprompt__<dataset>``): loads stage 1's checkpoint
  (``stage1_ckpt``: the encoder, the prompts and their configuration); the text tower and the text prompts stay
  frozen and give one feature per identity, computed once at the start of ``fit``. Visual prompts
  (:class:`~fashion_bench.encoders.prompts.VisualPrompts`) and the image tower train with the ``reid-baseline``
  losses (ID on a BNNeck classifier + batch-hard triplet) plus an image -> text cross-entropy against the
  identity text features.

Retrieval embeds image queries and the gallery alike: stage 1 by the (frozen) normalised CLIP image feature,
stage 2 by the BNNeck embedding of the prompted image feature.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fashion_bench.contracts import Preprocessing
from fashion_bench.encoders.prompts import TextPrompts, VisualPrompts
from fashion_bench.losses import supcon_loss
from fashion_bench.methods.base import NEW_PARAMETER_LR_FACTOR, ClipRetrievalMethod, EncoderConfig, OptimConfig
from fashion_bench.methods.heads import ReIDHeadConfig, resolve_identities
from fashion_bench.methods.reid_baseline import ReidBaseline
from fashion_bench.stages import weights_will_be_restored

MAX_LOGIT_SCALE = 100.0


@dataclass
class TextPromptConfig:
    """Learnable tokens per identity (``context_tokens``) and shared by all (``shared_tokens``), substituted for
    the ``{}`` of each template; several templates are averaged ("multiple prompts")."""

    context_tokens: int = 4
    shared_tokens: int = 0
    templates: list[str] = field(default_factory=lambda: ["a photo of a {} product."])
    init_std: float = 0.02


@dataclass
class VisualPromptConfig:
    """VPT tokens after the class token: ``count`` per block (``deep``) or for the first block only."""

    count: int = 5
    deep: bool = False


def clip_logit_scale(method: ClipRetrievalMethod) -> torch.Tensor:
    return method.encoder.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)


class MultiPromptStage1(ClipRetrievalMethod):
    """Stage 1: text prompts learnt against the frozen image features; only the prompts train."""

    method_name = "multiprompt"
    supports = {"id": ("image",)}
    main_artefact = "model"

    def __init__(
        self,
        encoder: EncoderConfig | None = None,
        optim: OptimConfig | None = None,
        prompts: TextPromptConfig | None = None,
        num_identities: int | None = None,
        temperature: float | None = None,
        publish_to: str | None = None,
    ) -> None:
        """
        Args:
            encoder: the CLIP (both towers are frozen, whatever its freeze flags say).
            prompts: the text prompt layout (token counts, templates).
            num_identities: number of identity prompts; by default the datamodule's training identities.
            temperature: logits = (normalised image . normalised text) / temperature; ``null`` uses CLIP's learnt
                logit scale (fixed).
            publish_to: also copy the published checkpoint (``published/model.ckpt`` of the run: the selected
                prompts and encoder) to this stable path (relative to the working directory).
        """
        encoder = replace(encoder or EncoderConfig(), freeze_image=True, freeze_text=True)
        super().__init__(encoder, optim)
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        self.prompt_config = prompts or TextPromptConfig()
        self.temperature, self.publish_to = temperature, publish_to
        self.text_prompts: TextPrompts | None = None
        if num_identities is not None:
            self.text_prompts = self.build_prompts(num_identities)
        self.image_features: torch.Tensor | None = None  # [N_train, D], by training-dataset index, during fit
        self.save_config(
            encoder=encoder, optim=self.optim, prompts=self.prompt_config, num_identities=num_identities,
            temperature=temperature, publish_to=publish_to,
        )

    def preprocessing(self) -> Preprocessing:
        """Training looks the image features up by index (extracted once in ``on_fit_start``): no pixels needed."""
        return replace(super().preprocessing(), train_images=False)

    def build_prompts(self, num_identities: int) -> TextPrompts:
        return TextPrompts(self.encoder.clip, self.encoder.tokenize, num_identities, **asdict(self.prompt_config))

    def setup(self, stage: str) -> None:
        built = self.text_prompts.num_identities if self.text_prompts is not None else None
        count = resolve_identities(self, built, stage)
        if self.text_prompts is None:
            self.text_prompts = self.build_prompts(count).to(self.device)
        self.hparams["num_identities"] = count

    def train(self, mode: bool = True) -> MultiPromptStage1:
        super().train(mode)
        self.encoder.eval()  # frozen towers: fixed features, no dropout
        return self

    # --- embeddings -----------------------------------------------------------------------------------------
    def encode_query(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "image_features" not in batch:
            raise ValueError(f"{type(self).__name__} embeds image queries (task 'id'); got a query batch with keys {sorted(batch)}")
        return F.normalize(batch["image_features"], dim=-1)

    def identity_features(self, identities: torch.Tensor) -> torch.Tensor:
        """Prompted text features [B, D] of identity labels [B]; each distinct identity is encoded once."""
        unique, inverse = identities.unique(return_inverse=True)
        return self.text_prompts(self.encoder.clip, unique)[inverse]

    # --- training -------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """The frozen image features of the training images, by training-dataset index (split order)."""
        _, self.image_features = self.encode_split("train")

    def on_fit_end(self) -> None:
        self.image_features = None

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        labels = batch["label"]
        image = F.normalize(self.image_features[batch["index"]], dim=-1)
        text = F.normalize(self.identity_features(labels), dim=-1)
        image, text, labels = self.gather(image), self.gather(text), self.gather(labels)
        scale = 1.0 / self.temperature if self.temperature else clip_logit_scale(self)
        i2t = supcon_loss(image, text, labels, labels, scale)
        t2i = supcon_loss(text, image, labels, labels, scale)
        loss = i2t + t2i
        size = batch["label"].shape[0]
        self.log("train/i2t", i2t, batch_size=size)
        self.log("train/t2i", t2i, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return self.check_finite(loss)


def load_stage1_checkpoint(path: str | None) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(hyper-parameters, text-prompt tensors, encoder state) of a stage-1 Lightning checkpoint."""
    hint = (
        "run stage 1 first (`fashion-bench fit --config configs/experiment/multiprompt-stage1__<dataset>.yaml` "
        "publishes <run>/published/model.ckpt, named as run:multiprompt-stage1__<dataset>/model.ckpt), or point "
        "--model.init_args.stage1_ckpt at a stage-1 run directory or checkpoint file"
    )
    if not path:
        raise ValueError(f"multiprompt stage 2 needs stage1_ckpt: {hint}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"multiprompt stage-1 checkpoint not found: {path}; {hint}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", {}) if isinstance(checkpoint, dict) else {}
    prompts = {k.removeprefix("text_prompts."): v for k, v in state.items() if k.startswith("text_prompts.")}
    if not prompts:
        raise ValueError(f"{path} holds no text prompts (no 'text_prompts.*' in its state_dict): not a multiprompt stage-1 checkpoint")
    hparams = checkpoint.get("hyper_parameters") or {}
    if "prompts" not in hparams or "encoder" not in hparams:
        raise ValueError(f"{path} lacks the stage-1 hyper-parameters 'prompts' and 'encoder'")
    encoder = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    return dict(hparams), prompts, encoder


class MultiPrompt(ReidBaseline):
    """Stage 2: visual prompts + image tower trained with ID, triplet and image -> text losses."""

    method_name = "multiprompt"

    def __init__(
        self,
        encoder: EncoderConfig | None = None,
        optim: OptimConfig | None = None,
        stage1_ckpt: str | None = None,
        visual_prompts: VisualPromptConfig | None = None,
        head: ReIDHeadConfig | None = None,
        i2t_weight: float = 1.0,
        num_identities: int | None = None,
        prompts: TextPromptConfig | None = None,
    ) -> None:
        """
        Args:
            encoder: the CLIP architecture; its weights are stage 1's (``pretrained`` is not loaded) and
                ``freeze_text`` is forced on.
            stage1_ckpt: a stage-1 checkpoint (its ``publish_to`` file or a run's ``last.ckpt``): encoder weights,
                text prompts and their layout.
            visual_prompts: VPT token count and depth (``count: 0`` trains the image tower without prompts).
            head: ID / triplet weights, margin, label smoothing (also of the image -> text loss), embedding switch.
            i2t_weight: weight of the image -> text cross-entropy.
            num_identities / prompts: the stage-1 prompt layout, read from ``stage1_ckpt`` and recorded here so
                that this stage's own checkpoint rebuilds the method when the stage-1 file is gone.
        """
        encoder = replace(encoder or EncoderConfig(), pretrained=None)
        restoring = weights_will_be_restored() and not (stage1_ckpt and Path(stage1_ckpt).is_file())
        if restoring and num_identities is not None and prompts is not None:
            prompt_config, prompt_state, encoder_state = asdict(prompts), None, None
        else:
            hparams, prompt_state, encoder_state = load_stage1_checkpoint(stage1_ckpt)
            if hparams["encoder"]["model"] != encoder.model:
                raise ValueError(f"{stage1_ckpt} was trained with encoder '{hparams['encoder']['model']}', not '{encoder.model}'")
            prompt_config, num_identities = hparams["prompts"], int(prompt_state["context_tokens"].shape[0])
        super().__init__(encoder, optim, head, num_identities)
        self.identity_source = f"stage-1 checkpoint {stage1_ckpt}"
        self.text_prompts = TextPrompts(self.encoder.clip, self.encoder.tokenize, num_identities, **prompt_config)
        if encoder_state is not None:
            self.encoder.load_state_dict(encoder_state)
            self.text_prompts.load_state_dict(prompt_state)
            self.record_stage_input("stage1_ckpt", stage1_ckpt)
        self.text_prompts.requires_grad_(False)
        self.visual_config = visual_prompts or VisualPromptConfig()
        self.visual_prompts = VisualPrompts(self.encoder.clip.visual, **asdict(self.visual_config))
        self.i2t_weight = i2t_weight
        self.identity_text: torch.Tensor | None = None  # [N, D] normalised, computed at the start of fit
        self.save_config(
            encoder=encoder, optim=self.optim, stage1_ckpt=stage1_ckpt, visual_prompts=self.visual_config,
            head=self.head_config, i2t_weight=i2t_weight, num_identities=num_identities, prompts=prompt_config,
        )

    def default_lr_groups(self) -> dict[str, float]:
        prompts = {"visual_prompts.": NEW_PARAMETER_LR_FACTOR * self.optim.lr} if self.visual_config.count > 0 else {}
        return {**super().default_lr_groups(), **prompts}

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual_prompts(self.encoder.clip.visual, images)

    @torch.no_grad()
    def on_fit_start(self) -> None:
        identities = torch.arange(self.text_prompts.num_identities, device=self.device)
        self.identity_text = torch.cat(
            [F.normalize(self.text_prompts(self.encoder.clip, chunk), dim=-1) for chunk in identities.split(256)]
        )

    def on_fit_end(self) -> None:
        self.identity_text = None

    def loss_terms(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = clip_logit_scale(self) * F.normalize(features, dim=-1) @ self.identity_text.t()
        i2t = F.cross_entropy(logits, labels, label_smoothing=self.head_config.label_smoothing)
        return {**super().loss_terms(features, labels), "i2t": i2t}

    def total_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return super().total_loss(terms) + self.i2t_weight * terms["i2t"]
