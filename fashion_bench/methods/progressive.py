"""Progressive learning for hybrid-modality queries (Zhao, Song & Jin, SIGIR 2022, "PL4CIR"), reconstructed.

No code is public; docs/methods/progressive.md says what the paper gives and what we chose.

* Stage 1: any pretrained CLIP (here the synthetic one, ``weights/synth-clip-tiny.pt``).
* Stage 2, :class:`ProgressiveStage2` (experiment ``progressive-stage2__<dataset>``, task ``t2i``): one ``fit``
  over the catalogue's products with weighted tasks (weight 0 disables one): image-text contrastive, attribute and
  category recognition (one linear head per label, shared by the image and the text features), and image-image
  retrieval between two views of the same product. Its ``fit`` publishes ``encoder.pt`` for stage 3.
* Stage 3, :class:`Progressive` (experiment ``progressive__<dataset>``, task ``cir``): both encoders train; a
  composed query is normalise(w_I f_img + w_T f_txt) of the normalised reference-image and text features, with
  (w_I, w_T) from :class:`QueryWeighting`. Loss: query -> target InfoNCE plus, for adaptive weighting, a
  self-supervised weighting loss whose target comes from the frozen stage-2 encoders (:class:`WeightingTarget`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fashion_bench.contracts import Preprocessing
from fashion_bench.encoders import ClipEncoder
from fashion_bench.losses import contrastive_loss
from fashion_bench.methods.base import NEW_PARAMETER_LR_FACTOR, ClipRetrievalMethod, EncoderConfig, OptimConfig
from fashion_bench.methods.clip import ClipMethod
from fashion_bench.methods.clip4cir import FeatureCache

MAX_LOGIT_SCALE = 100.0
# Stage 3's weighting learns at 100 x optim.lr: its target is nearly one-hot per change type, and at 10 x it stayed
# near 0.5 / 0.5 within the demo's epoch. Chosen on the val split (seeds 0 and 1), docs/methods/progressive.md.
WEIGHTING_LR_FACTOR = 100.0
WEIGHTINGS = ("adaptive", "fixed", "global")


def clip_scale(encoder: ClipEncoder) -> torch.Tensor:
    return encoder.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)


# --- stage 2 ---------------------------------------------------------------------------------------------------
@dataclass
class Stage2Tasks:
    """Weights of stage 2's pre-training tasks (0 disables a task)."""

    image_text: float = 1.0
    attributes: float = 0.5
    category: float = 0.5
    image_image: float = 0.5

    def __post_init__(self) -> None:
        weights = vars(self)
        bad = {k: v for k, v in weights.items() if not isinstance(v, (int, float)) or v < 0}
        if bad:
            raise ValueError(f"progressive stage 2: task weights must be non-negative numbers, got {bad}")
        if not any(weights.values()):
            raise ValueError(f"progressive stage 2: every task weight is 0 ({weights}); enable at least one task")


class RecognitionHeads(nn.Module):
    """One linear classifier per label (``category``, ``attr_<name>``) on L2-normalised features."""

    def __init__(self, dim: int, sizes: dict[str, int]) -> None:
        super().__init__()
        self.classifiers = nn.ModuleDict({name: nn.Linear(dim, size) for name, size in sizes.items()})

    def sizes(self) -> dict[str, int]:
        return {name: head.out_features for name, head in self.classifiers.items()}

    def loss(self, name: str, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of one label; unknown labels (-1) are ignored, a batch without any known label gives 0."""
        logits = self.classifiers[name](F.normalize(features, dim=-1))
        known = labels >= 0
        if not bool(known.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits[known], labels[known])


class ProgressiveStage2(ClipMethod):
    """Stage 2: fashion-domain pre-training of both CLIP encoders with several weighted tasks in one ``fit``.

    Retrieval (text and image queries) embeds like the CLIP baseline; the recognition heads only train.
    """

    method_name = "progressive-stage2"
    supports = {"t2i": ("text", "image")}

    def __init__(
        self,
        encoder: EncoderConfig | None = None,
        optim: OptimConfig | None = None,
        tasks: Stage2Tasks | None = None,
        attributes: list[str] | None = None,
        label_sizes: dict[str, int] | None = None,
        publish_to: str | None = None,
    ) -> None:
        """
        Args:
            tasks: the weight of each task (image-text contrastive, attribute / category recognition, image-image
                retrieval between two views of a product).
            attributes: the item attributes to recognise (names of the datamodule's ``attribute_vocab``); ``null``
                recognises every attribute of the training split.
            label_sizes: the class count of every head (``category``, ``attr_<name>``), found from the training
                split at setup and recorded here so that a checkpoint rebuilds the heads.
            publish_to: also copy the published encoder (``published/encoder.pt``) to this stable path.
        """
        super().__init__(encoder, optim, learn_temperature=True, publish_to=publish_to)
        self.tasks = tasks or Stage2Tasks()
        self.attributes = list(attributes) if attributes is not None else None
        self.heads: RecognitionHeads | None = None
        if label_sizes is not None:
            self.heads = RecognitionHeads(self.encoder.embed_dim, label_sizes)
        self.attribute_columns: dict[str, int] = {}  # head name -> column of the batch's `attributes`
        self.save_config(
            encoder=self.encoder_config, optim=self.optim, tasks=self.tasks, attributes=self.attributes,
            label_sizes=label_sizes, publish_to=publish_to,
        )

    def preprocessing(self) -> Preprocessing:
        views = 2 if self.tasks.image_image > 0 else 1
        return Preprocessing(image_spec=self.encoder.image_spec, tokenize=self.encoder.tokenize, views=views)

    def recognises(self) -> bool:
        return self.tasks.attributes > 0 or self.tasks.category > 0

    def setup(self, stage: str) -> None:
        if not self.recognises():
            return
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if self.heads is not None and stage != "fit":
            return  # evaluation only: the heads do not embed
        if datamodule is None:
            raise ValueError("progressive stage 2 needs label_sizes or a datamodule to size its recognition heads")
        sizes = self.label_sizes_of(datamodule)
        if self.heads is None:
            self.heads = RecognitionHeads(self.encoder.embed_dim, sizes).to(self.device)
        elif stage == "fit" and self.heads.sizes() != sizes:
            raise ValueError(
                f"progressive stage 2: label_sizes {self.heads.sizes()} do not match the training split of dataset "
                f"'{datamodule.dataset}' ({sizes})"
            )
        self.hparams["label_sizes"] = self.heads.sizes()

    def label_sizes_of(self, datamodule) -> dict[str, int]:
        """Class counts of the heads from the training split; remembers each attribute head's batch column."""
        sizes: dict[str, int] = {}
        if self.tasks.category > 0:
            sizes["category"] = len(datamodule.categories)
        if self.tasks.attributes > 0:
            vocab = datamodule.attribute_vocab
            names = list(vocab) if self.attributes is None else self.attributes
            unknown = [n for n in names if n not in vocab]
            if unknown or not names:
                raise ValueError(
                    f"progressive stage 2: attributes {unknown or names} are not attributes of the training split of "
                    f"dataset '{datamodule.dataset}' (it has {sorted(vocab)}); set `attributes` or tasks.attributes: 0"
                )
            columns = list(vocab)
            for name in names:
                sizes[f"attr_{name}"] = len(vocab[name])
                self.attribute_columns[f"attr_{name}"] = columns.index(name)
        return sizes

    def default_lr_groups(self) -> dict[str, float]:
        return {"heads.": NEW_PARAMETER_LR_FACTOR * self.optim.lr} if self.heads is not None else {}

    def recognition_losses(self, batch: dict[str, torch.Tensor], image: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean over the image and the text features of each head's cross-entropy, by task."""
        labels = {"category": batch["category"]} if self.tasks.category > 0 else {}
        if self.tasks.attributes > 0:
            if "attributes" not in batch:
                raise ValueError(
                    "progressive stage 2: tasks.attributes > 0 but the training batch has no 'attributes' (the "
                    "dataset's items carry none); set tasks.attributes: 0"
                )
            labels.update({name: batch["attributes"][:, col] for name, col in self.attribute_columns.items()})
        per_head = {name: (self.heads.loss(name, image, y) + self.heads.loss(name, text, y)) / 2 for name, y in labels.items()}
        attributes = [v for k, v in per_head.items() if k.startswith("attr_")]
        out = {"category": per_head["category"]} if "category" in per_head else {}
        if attributes:
            out["attributes"] = torch.stack(attributes).mean()
        return out

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if "label" not in batch:
            raise ValueError(f"progressive stage 2 trains on image-text products (task 't2i'); got a batch with keys {sorted(batch)}")
        scale, labels = clip_scale(self.encoder), self.gather(batch["label"])
        images = batch["image"] if self.tasks.image_image == 0 else torch.cat([batch["image"], batch["views"][:, 0]])
        image_features = self.encode_images(images)
        image = image_features[: batch["image"].shape[0]]
        text = self.encoder.encode_text(batch["text"], normalize=False)
        terms: dict[str, torch.Tensor] = {}
        if self.tasks.image_text > 0:
            terms["image_text"] = contrastive_loss(
                self.gather(F.normalize(image, dim=-1)), self.gather(F.normalize(text, dim=-1)), scale,
                query_labels=labels, target_labels=labels,
            )
        if self.tasks.image_image > 0:
            view = image_features[batch["image"].shape[0]:]
            terms["image_image"] = contrastive_loss(
                self.gather(F.normalize(image, dim=-1)), self.gather(F.normalize(view, dim=-1)), scale,
                query_labels=labels, target_labels=labels,
            )
        if self.recognises():
            terms.update(self.recognition_losses(batch, image, text))
        loss = sum(getattr(self.tasks, name) * value for name, value in terms.items())
        size = batch["text"].shape[0]
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return self.check_finite(loss)


# --- stage 3 ---------------------------------------------------------------------------------------------------
class QueryWeighting(nn.Module):
    """(w_I, w_T) per composed query, summing to 1.

    ``adaptive``: a small MLP on [f_img, f_txt] (normalised, detached: the weights follow the features, they do not
    shape them) with a softmax; its last layer starts at zero, i.e. at 0.5 / 0.5. ``global``: one learned pair
    shared by all queries. ``fixed``: 0.5 / 0.5 (the CLIP baseline's sum of normalised features).
    """

    def __init__(self, dim: int, mode: str = "adaptive", hidden_dim: int | None = None) -> None:
        super().__init__()
        if mode not in WEIGHTINGS:
            raise ValueError(f"unknown weighting '{mode}'; expected one of {WEIGHTINGS}")
        self.mode = mode
        if mode == "adaptive":
            hidden = hidden_dim or dim
            self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 2))
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)
        elif mode == "global":
            self.logits = nn.Parameter(torch.zeros(2))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Weights [B, 2] (image, text) of normalised features [B, D]."""
        if self.mode == "adaptive":
            return self.mlp(torch.cat([image, text], dim=-1).detach()).softmax(dim=-1)
        logits = self.logits if self.mode == "global" else image.new_zeros(2)
        return logits.softmax(dim=-1).expand(image.shape[0], 2)


def compose(image: torch.Tensor, text: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """normalise(w_I image + w_T text) of normalised features and weights [B, 2]."""
    return F.normalize(weights[:, :1] * image + weights[:, 1:] * text, dim=-1)


class WeightingTarget:
    """The self-supervised target of the adaptive weighting (our reconstruction):
    softmax((sim(target, reference), sim(target, text)) / temperature), cosine similarities from the encoders as
    they were when ``fit`` started (the stage-2 encoders), frozen, each distinct input encoded once.

    Image-image similarities run much higher than image-text ones in a CLIP space; ``center`` subtracts each
    similarity's batch mean first, so the target says which modality tells *this* query's target apart better
    than usual (without it nearly every target leans on the image).

    Not an ``nn.Module``: the frozen copy is no part of the method's weights or checkpoints.
    """

    def __init__(self, encoder: ClipEncoder, temperature: float, center: bool) -> None:
        self.encoder = copy.deepcopy(encoder).requires_grad_(False).eval()
        self.temperature, self.center = temperature, center
        self.images, self.texts = FeatureCache(), FeatureCache()

    def to(self, device: torch.device, dtype: torch.dtype) -> WeightingTarget:
        """Onto the live encoder's device and dtype (``bf16-true`` converts the module after the copy was taken)."""
        first = next(self.encoder.parameters())
        if first.device != device or first.dtype != dtype:
            self.encoder.to(device=device, dtype=dtype)
            self.images.clear()
            self.texts.clear()
        return self

    @torch.no_grad()
    def similarities(self, reference: torch.Tensor, text: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """[B, 2]: cosine of the target image with the reference image and with the text."""
        images = self.images(torch.cat([reference, target]), lambda x: self.encoder.encode_image(x, normalize=True))
        ref, tgt = images.chunk(2)
        txt = self.texts(text, lambda x: self.encoder.encode_text(x, normalize=True))
        return torch.stack([(tgt * ref).sum(-1), (tgt * txt).sum(-1)], dim=-1)

    def __call__(
        self, reference: torch.Tensor, text: torch.Tensor, target: torch.Tensor,
        gather: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    ) -> torch.Tensor:
        """[B, 2] target weights; ``gather`` collects every rank's similarities, so that under DDP the centre is
        the mean over the whole batch, as in one process."""
        sims = self.similarities(reference, text, target)
        if self.center:
            sims = sims - gather(sims).mean(dim=0, keepdim=True)
        return (sims / self.temperature).softmax(dim=-1)


class Progressive(ClipRetrievalMethod):
    """Stage 3: hybrid-modality (reference image + modification text) queries with adaptive weighting."""

    method_name = "progressive"
    supports = {"cir": ("image+text",)}

    def __init__(
        self,
        encoder: EncoderConfig | None = None,
        optim: OptimConfig | None = None,
        weighting: str = "adaptive",
        weighting_loss: float = 1.0,
        target_temperature: float = 0.5,
        center_similarities: bool = True,
        hidden_dim: int | None = None,
    ) -> None:
        """
        Args:
            encoder: the stage-2 CLIP (``pretrained``: the file stage 2 published); both encoders train unless its
                freeze flags say otherwise. The weighting target uses a frozen copy of it taken when ``fit`` starts.
            weighting: ``adaptive`` (per query, MLP), ``fixed`` (0.5 / 0.5) or ``global`` (one learned pair).
            weighting_loss: weight of the self-supervised weighting loss (KL from the target to the predicted
                weights; adaptive weighting only, 0 trains the MLP by the retrieval loss alone).
            target_temperature / center_similarities: the weighting target (see :class:`WeightingTarget`).
            hidden_dim: the MLP's hidden width (default: the CLIP dimension).
        """
        super().__init__(encoder, optim)
        if weighting_loss < 0:
            raise ValueError(f"progressive: weighting_loss must be >= 0, got {weighting_loss}")
        if target_temperature <= 0:
            raise ValueError(f"progressive: target_temperature must be > 0, got {target_temperature}")
        self.weighting = QueryWeighting(self.encoder.embed_dim, weighting, hidden_dim)
        self.weighting_loss, self.target_temperature, self.center_similarities = weighting_loss, target_temperature, center_similarities
        self.target: WeightingTarget | None = None
        self.save_config(
            encoder=self.encoder_config, optim=self.optim, weighting=weighting, weighting_loss=weighting_loss,
            target_temperature=target_temperature, center_similarities=center_similarities, hidden_dim=hidden_dim,
        )

    def self_supervised(self) -> bool:
        return self.weighting.mode == "adaptive" and self.weighting_loss > 0

    def setup(self, stage: str) -> None:
        """The frozen copy is taken before a resumed run's weights are restored: it holds the stage-2 encoders."""
        if stage == "fit" and self.self_supervised() and self.target is None:
            self.target = WeightingTarget(self.encoder, self.target_temperature, self.center_similarities)

    def on_fit_start(self) -> None:
        if self.target is not None:
            first = next(self.encoder.parameters())
            self.target.to(first.device, first.dtype)

    def default_lr_groups(self) -> dict[str, float]:
        return {"weighting.": WEIGHTING_LR_FACTOR * self.optim.lr} if self.weighting.mode != "fixed" else {}

    def query_weights(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """(w_I, w_T) [B, 2] of raw reference-image and text features."""
        return self.weighting(F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1))

    def embed(self, image_features: torch.Tensor, text_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The composed query [B, D] and its weights [B, 2] from raw features."""
        image, text = F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)
        weights = self.weighting(image, text)
        return compose(image, text, weights), weights

    def encode_query(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encode_query_with_diagnostics(batch)[0]

    def encode_query_with_diagnostics(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The composed queries and their weights ``w_image`` / ``w_text`` (exported per query on ``test``)."""
        if "text" not in batch or "image_features" not in batch:
            raise ValueError(f"{type(self).__name__} embeds composed queries: a batch needs 'text' and 'image_features', got {sorted(batch)}")
        query, weights = self.embed(batch["image_features"], self.encoder.encode_text(batch["text"], normalize=False))
        return query, {"w_image": weights[:, 0], "w_text": weights[:, 1]}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if "reference" not in batch:
            raise ValueError(f"{type(self).__name__} trains on composed triplets (task 'cir'); got a batch with keys {sorted(batch)}")
        reference, target = self.encode_images(torch.cat([batch["reference"], batch["target"]])).chunk(2)
        query, weights = self.embed(reference, self.encoder.encode_text(batch["text"], normalize=False))
        labels = self.gather(batch["target_key"])
        retrieval = contrastive_loss(
            self.gather(query), self.gather(F.normalize(target, dim=-1)), clip_scale(self.encoder),
            query_labels=labels, target_labels=labels, symmetric=False,
        )
        loss, size = retrieval, batch["text"].shape[0]
        if self.self_supervised():
            goal = self.target(batch["reference"], batch["text"], batch["target"], gather=self.gather)
            weighting = F.kl_div(weights.clamp_min(1e-8).log(), goal, reduction="batchmean")
            loss = loss + self.weighting_loss * weighting
            self.log("train/weighting", weighting, batch_size=size)
            self.log("train/target_w_text", goal[:, 1].mean(), batch_size=size)
        self.log("train/retrieval", retrieval, batch_size=size)
        self.log("train/w_text", weights[:, 1].mean(), batch_size=size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return self.check_finite(loss)
