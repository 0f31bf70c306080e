"""World knobs and presets.

Difficulty is set by a handful of knobs so that the world can be tuned after the baselines have been trained:
``hue_jitter`` / ``tone_jitter`` / ``emblem_scale`` (how subtle a product's signature is), ``clutter``,
``degradation``, ``occlusion``, ``low_quality_fraction`` (live views), ``caption_noise`` and
``emblem_text_prob`` (how often a text names the signature) and ``popularity_skew`` (how often products share
their attributes), ``lookalike_fraction`` (how many products have a same-attribute twin that only its
signature tells apart) and ``cir_distractors`` (how many more such twins each synth-cir evaluation target has).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

# Bump when the same preset and seed would produce different files (cached worlds are then regenerated).
GENERATOR_VERSION = "3"


@dataclass(frozen=True)
class WorldConfig:
    num_products: int = 60
    image_size: int = 64
    live_views: int = 3  # per product; >= 3 so that id has two live queries and a live positive left over
    family_size: tuple[int, int] = (2, 5)  # colourways of one model (same signature, other attributes)
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    popularity_skew: float = 1.0  # 0: attribute values uniform; higher: a few colours / patterns dominate
    lookalike_fraction: float = 0.5  # families copying the styles of another family (only the signature differs)
    hue_jitter: float = 10.0  # degrees, per product around its named colour
    tone_jitter: float = 0.12  # relative saturation / brightness jitter per product
    emblem_scale: float = 0.1  # emblem size as a fraction of the image side
    clutter: float = 0.6  # 0..1: amount of background shapes in live views
    degradation: float = 0.5  # 0..1: scale / shift / rotation / blur / noise / JPEG strength of live views
    occlusion: float = 0.3  # probability that a live view is partly occluded
    low_quality_fraction: float = 0.25  # live views down- then up-sampled
    caption_noise: float = 0.05  # per-word probability of dropping or replacing a word in item texts
    emblem_text_prob: float = 0.3  # probability that a description names the emblem
    texts_per_item: tuple[int, int] = (1, 3)
    id_queries_per_product: int = 2  # live views used as synth-id queries in val / test
    cir_train_per_product: int = 4  # training triplets per train product (at most)
    cir_eval_per_product: int = 1  # val / test: composed queries per reference product (at most; one per target)
    cir_distractors: int = 1  # val / test: same-style products of other signatures per product, in synth-cir galleries
    jpeg_quality: int = 92  # storage quality (at most; live views are stored at their own, lower, quality)

    def __post_init__(self) -> None:
        if self.live_views < self.id_queries_per_product + 1:
            raise ValueError(
                f"live_views={self.live_views} must exceed id_queries_per_product={self.id_queries_per_product}"
            )
        if self.family_size[0] < 2 or self.family_size[1] < self.family_size[0]:
            raise ValueError(f"family_size={self.family_size}: need 2 <= min <= max (synth-cir pairs come from families)")
        if abs(sum(self.split_fractions) - 1) > 1e-6 or min(self.split_fractions) <= 0:
            raise ValueError(f"split_fractions={self.split_fractions} must be positive and sum to 1")
        if self.cir_train_per_product < 1 or self.cir_eval_per_product < 1:
            raise ValueError(f"cir_train_per_product={self.cir_train_per_product} and cir_eval_per_product="
                             f"{self.cir_eval_per_product} must be >= 1")
        if self.num_products < 12 * self.family_size[1]:
            raise ValueError(f"num_products={self.num_products} is too small for three splits of every super-category")

    def with_overrides(self, **overrides: Any) -> WorldConfig:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown world knob(s) {unknown}; known: {sorted(known)}")
        return replace(self, **{name: self._knob_value(name, value) for name, value in overrides.items()})

    def _knob_value(self, name: str, value: Any) -> Any:
        """``value`` as the type of knob ``name`` (an int for a float knob, a list for a tuple one), else an error."""
        current = getattr(self, name)
        if isinstance(current, tuple) and isinstance(value, (list, tuple)) and len(value) == len(current):
            return tuple(self._knob_value_of(name, type(c), v) for c, v in zip(current, value))
        return self._knob_value_of(name, type(current), value)

    @staticmethod
    def _knob_value_of(name: str, kind: type, value: Any) -> Any:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if type(value) is not kind:
            raise ValueError(f"world knob {name!r} must be {kind.__name__} (like the preset's), got {value!r}")
        return value

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


PRESETS: dict[str, WorldConfig] = {
    "tiny": WorldConfig(num_products=60, image_size=64, live_views=3),
    "small": WorldConfig(num_products=2500, image_size=64, live_views=4, cir_distractors=5, cir_eval_per_product=4),  # docs
    "base": WorldConfig(num_products=10000, image_size=96, live_views=5, cir_distractors=5, cir_eval_per_product=4),
}
