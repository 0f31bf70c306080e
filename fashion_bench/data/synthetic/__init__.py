"""The synthetic fashion world: a procedural catalogue rendered into the canonical layout (``schema.py``).

No dataset or model weights can be downloaded on the machines this project is built on, so a catalogue
deterministic by seed stands in for real data (DESIGN.md section 4, docs/datasets/synthetic.md)::

    <out>/world.json      preset, seed, knobs, generator version, counts, vocabulary, concept hierarchy
    <out>/items.jsonl     every image (Item fields + "split")
    <out>/images/         <item_id>.jpg
    <out>/synth-t2i|synth-id|synth-cir/<split>/gallery.txt + queries.jsonl
    <out>/.complete       written last

Modules: ``vocab`` (attribute values and their words), ``catalogue`` (families, products, splits, texts,
concepts), ``text`` (descriptions, relative captions), ``render`` (images), ``datasets`` (the three datasets),
``world`` (generation on disk).
"""

from fashion_bench.data.synthetic.config import GENERATOR_VERSION, PRESETS, WorldConfig
from fashion_bench.data.synthetic.datasets import SYNTHETIC_DATASETS
from fashion_bench.data.synthetic.world import ensure_world, generate_world, is_current

__all__ = [
    "GENERATOR_VERSION", "PRESETS", "SYNTHETIC_DATASETS", "WorldConfig", "ensure_world", "generate_world", "is_current",
]
