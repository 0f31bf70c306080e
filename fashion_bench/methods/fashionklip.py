"""FashionKLIP (Wang et al., ACL 2023 Industry): CLIP fine-tuning with a concept-level alignment loss drawn from a
mined multimodal concept knowledge graph (``fashion_bench.kg``).

Each training sample carries up to ``slots`` concept ids (the concepts written in its chosen text, then their
ancestors; -1 pads). At the start of every epoch each concept's prototype images are re-picked with the current
model (prompt retrieval over the training images, MMR). Per slot, the ``prototypes`` prototype images of the
sample's concept closest to the sample image are contrasted with the batch's concept texts (symmetric, weighted by
those similarities). L = (1 - lambda) L_clip + lambda L_concept, lambda = L_clip / (ratio L_concept), detached and
clamped to [0, 1]. See docs/methods/fashionklip.md for the fixes over the public code.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fashion_bench.contracts import Preprocessing
from fashion_bench.kg import io
from fashion_bench.kg.build import KgSettings, mine_from_datamodule
from fashion_bench.kg.chunker import Chunker, make_chunker
from fashion_bench.kg.graph import ConceptGraph
from fashion_bench.kg.images import concept_images, concept_prompts, encode_prompts
from fashion_bench.kg.matcher import ConceptMatcher
from fashion_bench.losses import contrastive_loss
from fashion_bench.methods.base import EncoderConfig, OptimConfig
from fashion_bench.methods.clip import ClipMethod

TABLE_FEATURES = ("encode", "steps")


def weighted_symmetric_ce(logits: torch.Tensor, match: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sum over samples of ``weights`` [P, B] times the symmetric cross-entropy of ``logits`` [P, B, B] (prototype
    rows against concept-text columns); ``match`` [B, B] marks the positives (the same concept, or synonyms)."""
    match = match.float()
    rows = -(match / match.sum(1, keepdim=True).clamp_min(1.0) * F.log_softmax(logits, dim=-1)).sum(-1)
    cols = -(match / match.sum(0, keepdim=True).clamp_min(1.0) * F.log_softmax(logits, dim=-2)).sum(-2)
    return (weights * (rows + cols) / 2).sum(-1)


def synonym_pairs(ids: torch.Tensor, table_index: torch.Tensor | None, overlap: float) -> torch.Tensor:
    """[B, B] bool: concepts ``ids`` [B] that are the same concept or whose kept images ``table_index`` [C, K]
    share at least ``overlap`` x K images (paraphrases such as "red tee" / "crimson t-shirt" retrieve the
    same images, and contrasting them as negatives would push apart what the queries paraphrase)."""
    same = ids[:, None] == ids[None, :]
    if overlap <= 0 or table_index is None:
        return same
    kept = table_index[ids]  # [B, K]
    shared = (kept[:, None, :, None] == kept[None, :, None, :]).any(-1).sum(-1)  # [B, B]
    return same | (shared >= overlap * kept.shape[1])


def concept_loss(
    image: torch.Tensor, concepts: torch.Tensor, concept_text: torch.Tensor, prototypes: torch.Tensor,
    scale: torch.Tensor, top: int, table_index: torch.Tensor | None = None, synonym_overlap: float = 0.0,
) -> torch.Tensor | None:
    """The concept-level alignment loss, or None when no sample has a concept.

    Args:
        image: normalised sample image features [B, D] (only rank the prototypes and weight the samples).
        concepts: concept ids [B, S], -1 for padding (never enters the loss).
        concept_text: normalised prompt features [B, S, D] of those concepts (rows of padding are ignored).
        prototypes: normalised prototype image features [C, K, D] of every concept.
        top: prototypes per sample and slot (the ``top`` of K closest to the sample image).
        table_index: the prototypes' image indices [C, K]; with ``synonym_overlap`` > 0, concepts sharing that
            fraction of their images are positives of each other (:func:`synonym_pairs`), not negatives.
    """
    if synonym_overlap > 0 and table_index is None:
        raise ValueError("concept_loss: synonym_overlap needs the table's image indices")
    valid = concepts >= 0
    if not bool(valid.any()):
        return None
    protos = prototypes[concepts.clamp_min(0)]  # [B, S, K, D]
    sim, order = torch.einsum("bskd,bd->bsk", protos, image).topk(min(top, protos.shape[2]), dim=-1)
    protos = torch.gather(protos, 2, order[..., None].expand(*order.shape, protos.shape[-1]))
    weight = sim.clamp_min(0) * valid[..., None]
    weight = weight / weight.norm(dim=0, keepdim=True).clamp_min(1e-12)  # L2 across the batch per (slot, prototype)
    losses = []
    for s in range(concepts.shape[1]):
        rows = valid[:, s]
        if not bool(rows.any()):
            continue
        logits = scale * torch.einsum("ipd,kd->pik", protos[rows, s], concept_text[rows, s])
        w = weight[rows, s].t()  # [P, B_s]
        match = synonym_pairs(concepts[rows, s], table_index, synonym_overlap)
        per_prototype = weighted_symmetric_ce(logits, match, w)
        total = w.sum(-1)
        losses.append((total * per_prototype).sum() / total.sum().clamp_min(1e-12))
    return torch.stack(losses).mean()


class FashionKlipMethod(ClipMethod):
    method_name = "fashionklip"
    supports = {"t2i": ("text", "image")}

    def __init__(
        self,
        encoder: EncoderConfig | None = None,
        optim: OptimConfig | None = None,
        learn_temperature: bool = True,
        kg: str | None = None,
        kg_settings: KgSettings | None = None,
        slots: int = 5,
        prototypes: int = 5,
        lambda_ratio: float = 5.0,
        table_features: str = "encode",
        synonym_overlap: float = 0.0,
    ) -> None:
        """
        Args:
            kg: a ``fashion-bench kg build`` folder (its concepts and is-a edges); ``None`` mines them from the
                training split when ``fit`` starts (same miner and settings).
            kg_settings: chunker, phrase length, minimum count (mining) and the prompt retrieval of concept images
                (``candidates`` 20, ``keep`` 10, MMR ``diversity`` 0.8), re-run with the current model every epoch.
            slots: concepts per sample (written ones, then ancestors); prototypes: of each concept's kept images, how
                many (closest to the sample image) enter the loss; lambda_ratio: lambda = L_clip / (ratio L_concept).
            table_features: the image features each epoch's table is picked from. ``encode``: every training image
                encoded with the current model at the start of every epoch (one extra forward pass over the training
                set per epoch). ``steps``: the features the training steps of the previous epoch computed for their
                images (gathered across ranks; images an epoch did not see keep older ones), so only the first epoch
                of a fit encodes the training set; the table then reflects the model as it was during that epoch.
            synonym_overlap: 0 (the paper): two different concepts in a batch are negatives of each other. In (0, 1]:
                concepts whose kept images share at least this fraction are positives instead (synonyms found by
                their images, re-found with every table; not in the paper).
        """
        super().__init__(encoder, optim, learn_temperature)
        if slots < 1 or prototypes < 1 or lambda_ratio <= 0:
            raise ValueError(f"fashionklip: slots and prototypes must be >= 1 and lambda_ratio > 0 (got {slots}, {prototypes}, {lambda_ratio})")
        self.kg, self.kg_settings = kg, kg_settings or KgSettings()
        self.slots, self.prototypes, self.lambda_ratio = slots, prototypes, lambda_ratio
        if not 0.0 <= synonym_overlap <= 1.0:
            raise ValueError(f"fashionklip: synonym_overlap must be in [0, 1], got {synonym_overlap}")
        self.synonym_overlap = synonym_overlap
        if table_features not in TABLE_FEATURES:
            raise ValueError(f"fashionklip: table_features must be one of {TABLE_FEATURES}, got {table_features!r}")
        if self.prototypes > self.kg_settings.keep:
            raise ValueError(f"fashionklip: prototypes ({prototypes}) exceeds the images kept per concept ({self.kg_settings.keep})")
        self.graph: ConceptGraph | None = None
        self.concept_tokens: torch.Tensor | None = None
        self.table: torch.Tensor | None = None  # prototype features [C, keep, D] of the current epoch
        self.table_index: torch.Tensor | None = None  # their training-image indices [C, keep]
        self.table_epoch = -1
        self.table_features = table_features
        self.image_bank: torch.Tensor | None = None  # normalised features [N, D] of the training images (``steps``)
        self.save_config(
            encoder=self.encoder_config, optim=self.optim, learn_temperature=learn_temperature, kg=kg,
            kg_settings=self.kg_settings, slots=slots, prototypes=prototypes, lambda_ratio=lambda_ratio,
            table_features=table_features, synonym_overlap=synonym_overlap,
        )

    # --- the knowledge graph ------------------------------------------------------------------------------------
    @functools.cached_property
    def chunker(self) -> Chunker:
        """How texts are split into phrases, for mining and for matching alike (built once: spaCy loads a model)."""
        return make_chunker(self.kg_settings.chunker, self.kg_settings.max_words)

    def load_graph(self) -> ConceptGraph:
        if self.graph is None:
            if self.kg is not None:
                self.graph = io.read_graph(Path(self.kg))
                for name in (io.CONCEPTS, io.PARENTS):
                    self.record_stage_input(f"kg/{name}", Path(self.kg) / name)
            else:
                self.graph = mine_from_datamodule(self.trainer.datamodule, self.chunker, self.kg_settings.min_count)
            self.concept_tokens = self.encoder.tokenize(concept_prompts(self.graph.phrases))
        return self.graph

    def preprocessing(self) -> Preprocessing:
        base = super().preprocessing()
        if self._trainer is None or self.trainer.state.fn != "fit":
            return base  # evaluation needs no concepts
        self.check_chunker(self.chunker)
        matcher = ConceptMatcher(self.load_graph(), self.chunker, self.slots)
        return Preprocessing(image_spec=base.image_spec, tokenize=base.tokenize, sample_fields={"concepts": matcher})

    def check_chunker(self, chunker: Chunker) -> None:
        """Texts must be split into phrases as the graph's miner split them (``chunker: auto`` resolves to spaCy
        where it is installed and to the rules elsewhere): otherwise the same text matches other concepts."""
        summary = Path(self.kg) / io.SUMMARY if self.kg is not None else None
        if summary is None or not summary.is_file():
            return
        built = json.loads(summary.read_text())
        used, words = built.get("chunker_used"), built.get("settings", {}).get("max_words")
        if (used is not None and used != chunker.kind) or (words is not None and words != chunker.max_words):
            raise ValueError(
                f"{summary}: the graph was mined with the '{used}' chunker (max_words {words}), but this run matches "
                f"texts with the '{chunker.kind}' chunker (max_words {chunker.max_words}), so texts would map to other "
                f"concepts: set --model.init_args.kg_settings.chunker {used} and max_words {words}"
                + (" (spaCy and en_core_web_sm must be installed)" if used == "spacy" else "")
                + ", or build the graph again on this machine"
            )

    @torch.no_grad()
    def rebuild_table(self) -> None:
        """Each concept's prototype images, picked and encoded with the current model."""
        graph = self.load_graph()
        if self.image_bank is not None:
            features = self.image_bank
        else:
            _, features = self.encode_split("train", desc="encoding training images for the concept table")
            features = F.normalize(features, dim=-1)
            if self.table_features == "steps":
                self.image_bank = features
        was_training = self.training
        self.eval()
        concepts = encode_prompts(graph.phrases, self.encoder.tokenize, self.encoder.encode_text, self.device)
        self.train(was_training)
        s = self.kg_settings
        index, _ = concept_images(concepts, features, candidates=s.candidates, keep=s.keep, diversity=s.diversity)
        self.table, self.table_index, self.table_epoch = features[index], index, self.current_epoch

    def on_train_epoch_start(self) -> None:
        if self.table is None or self.table_epoch != self.current_epoch:
            self.rebuild_table()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.table is not None:  # a run resumed within this epoch keeps the epoch's table
            checkpoint["fashionklip_table"] = {
                "epoch": self.table_epoch, "prototypes": self.table.cpu(), "index": self.table_index.cpu(),
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("fashionklip_table")
        if saved is not None:
            self.table, self.table_epoch = saved["prototypes"], int(saved["epoch"])
            self.table_index = saved.get("index")

    # --- training -----------------------------------------------------------------------------------------------
    def encode_texts_and_concepts(self, tokens: torch.Tensor, concepts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised features of the batch's texts [B, D] and of its concepts' prompts [B', S, D] (zeros for
        padding), in one text-tower pass: each distinct concept is encoded once, and the captions and prompts share
        the pass's length buckets (docs/encoders.md, "Text encoding")."""
        assert self.concept_tokens is not None
        valid = concepts >= 0
        unique, inverse = torch.unique(concepts[valid], return_inverse=True)
        prompts = self.concept_tokens[unique.cpu()].to(tokens.device)
        features = self.encoder.encode_text(torch.cat([tokens, prompts]))
        out = torch.zeros(*concepts.shape, features.shape[-1], device=features.device, dtype=features.dtype)
        out[valid] = features[len(tokens):][inverse]
        return features[: len(tokens)], out

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if "concepts" not in batch:
            raise ValueError("fashionklip: training batches carry no 'concepts' (the data layer did not apply this method's preprocessing)")
        scale = self.encoder.logit_scale.exp().clamp(max=100)
        image = self.gather(self.encoder.encode_image(batch["image"]))
        concepts = self.gather(batch["concepts"])
        text, concept_text = self.encode_texts_and_concepts(batch["text"], concepts)
        text = self.gather(text)
        labels = self.gather(batch["label"])
        clip = contrastive_loss(image, text, scale, query_labels=labels, target_labels=labels)
        if self.image_bank is not None:
            self.image_bank[self.gather(batch["index"])] = image.detach().to(self.image_bank.dtype)
        assert self.table is not None
        table = self.table.to(self.device)
        concept = concept_loss(
            image.detach(), concepts, concept_text, table, scale, self.prototypes,
            table_index=None if self.table_index is None else self.table_index.to(self.device),
            synonym_overlap=self.synonym_overlap,
        )
        if concept is None:
            loss, lam = clip, torch.zeros((), device=self.device)
        else:
            lam = (clip / (self.lambda_ratio * concept)).detach().clamp(0.0, 1.0)
            loss = (1 - lam) * clip + lam * concept
            self.log("train/concept_loss", concept, batch_size=len(batch["text"]))
        size = len(batch["text"])
        self.log_dict({"train/loss": loss, "train/clip_loss": clip}, prog_bar=True, batch_size=size)
        self.log_dict({"train/lambda": lam, "train/logit_scale": scale}, batch_size=size)
        return self.check_finite(loss)
