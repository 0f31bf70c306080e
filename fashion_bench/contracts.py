"""Contract types and constants shared by data, encoders, methods, evaluation and report.

A leaf module: it imports neither torch nor any other fashion_bench module, so that every layer can depend on it
without pulling in another (methods and encoders never import the DataModule module; the report never imports
torch). Each constant here is defined once for the whole package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

TASKS = ("t2i", "id", "cir")

# What a query carries. ``image+text`` is a composed query (reference image and modification text).
QUERY_KINDS = ("text", "image", "image+text")

SCHEMA_VERSION = 1
RESULTS_NAME = "results.json"
PER_QUERY_NAME = "per_query.jsonl"
QUERY_DIAGNOSTICS_NAME = "query_diagnostics.jsonl"  # fashion_bench.retrieval.diagnostics
REQUIRED_RESULT_FIELDS = (
    "schema_version", "experiment", "method", "dataset", "task", "split", "protocol", "encoder", "seed", "metrics",
    "per_subset", "num_queries", "num_valid_queries", "gallery_size", "ckpt_path", "git_sha", "versions",
    "wall_time_s", "started_at", "hardware",
)


def query_kind(has_text: bool, has_image: bool) -> str:
    """The kind of a query from what it has; a query with neither is malformed."""
    if has_text and has_image:
        return "image+text"
    if has_text:
        return "text"
    if has_image:
        return "image"
    raise ValueError("a query needs a text or a reference image")


@dataclass(frozen=True)
class ImageSpec:
    """What an encoder expects of its images: size, normalisation and resize mode (its own preprocessing)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"  # bicubic | bilinear | nearest
    resize_mode: str = "shortest"  # shortest (resize the short side, centre crop) | longest (pad) | squash


# A per-sample field a method asks the data layer for: computed from the item's canonical record (a dict with
# item_id, text, identity, domain, category, attributes) and the text chosen for this sample.
SampleField = Callable[[Mapping[str, Any], str], Any]


@dataclass
class Preprocessing:
    """What a method tells the data layer about its inputs.

    Attributes:
        image_spec: size / normalisation / resize of the images the method's encoder(s) take.
        tokenize: texts -> token tensor [N, L].
        train_images: False when training batches need no pixels (the method looks features up by index).
        views: images per training sample; views beyond the first come from other images of the same identity
            (another augmentation of the same image when it has none), batched as ``views`` [B, V-1, C, H, W].
        sample_fields: extra named per-sample fields (e.g. concept ids) computed by the given functions.
    """

    image_spec: ImageSpec
    tokenize: Callable[[Sequence[str]], Any]
    train_images: bool = True
    views: int = 1
    sample_fields: Mapping[str, SampleField] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.views, int) or self.views < 1:
            raise ValueError(f"Preprocessing.views must be a positive integer, got {self.views!r}")
